"""Piano-roll figures of `umust eval i2a --plot` (as the paper's Fig. 7).

Three stacked panels on one time axis: the reference transcription, the
transcription of the generated audio, and the generated notes after DTW
alignment to the reference. Matplotlib runs on its Agg backend (no display).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from umust_cli import registry
from umust_cli.eval.metrics import Notes
from umust_cli.io import atomic_path


def _draw_roll(ax, notes: Notes, title: str, color: str) -> None:
    """One bar per note: x = onset..offset (s), y = MIDI pitch."""
    for (on, off), pitch in zip(notes.intervals, notes.pitches):
        ax.broken_barh([(on, off - on)], (pitch - 0.4, 0.8), facecolors=color, linewidth=0)
    ax.set_title(title, fontsize=9, loc="left")
    ax.set_ylabel("MIDI pitch")


def plot_alignment(ref: Notes, gen: Notes, aligned: Notes, dest: str | Path, title: str = "") -> Path:
    """Write a PNG with the reference, generated and DTW-aligned piano rolls to ``dest``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(10, 7), sharex=True, sharey=True)
    _draw_roll(axes[0], ref, "ground truth (transcribed reference)", "tab:blue")
    _draw_roll(axes[1], gen, "generated (transcribed)", "tab:orange")
    _draw_roll(axes[2], aligned, "generated, DTW-aligned to the ground truth", "tab:green")
    pitches = np.concatenate([n.pitches for n in (ref, gen, aligned)])
    if len(pitches):
        axes[0].set_ylim(pitches.min() - 2, pitches.max() + 2)  # shared by all panels
    axes[2].set_xlim(0, max(n.end_time() for n in (ref, gen, aligned)) + 0.5)
    axes[2].set_xlabel("time (s)")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save_png(fig, dest, dpi=100)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Running mean over the last ``window`` values (fewer at the start): (N,) -> (N,)."""
    values = np.asarray(values, dtype=float)
    if window <= 1 or len(values) == 0:
        return values
    csum = np.concatenate([[0.0], np.cumsum(values)])
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (csum[idx] - csum[lo]) / (idx - lo)


def plot_training_curves(curves: list[dict], dest: str | Path, window: int = 100) -> Path:
    """One panel per run (``train.background.run_curve``): the train loss (thin) and its
    running mean over ``window`` steps, the validation loss as dots, and the validation figures
    the run scored (``validation_figures``: SER, onset F1, ...) as markers on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(curves))
    rows = -(-len(curves) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
    for ax, curve in zip(axes.flat, curves):
        _draw_curve(ax, curve, window)
    for ax in list(axes.flat)[len(curves):]:
        ax.set_visible(False)
    return _save_png(fig, dest, dpi=90)


def _save_png(fig, dest: str | Path, dpi: int) -> Path:
    """Lay out ``fig``, write it to ``dest`` as a PNG under a temporary name, close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return dest


# The validation figures a run's log rows may hold (besides the loss): registry.VALID_FIGURES.
VALID_FIGURES = tuple(figure for figure, _ in registry.VALID_FIGURES.values())


def validation_figures(evals: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """Figure name -> [(step, value)] of the VALID_FIGURES in a run's validation rows, in order."""
    out: dict[str, list[tuple[int, float]]] = {}
    for row in evals:
        for key, value in row.items():
            if isinstance(value, (int, float)) and any(
                    key == f or (f.endswith("/") and key.startswith(f)) for f in VALID_FIGURES):
                out.setdefault(key, []).append((row["step"], float(value)))
    return out


def _draw_curve(ax, curve: dict, window: int) -> None:
    steps, loss = np.asarray(curve["steps"]), np.asarray(curve["loss"])
    ax.plot(steps, loss, color="tab:blue", alpha=0.2, linewidth=0.5)
    ax.plot(steps, smooth(loss, window), color="tab:blue", linewidth=1.2, label="train loss")
    if len(loss):                                   # a few spikes must not flatten the curve
        ax.set_ylim(min(0.0, float(loss.min())), 1.05 * float(np.percentile(loss, 99.5)))
    ev = [e for e in curve["evals"] if "loss" in e]
    if ev:
        ax.plot([e["step"] for e in ev], [e["loss"] for e in ev], "o", color="tab:green", ms=4,
                label="valid loss")
    figures = validation_figures(curve["evals"])
    if figures:
        ax2 = ax.twinx()
        for (name, points), marker in zip(figures.items(), "s^vD<>"):
            ax2.plot(*zip(*points), marker, ms=4, label=name)
        ax2.set_ylabel("valid " + (next(iter(figures)) if len(figures) == 1 else "figures"), fontsize=8)
        ax2.legend(fontsize=6, loc="center right")
    title = curve["run"] + (f" (from {curve['init']})" if curve.get("init") else "")
    ax.set_title(title, fontsize=8, loc="left")
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel("loss", fontsize=8)
    ax.legend(fontsize=7, loc="upper right")

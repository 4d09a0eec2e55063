"""Piano-roll figures of `umust eval i2a --plot` (as the paper's Fig. 7).

Three stacked panels on one time axis: the reference transcription, the
transcription of the generated audio, and the generated notes after DTW
alignment to the reference. Matplotlib runs on its Agg backend (no display).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
    fig.tight_layout()
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return dest

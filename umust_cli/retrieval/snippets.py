"""Snippet level: aligned (sheet window, 1 s of audio) pairs, and the snippet-voting baseline.

Carvalho & Widmer compare their passage model with models built on a snippet
embedding (Dorfer et al.): the CNNs alone, trained on short pairs that are strongly
aligned (a sheet window centred on a notehead, the audio centred on its onset):

- pre-training: ``umust train retrieval --stage snippet`` trains the two CNNs on such
  pairs; ``--init`` from it then gives RNN-FT (fine-tuned) or, with ``--freeze-cnn``, RNN-FZ;
- BL (``umust eval retrieval --method bl``): a passage query is cut into snippets, every
  snippet votes for the passage holding its nearest snippet of the other modality, and
  passages are ranked by votes (ties: the smaller mean nearest-snippet distance).

The alignment comes from the corpus (``systems/NNN.align.json``, :mod:`umust_cli.data.align`).
"""

from __future__ import annotations

import numpy as np
import torch

from umust_cli.data.align import row_alignment
from umust_cli.errors import BadInputError
from umust_cli.eval.metrics import retrieval_both_directions
from umust_cli.model.retrieval import RetrievalModel
from umust_cli.retrieval.features import FeatureConfig, audio_snippets, sheet_snippets


def strip_alignments(rows: list[dict], cfg: FeatureConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per row: (x in sheet-strip pixels, seconds into the row's audio) of its aligned onsets."""
    out = []
    for row in rows:
        a = row_alignment(row)
        out.append((np.asarray(a.x, dtype=np.float32) * (cfg.sheet_height / a.height),
                    a.performance_times(row).astype(np.float32)))
    return out


def window(x: np.ndarray, centre: float, src: float, out: int) -> np.ndarray:
    """``out`` columns of (rows, T) ``x`` spanning ``src`` columns centred at ``centre``, linearly
    interpolated (``src`` != ``out`` stretches); columns outside ``x`` are zero."""
    pos = centre - src / 2.0 + (np.arange(out) + 0.5) * (src / out) - 0.5
    lo = np.floor(pos).astype(int)
    w = (pos - lo).astype(np.float32)
    padded = np.concatenate([np.zeros((x.shape[0], 1), x.dtype), x, np.zeros((x.shape[0], 1), x.dtype)], axis=1)
    left, right = np.clip(lo + 1, 0, padded.shape[1] - 1), np.clip(lo + 2, 0, padded.shape[1] - 1)
    return padded[:, left] * (1 - w) + padded[:, right] * w


def snippet_pair(strip: np.ndarray, spec: np.ndarray, point: tuple[float, float], cfg: FeatureConfig,
                 stretch: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The (uint8 (H, sheet_window) sheet window, float32 (bins, snippet_frames) audio) pair centred on
    one aligned onset ``point`` = (strip x, seconds); ``stretch`` > 1 plays the audio slower."""
    x, t = point
    lo = int(round(x)) - cfg.sheet_window // 2
    sheet = np.zeros((strip.shape[0], cfg.sheet_window), dtype=np.uint8)
    a, b = max(lo, 0), min(lo + cfg.sheet_window, strip.shape[1])
    if b > a:
        sheet[:, a - lo: b - lo] = strip[:, a:b]
    # frame j of a centred STFT is the sound at j / fps; unstretched, frame t * fps is column snippet_frames / 2
    audio = window(spec.astype(np.float32), t * cfg.fps, cfg.snippet_frames / stretch, cfg.snippet_frames)
    return sheet, audio.astype(np.float32)


def snippet_tensors(sheets: list[np.ndarray], audios: list[np.ndarray]):
    """The (audio, audio lengths, sheet, sheet lengths) batch of passage training, one snippet each."""
    ones = torch.ones(len(sheets), dtype=torch.long)
    audio = torch.from_numpy(np.stack(audios)).unsqueeze(1)  # (B, 1, bins, frames)
    sheet = torch.from_numpy(np.stack(sheets)).unsqueeze(1)  # (B, 1, H, W) uint8
    return audio, ones, sheet, ones.clone()


@torch.no_grad()
def embed_snippets(model: RetrievalModel, kind: str, snippets: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, snippet_dim) unit vectors of (N, H, W) snippets (sheet: ink in [0, 1]) with the CNN alone."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [model.encode_snippets(kind, torch.from_numpy(np.ascontiguousarray(snippets[i: i + batch_size],
                                                                           dtype=np.float32)).to(device)).cpu()
           for i in range(0, len(snippets), batch_size)]
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, model.cfg.snippet_dim), np.float32)


def snippet_eval(model: RetrievalModel, sheets: list[np.ndarray], specs: list[np.ndarray],
                 points: list[tuple[float, float]], cfg: FeatureConfig) -> dict:
    """Both directions' R@k / MRR of one aligned snippet pair per passage (pair i matches i)."""
    pairs = [snippet_pair(s, a, p, cfg) for s, a, p in zip(sheets, specs, points)]
    s = embed_snippets(model, "sheet", np.stack([p[0] for p in pairs]).astype(np.float32) / 255.0)
    a = embed_snippets(model, "audio", np.stack([p[1] for p in pairs]))
    dist = 1.0 - a @ s.T
    return {"n": len(pairs), **retrieval_both_directions(dist)}


def middle_points(alignments: list[tuple[np.ndarray, np.ndarray]], rows: list[dict]) -> list[tuple[float, float]]:
    """The aligned onset nearest the middle of each passage (a fixed validation pair per passage)."""
    out = []
    for (x, t), row in zip(alignments, rows):
        if len(x) == 0:
            raise BadInputError(f"{row['png']}: no aligned onset (a system of rests?)")
        j = int(np.argmin(np.abs(t - 0.5 * float(row["duration"]))))
        out.append((float(x[j]), float(t[j])))
    return out


def vote_distances(query: list[np.ndarray], candidates: list[np.ndarray]) -> np.ndarray:
    """(n_query, n_cand) BL ranking keys: minus the votes of the query's snippets for each candidate
    (each votes for the candidate holding its nearest snippet) plus 0.25 x the mean over the query's
    snippets of the nearest distance to that candidate's snippets (< 1: it only breaks ties)."""
    bank = np.concatenate(candidates)  # (N, d) every candidate snippet
    starts = np.cumsum([0] + [len(c) for c in candidates[:-1]])
    out = np.zeros((len(query), len(candidates)), dtype=np.float64)
    for i, q in enumerate(query):
        nearest = np.minimum.reduceat(1.0 - q @ bank.T, starts, axis=1)  # (S_i, n_cand)
        votes = np.bincount(nearest.argmin(axis=1), minlength=len(candidates))
        out[i] = -votes + 0.25 * nearest.mean(axis=0)
    return out


def baseline_distances(model: RetrievalModel, sheets: list[np.ndarray], specs: list[np.ndarray],
                       cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """BL keys for audio queries x sheet candidates, and for sheet queries x audio candidates."""
    a = [embed_snippets(model, "audio", audio_snippets(np.asarray(s, dtype=np.float32), cfg)) for s in specs]
    s = [embed_snippets(model, "sheet", sheet_snippets(x, cfg)) for x in sheets]
    return vote_distances(a, s), vote_distances(s, a)

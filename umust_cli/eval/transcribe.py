"""The reference piano transcriber of `umust eval`: Transkun (its weights ship in its wheel).

Generated audio is evaluated by transcribing it and comparing the notes with
the conditioning MIDI (m2a) or with the transcription of the reference
recording (i2a). Everything runs on the CPU by default.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from umust_cli import inputs
from umust_cli.errors import AudioError, CheckpointError


@dataclass(frozen=True)
class TranscriberConfig:
    """Transkun settings; ``None`` segment sizes take the model's own (16 s, hop 8 s)."""

    device: str = "cpu"
    segment_size_s: float | None = None
    segment_hop_s: float | None = None


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 samples (n, channels) and its sample rate, through the one
    validated audio loader (umust_cli.inputs: AudioError for truncated, NaN, silent, ... files)."""
    return inputs.load_audio(path, keep_channels=True)


class Transcriber:
    """Transkun 2.0 loaded once; call it on (samples, sr) to get a PrettyMIDI."""

    def __init__(self, cfg: TranscriberConfig = TranscriberConfig()):
        import moduleconf
        import torch

        self.cfg = cfg
        pretrained = resources.files("transkun") / "pretrained"
        conf_path, weight_path = pretrained / "2.0.conf", pretrained / "2.0.pt"
        if not (conf_path.is_file() and weight_path.is_file()):
            raise CheckpointError(f"transkun's pretrained weights are missing under {pretrained}")
        conf_manager = moduleconf.parseFromFile(str(conf_path))
        model_cls = conf_manager["Model"].module.TransKun
        self.model = model_cls(conf=conf_manager["Model"].config).to(cfg.device)
        # transkun's own checkpoint file (shipped in its wheel) holds non-tensor entries
        checkpoint = torch.load(str(weight_path), map_location=cfg.device, weights_only=False)
        state = checkpoint.get("best_state_dict", checkpoint.get("state_dict"))
        self.model.load_state_dict(state, strict=False)
        self.model.eval()

    @property
    def sample_rate(self) -> int:
        return int(self.model.fs)

    def __call__(self, samples: np.ndarray, sr: int):
        """samples: (n,) or (n, channels) float in [-1, 1] at ``sr`` Hz -> pretty_midi.PrettyMIDI."""
        import torch
        from transkun.Data import writeMidi

        x = np.asarray(samples, dtype=np.float32)
        x = x[:, None] if x.ndim == 1 else x
        if x.shape[0] == 0:
            raise AudioError("cannot transcribe empty audio")
        if sr != self.sample_rate:
            import soxr

            x = soxr.resample(x, sr, self.sample_rate).astype(np.float32)
        with torch.no_grad(), warnings.catch_warnings():
            # transkun wraps inference in torch.utils.checkpoint, which warns on every call
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.")
            notes = self.model.transcribe(torch.from_numpy(np.ascontiguousarray(x)).to(self.cfg.device),
                                          stepInSecond=self.cfg.segment_hop_s,
                                          segmentSizeInSecond=self.cfg.segment_size_s,
                                          discardSecondHalf=False)
        return writeMidi(notes)


@functools.lru_cache(maxsize=2)
def get_transcriber(cfg: TranscriberConfig = TranscriberConfig()) -> Transcriber:
    """One loaded model per configuration for the life of the process."""
    return Transcriber(cfg)


def transcribe(audio: str | Path | np.ndarray, sr: int | None = None,
               cfg: TranscriberConfig = TranscriberConfig()):
    """Transcribe a file path, or samples with their rate ``sr``, to a pretty_midi.PrettyMIDI."""
    if isinstance(audio, (str, Path)):
        samples, sr = load_audio(audio)
    else:
        if sr is None:
            raise AudioError("transcribe(samples) needs the sample rate sr")
        samples = audio
    return get_transcriber(cfg)(samples, int(sr))

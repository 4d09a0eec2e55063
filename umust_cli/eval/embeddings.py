"""Audio embeddings for the Fréchet Audio Distance (FAD) of `umust eval fad`.

Backends (none downloads anything at run time):

* ``npy``   : precomputed embeddings, one ``.npy`` file (n_frames, d) or (d,) per clip.
* ``aisfx`` : the aiSFX sound-effects embedding (Ma & Lerch, ISMIR 2022; MIT), whose
              PyTorch checkpoint ships inside its PyPI wheel. Install it with
              ``pip install --no-deps aisfx==0.1.2`` (its metadata pins old numpy/librosa).
              It is a general audio embedding, not a music-specific one.
* ``clap``  : LAION-CLAP from a local checkpoint file, when ``laion_clap`` is installed
              (the paper's choice; its weights cannot be downloaded here).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from umust_cli.errors import AudioError, CheckpointError, NotAvailableError
from umust_cli.inputs import load_array

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")

# aiSFX front end: 44.1 kHz, 2048/1024 STFT, 96 HTK mels, log10(1 + 1e4 * power),
# min-max scaled by the training range; one 512-d embedding per 100-frame (~2.3 s)
# block, blocks hopping by half a block.
AISFX_SR, AISFX_N_FFT, AISFX_HOP, AISFX_MELS = 44100, 2048, 1024, 96
AISFX_SPEC_MAX, AISFX_BLOCK, AISFX_BLOCK_HOP = 9.457798957824707, 100, 50


@dataclass(frozen=True)
class EmbeddingConfig:
    backend: str = "auto"  # auto | npy | aisfx | clap
    checkpoint: Path | None = None  # for clap
    device: str = "cpu"


def list_clips(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in suffixes)


def resolve_backend(folder: Path, cfg: EmbeddingConfig) -> str:
    """``auto``: npy when the folder holds .npy files, else aisfx when installed."""
    if cfg.backend != "auto":
        return cfg.backend
    if list_clips(folder, (".npy",)):
        return "npy"
    if cfg.checkpoint is not None:
        return "clap"
    return "aisfx"


def load_npy_set(folder: Path) -> np.ndarray:
    """All .npy embeddings of a folder stacked into (n, d)."""
    files = list_clips(folder, (".npy",))
    if not files:
        raise AudioError(f"no .npy embeddings in {folder}")
    arrays = [np.atleast_2d(load_array(f, "embedding file", "iuf", (1, 2))) for f in files]
    dims = {a.shape[1] for a in arrays}
    if len(dims) != 1:
        raise AudioError(f"embeddings in {folder} differ in dimension: {sorted(dims)}")
    return np.concatenate(arrays, axis=0)


class AisfxEmbedder:
    """aiSFX embedding network with the weights from its installed wheel."""

    def __init__(self, device: str = "cpu"):
        import torch

        try:
            from aisfx.inference import get_path_modelWeights, load_bestModel
        except ImportError as e:
            raise NotAvailableError(
                "the default FAD embedding needs aisfx: pip install --no-deps aisfx==0.1.2 "
                "(or give precomputed .npy embeddings, or --checkpoint for LAION-CLAP)") from e
        # a pickle of (state_dict, dataset dict) shipped inside the aisfx wheel
        weights, datasets = torch.load(get_path_modelWeights(), map_location=device, weights_only=False)
        self.model = load_bestModel(weights, datasets, device)
        self.device = device

    def spectrogram(self, samples: np.ndarray) -> np.ndarray:
        """Mono samples at 44.1 kHz -> (frames, 96) scaled log-mel spectrogram."""
        import librosa

        peak = float(np.abs(samples).max())
        y = samples / peak if peak > 0 else samples
        mel = librosa.feature.melspectrogram(y=y, sr=AISFX_SR, n_fft=AISFX_N_FFT, hop_length=AISFX_HOP,
                                             n_mels=AISFX_MELS, fmin=0.0, fmax=AISFX_SR / 2,
                                             htk=True, norm=1.0, power=2.0)
        return (np.log10(mel * 10000.0 + 1.0) / AISFX_SPEC_MAX).T

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Mono 44.1 kHz samples -> (n_blocks, 512) embeddings (short clips are zero-padded)."""
        import torch

        spec = self.spectrogram(samples)
        if len(spec) < AISFX_BLOCK:
            spec = np.pad(spec, ((0, AISFX_BLOCK - len(spec)), (0, 0)))
        starts = range(0, len(spec) - AISFX_BLOCK + 1, AISFX_BLOCK_HOP)
        blocks = np.stack([spec[s:s + AISFX_BLOCK] for s in starts]).astype(np.float32)
        with torch.no_grad():
            return self.model.get_embedding(torch.from_numpy(blocks).to(self.device)).cpu().numpy()


class ClapEmbedder:
    """LAION-CLAP audio embeddings from a local checkpoint (one 512-d vector per clip)."""

    def __init__(self, checkpoint: Path, device: str = "cpu"):
        try:
            import laion_clap
        except ImportError as e:
            raise NotAvailableError("--checkpoint needs the laion_clap package installed") from e
        if not Path(checkpoint).is_file():
            raise CheckpointError(f"no such CLAP checkpoint: {checkpoint}")
        self.model = laion_clap.CLAP_Module(enable_fusion=False, device=device)
        self.model.load_ckpt(str(checkpoint))

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        emb = self.model.get_audio_embedding_from_data(x=samples[None, :].astype(np.float32), use_tensor=False)
        return np.asarray(emb).reshape(1, -1)


CLAP_SR = 48000


def embed_folder(folder: Path, cfg: EmbeddingConfig) -> np.ndarray:
    """Embeddings (n, d) of every clip in ``folder`` with the configured backend."""
    backend = resolve_backend(folder, cfg)
    if backend == "npy":
        return load_npy_set(folder)
    files = list_clips(folder, AUDIO_SUFFIXES)
    if not files:
        raise AudioError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in {folder}")
    return embed_files(files, backend, cfg)


def embed_files(files: list[Path], backend: str, cfg: EmbeddingConfig) -> np.ndarray:
    """Embedding frames (n, d) of the audio ``files`` with ``backend`` (aisfx or clap)."""
    import librosa

    if backend not in ("aisfx", "clap"):
        raise NotAvailableError(f"unknown embedding backend {backend!r} (npy, aisfx, clap)")
    if backend == "clap":
        model, sr = ClapEmbedder(cfg.checkpoint, cfg.device), CLAP_SR  # type: ignore[arg-type]
    else:
        model, sr = AisfxEmbedder(cfg.device), AISFX_SR
    out = []
    for f in files:
        try:
            y, _ = librosa.load(str(f), sr=sr, mono=True)
        except Exception as e:
            raise AudioError(f"cannot read audio {f}: {e}") from e
        out.append(model(y))
    return np.concatenate(out, axis=0)

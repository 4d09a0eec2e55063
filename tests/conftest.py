from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CORPORA = SHARED / "corpora"


@pytest.fixture
def corpora() -> Path:
    """../shared/corpora, or skip when the checkout has no shared/ beside it."""
    if not CORPORA.is_dir():
        pytest.skip(f"shared corpora not found at {CORPORA} (fresh clone without ../shared)")
    return CORPORA


@contextlib.contextmanager
def torch_threads(n: int):
    """Run with ``n`` torch threads, then restore the setting."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.fixture
def one_torch_thread():
    """One torch thread: faster on a busy 2-core box, and the same arithmetic in every run."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def vocab():
    from umust_cli.codecs.vocab import default_vocabulary

    return default_vocabulary()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny translator saved with the checkpoint module, for the shipped vocabulary."""
    import torch

    from umust_cli.checkpoint import save_model
    from umust_cli.codecs.vocab import default_vocabulary
    from umust_cli.model.translator import MODEL_KIND, Translator, make_config

    torch.manual_seed(0)
    vocab = default_vocabulary()
    cfg = make_config("tiny", vocab)
    ckpt = tmp_path_factory.mktemp("tiny")
    save_model(ckpt, Translator(cfg).state_dict(), {"kind": MODEL_KIND, "model": cfg.to_dict()}, vocab)
    return ckpt


def tiny_roll_model(ckpt: Path) -> Path:
    """A random tiny transcription model whose roll head reads C4 starting in every audio frame and
    sounding throughout (so one C4 per window: a plateau's first frame is its onset)."""
    import torch

    from umust_cli.checkpoint import save_model
    from umust_cli.codecs.vocab import default_vocabulary
    from umust_cli.model.translator import MODEL_KIND, ROLL_LOW, ROLL_PITCHES, Translator, make_config

    torch.manual_seed(0)
    vocab = default_vocabulary()
    cfg = make_config("tiny", vocab, roll_head=True)
    model = Translator(cfg)
    with torch.no_grad():
        model.roll.weight.zero_()
        bias = model.roll.bias.fill_(-10.0).view(2, ROLL_PITCHES)
        bias[:, 60 - ROLL_LOW] = 10.0
    save_model(ckpt, model.state_dict(), {"kind": MODEL_KIND, "model": cfg.to_dict(), "tasks": ["transcription"]},
               vocab)
    return ckpt


def key_reader_reading(ckpt: Path, fifths: int) -> Path:
    """A key-reader checkpoint that reads ``fifths`` in every image (its scores are its bias)."""
    import torch

    from umust_cli.checkpoint import save_model
    from umust_cli.model.key_reader import MODEL_KIND, KeyReader, KeyReaderConfig
    from umust_cli.model.translator import KEY_COUNTS

    cfg = KeyReaderConfig(channels=2)
    model = KeyReader(cfg)
    with torch.no_grad():
        model.out.weight.zero_()
        scores = model.out.bias.fill_(0.0)
        scores[abs(fifths)] = 10.0
        if fifths:
            scores[KEY_COUNTS + int(fifths > 0)] = 10.0
    save_model(ckpt, model.state_dict(), {"kind": MODEL_KIND, "model": cfg.to_dict()})
    return ckpt


def pitch_reader_reading(ckpt: Path, name: str, notated: bool = False, rhythmic: bool = False,
                         runner_up: str | None = None) -> Path:
    """A pitch-reader checkpoint (written classes) that reads ``name`` (e.g. "F4") in the first frame
    of every column of the upper staff and nothing on the lower one (its logits are its bias);
    ``notated``: a notated reader that reads ``name`` unmarked and then a bar line in every column;
    ``rhythmic``: a rhythmic reader (4 frames a column) that reads ``name`` unmarked, a quarter's
    value, a bar line and nothing in every column, ``runner_up`` its second choice of note value
    (about 2 nats less likely)."""
    import torch

    from umust_cli.checkpoint import save_model
    from umust_cli.data.staff_order import BAR, VALUE, ctc_classes
    from umust_cli.model.pitch_reader import MODEL_KIND, PitchReader, PitchReaderConfig

    target = "rhythmic" if rhythmic else "notated" if notated else "written"
    classes = ctc_classes(target)
    cfg = PitchReaderConfig(channels=2, hidden=8, layers=1, ctc_target=target, ctc_classes=len(classes),
                            frames=4 if rhythmic else 2)
    model = PitchReader(cfg)
    with torch.no_grad():
        model.ctc.weight.zero_()
        frames = model.ctc.bias.fill_(-10.0).view(2, cfg.frames, -1)   # (staves, frames, classes + blank)
        frames[..., -1] = 0.0
        frames[0, 0, classes.index((name, None) if notated or rhythmic else (name, 0))] = 10.0
        if notated:
            frames[0, 1, classes.index(BAR)] = 10.0
        if rhythmic:
            frames[0, 1, classes.index((VALUE, "quarter"))] = 10.0
            if runner_up is not None:
                frames[0, 1, classes.index((VALUE, runner_up))] = 8.0
            frames[0, 2, classes.index(BAR)] = 10.0
    save_model(ckpt, model.state_dict(), {"kind": MODEL_KIND, "model": cfg.to_dict()})
    return ckpt

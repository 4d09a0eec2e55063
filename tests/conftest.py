from __future__ import annotations

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


@pytest.fixture
def one_torch_thread():
    """One torch thread: faster on a busy 2-core box, and the same arithmetic in every run."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def vocab():
    from umust_cli.codecs.vocab import default_vocabulary

    return default_vocabulary()

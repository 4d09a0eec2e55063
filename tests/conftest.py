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

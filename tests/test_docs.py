"""The documentation: a results table and a model card for every shipped weights folder, a dated
notebook, no machine paths, and no pointer left to the removed docs/benchmarks.md."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from umust_cli import registry

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
MACHINE_PATH = re.compile(r"(?<![\w.~])/(?:tmp|work|root|home)/")
CARD_SECTIONS = ("## What it is", "## Architecture and size", "## Training", "## Metrics",
                 "## Known failure modes", "## License of the training material")


def shipped_folders() -> list[str]:
    return sorted({folder for names in registry.MODELS.values() for folder in names.values()})


def model_cards() -> list[Path]:
    return [registry.WEIGHTS_DIR / folder / "MODEL_CARD.md" for folder in shipped_folders()]


@pytest.mark.parametrize("folder", shipped_folders())
def test_every_shipped_folder_has_a_model_card(folder):
    card = registry.WEIGHTS_DIR / folder / "MODEL_CARD.md"
    text = card.read_text(encoding="utf-8")
    missing = [s for s in CARD_SECTIONS if s not in text]
    assert not missing, f"{card}: no {missing}"
    assert "Beethoven" in text, f"{card} does not say that Beethoven's sonatas are held out"
    assert "```sh" in text, f"{card} has no command that reproduces its metrics"


def test_results_has_a_section_with_commit_for_every_shipped_folder():
    text = (DOCS / "results.md").read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.M)
    for folder in shipped_folders():
        owning = [s for s in sections if s.splitlines()[0].find(f"`umust_cli/weights/{folder}`") >= 0]
        assert len(owning) == 1, f"results.md: no single section headed by umust_cli/weights/{folder}"
        assert re.search(r"commit `[0-9a-f]{7}`", owning[0]), f"results.md: {folder}'s section names no commit"


def test_no_machine_paths_in_docs():
    files = sorted(DOCS.glob("*.md")) + [REPO / "README.md"] + model_cards()
    found = [f"{f.name}:{n}: {line.strip()}" for f in files
             for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1) if MACHINE_PATH.search(line)]
    assert not found, "machine paths in the docs (use placeholders like CORPUS, RUN):\n" + "\n".join(found)


def test_notebook_entries_are_dated_and_in_order():
    text = (DOCS / "notebook.md").read_text(encoding="utf-8")
    assert "only appended to" in text.split("###", 1)[0]
    entries = re.findall(r"^### (.*)$", text, flags=re.M)
    dates = [re.match(r"(\d{4}-\d{2}-\d{2}) — \S", e) for e in entries]
    assert entries and all(dates), [e for e, d in zip(entries, dates) if not d]
    days = [d.group(1) for d in dates]
    assert days == sorted(days), "notebook entries are not in chronological order"


def test_nothing_points_at_the_removed_benchmarks_file():
    assert not (DOCS / "benchmarks.md").exists()
    files = [REPO / "README.md", *(REPO / "bench").glob("*.py"), *(REPO / "scripts").glob("*"),
             *(REPO / "umust_cli").rglob("*.py"), *(REPO / "umust_cli" / "weights").rglob("*.json"),
             *(REPO / "man").glob("*"), DOCS / "results.md", DOCS / "runbooks.md"]
    stale = [str(f.relative_to(REPO)) for f in files if f.is_file() and "benchmarks.md" in f.read_text(errors="replace")]
    assert not stale, f"still pointing at docs/benchmarks.md: {stale}"


def test_readme_links_results_and_runbooks():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert "(docs/results.md)" in text and "(docs/runbooks.md)" in text


def test_the_wheel_ships_the_model_cards():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["umust_cli"]
    package = REPO / "umust_cli"
    shipped = {p for pattern in patterns for p in package.glob(pattern)}
    assert set(model_cards()) <= shipped, "pyproject's package-data misses a MODEL_CARD.md"


def test_results_commits_exist():
    git = ["git", "-C", str(REPO)]
    probe = subprocess.run([*git, "rev-parse", "--is-shallow-repository"], capture_output=True, text=True)
    if probe.returncode != 0 or probe.stdout.strip() != "false":
        pytest.skip("not a full git clone")
    text = (DOCS / "results.md").read_text(encoding="utf-8")
    commits = sorted(set(re.findall(r"`([0-9a-f]{7})`", text)))
    assert commits
    unknown = [c for c in commits
               if subprocess.run([*git, "cat-file", "-e", f"{c}^{{commit}}"], capture_output=True).returncode != 0]
    assert not unknown, f"results.md names commits git does not know: {unknown}"

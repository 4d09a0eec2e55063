#!/usr/bin/env python3
"""Regenerate man/ and completions/ from the CLI (run after changing a command).

    python tools/gen_docs.py          # write the files
    python tools/gen_docs.py --check  # exit 1 if any checked-in file is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

from umust_cli.cli._docs import command_tree, completions, man_pages

ROOT = Path(__file__).resolve().parents[1]


def expected() -> dict[Path, str]:
    tree = command_tree()
    files = {ROOT / "man" / name: text for name, text in man_pages(tree).items()}
    files.update({ROOT / "completions" / name: text for name, text in completions(tree).items()})
    return files


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = [p for p, text in expected().items() if not p.exists() or p.read_text() != text]
    if check:
        for p in stale:
            print(f"stale: {p.relative_to(ROOT)} (run: python tools/gen_docs.py)")
        return 1 if stale else 0
    for p, text in expected().items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    print(f"wrote {len(expected())} files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Count corpus measures whose tuplets fail or change tokens, under two versions of the notation codec.

    python bench/tuplets.py [KERN...] [--old OLD_NOTATION.py] [--json OUT.json]

Default input: every ``../shared/corpora/*/kern/*.krn``. Each piece is read
with music21 and merged into one part once (the codec's own
``_music21_to_root``); then every measure, with the divisions in force, is
passed through the tuplet step (``_fix_time_modifications``) of this
checkout's codec ("new") and, with ``--old``, of another version of
``umust_cli/codecs/notation.py`` (e.g. ``git show HEAD~1:umust_cli/codecs/notation.py
> /tmp/old_notation.py``). Per measure it records: a failure ("tuplet ratio
... has no LMX token"), the time-modification tokens the LMX linearizer would
emit, and whether they differ from the file's written ``<time-modification>``
or between the versions. A piece with a failing measure fails whole (the
corpus builder drops all its systems). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from umust_cli.codecs import notation as new_codec  # noqa: E402
from umust_cli.errors import NotationError  # noqa: E402


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location("old_notation", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def tm_tokens(measure: ET.Element) -> list[str]:
    """The time-modification token of every note of a measure ("" for none)."""
    out = []
    for note in measure.iter("note"):
        tm = note.find("time-modification")
        out.append("" if tm is None else f"{tm.findtext('actual-notes')}in{tm.findtext('normal-notes')}")
    return out


def single_measures(part: ET.Element):
    """(number, a one-measure <part> carrying the divisions in force) for every measure."""
    divisions = None
    for measure in part.findall("measure"):
        found = measure.find("attributes/divisions")
        divisions = found.text if found is not None else divisions
        one = ET.Element("part")
        one.append(copy.deepcopy(measure))
        if found is None and divisions is not None:
            attributes = ET.Element("attributes")
            ET.SubElement(attributes, "divisions").text = divisions
            one[0].insert(0, attributes)
        yield measure.get("number"), one


def run_version(module, one: ET.Element) -> list[str] | str:
    """Tokens after the version's tuplet step, or the error message."""
    part = copy.deepcopy(one)
    try:
        module._renumber_voices(part, "m")
        module._fix_time_modifications(part, "m")
    except NotationError as e:
        return str(e)
    return tm_tokens(part.find("measure"))


def piece_stats(path: Path, versions: dict) -> dict:
    from music21 import converter

    root = new_codec._music21_to_root(converter.parse(str(path)), str(path))
    stats = {name: Counter() for name in versions}
    for number, one in single_measures(root.find("part")):
        written = tm_tokens(one.find("measure"))
        has_tuplet = any(written)
        results = {name: run_version(module, one) for name, module in versions.items()}
        for name, got in results.items():
            s = stats[name]
            s["measures"] += 1
            s["tuplet_measures"] += has_tuplet
            if isinstance(got, str):
                s["failed_measures"] += 1
                s[f"error: {got.split(': ', 2)[-1]}"] += 1
            elif got != written:
                s["changed_from_written"] += 1
        if len(results) == 2 and results["old"] != results["new"]:
            stats["new"]["differs_from_old"] += 1
    return {name: dict(s) for name, s in stats.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("kern", nargs="*", type=Path)
    ap.add_argument("--old", type=Path, help="another version of umust_cli/codecs/notation.py")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args()
    files = args.kern or sorted((REPO.parent / "shared" / "corpora").glob("*/kern/*.krn"))
    versions = {"new": new_codec, **({"old": load_module(args.old)} if args.old else {})}
    total = {name: Counter() for name in versions}
    failed_pieces = {name: [] for name in versions}
    t0 = time.time()
    for path in files:
        try:
            stats = piece_stats(path, versions)
        except NotationError as e:  # music21 could not read or merge it: not a tuplet matter
            print(f"skip {path.name}: {e}", file=sys.stderr)
            continue
        for name, s in stats.items():
            total[name].update(s)
            total[name]["pieces"] += 1
            if s.get("failed_measures"):
                failed_pieces[name].append(path.name)
                total[name]["measures_of_failed_pieces"] += s["measures"]
    out = {"files": len(files), "seconds": round(time.time() - t0, 1),
           **{name: {**dict(total[name]), "failed_pieces": failed_pieces[name]} for name in versions}}
    text = json.dumps(out, indent=1, sort_keys=True)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()

"""Add a later ``zoo compare`` run of some variants to a committed results JSON.

    zoo compare gqa linear --task recall --json /tmp/part.json          # same tier as the file
    python benchmarks/merge_compare.py benchmarks/results/compare-full.json /tmp/part.json
    python benchmarks/render_compare.py

Both runs must have the same tier (steps, batch, learning rates, seeds), and the later run's
floor rows (``"variant": "none"``) must equal the file's exactly: same seeds, same data, so
the rows are comparable. The later run's variant rows replace theirs; the run is recorded
under ``merged`` (variants, tasks, time, machine). No number is edited.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from zoo.compare.report import validate_document


def merge(base: dict, part: dict) -> dict:
    """``base`` with ``part``'s variant rows added (a new dict); ``ValueError`` if not comparable."""
    if base["tier"] != part["tier"]:
        raise ValueError(f"the tiers differ: {base['tier']} vs {part['tier']}")
    floors = {r["task"]: r["value"] for r in base["results"] if r["variant"] == "none"}
    for r in part["results"]:
        if r["variant"] == "none" and floors.get(r["task"]) != r["value"]:
            raise ValueError(f"floor of {r['task']!r} differs ({floors.get(r['task'])} vs {r['value']}): not the same data")
    new = [r for r in part["results"] if r["variant"] != "none"]
    names = {r["variant"] for r in new}
    out = dict(base)
    out["results"] = [r for r in base["results"] if r["variant"] not in names] + new
    out["merged"] = [*base.get("merged", []), {"variants": sorted(names), "tasks": sorted({r["task"] for r in new}),
                                               "created": part["created"], "machine": part["machine"]}]
    validate_document(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("into", type=Path, help="the committed zoo-compare/1 JSON")
    parser.add_argument("partial", type=Path, help="the later run's JSON")
    args = parser.parse_args()
    doc = merge(json.loads(args.into.read_text()), json.loads(args.partial.read_text()))
    args.into.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"merged {', '.join(doc['merged'][-1]['variants'])} into {args.into}")


if __name__ == "__main__":
    main()

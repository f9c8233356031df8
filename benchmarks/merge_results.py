"""Add a partial ``zoo bench`` run (some variants only) to results/cpu.json.

    zoo bench gqa linear --json /tmp/part.json
    python benchmarks/merge_results.py /tmp/part.json
    python benchmarks/render_results.py

The variants of the partial run replace their rows (``results``, ``memory``, ``shapes``)
in the committed JSON; every other row, the system checks and the machine of the
committed run stay as they are. The partial run's settings, machine threads and load
average are recorded under ``merged`` (one entry per merge), so every number keeps
saying under which conditions it was measured. No number is edited.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from zoo.bench import report

HERE = Path(__file__).resolve().parent


def merge(base: dict, part: dict) -> dict:
    """``base`` with the rows of ``part``'s variants replaced by ``part``'s (a new dict)."""
    if part.get("schema") != base.get("schema"):
        raise ValueError(f"schemas differ: {part.get('schema')!r} vs {base.get('schema')!r}")
    names = set(part["settings"]["variants"])
    out = dict(base)
    for key in ("results", "memory"):
        out[key] = [r for r in base[key] if r["variant"] not in names] + list(part[key])
    out["shapes"] = {k: v for k, v in base["shapes"].items()
                     if not any(k.startswith(f"{n}/") for n in names)} | part["shapes"]
    settings = dict(base["settings"])
    settings["variants"] = sorted(set(settings["variants"]) | names)
    out["settings"] = settings
    out["skipped"] = [s for s in base.get("skipped", []) if s.split(":")[0] not in names] + part.get("skipped", [])
    out["all_met"] = all(r["met"] for r in out["results"])
    record = {"variants": sorted(names), "created": part["created"], "settings": part["settings"],
              "threads": part["machine"]["threads"], "load_average": part["machine"]["load_average"]}
    older = [{**m, "variants": [v for v in m["variants"] if v not in names]} for m in base.get("merged", [])]
    out["merged"] = [m for m in older if m["variants"]] + [record]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("partial", type=Path, help="JSON written by `zoo bench NAME ... --json PATH`")
    parser.add_argument("--into", type=Path, default=HERE / "results" / "cpu.json")
    args = parser.parse_args()
    doc = merge(json.loads(args.into.read_text()), json.loads(args.partial.read_text()))
    report.write_json(doc, args.into)
    print(f"merged {', '.join(doc['merged'][-1]['variants'])} into {args.into}")


if __name__ == "__main__":
    main()

"""Write benchmarks/COMPARE.md from results/compare-quick.json (and compare-full.json).

    zoo compare cross film selfdoc persistent retro --quick \\
        --json benchmarks/results/compare-quick.json --png benchmarks/results/compare-quick.png
    zoo compare cross film selfdoc persistent retro \\
        --json benchmarks/results/compare-full.json --png benchmarks/results/compare-full.png
    python benchmarks/render_compare.py

The tables and the verdicts on the predictions are computed from the committed JSON, so
COMPARE.md always says what the data says.
"""

from __future__ import annotations

import json
from pathlib import Path

from zoo.compare.report import markdown, matrix_markdown

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

INTRO = """# What the variants learn: `zoo compare` results

Each built-in variant trained on the `zoo compare` tasks under one budget, next to the
floor `none` (the same model without its conditioning layer). Method and tasks:
`docs/guides/compare.md`. Regenerate with the commands at the top of
`benchmarks/render_compare.py`.
"""

# (task, favoured variant, other variant, relation, what the mathematics says)
PREDICTIONS = [
    ("recall", "cross", "film", "far above",
     "a pooled vector cannot say which value belongs to which key"),
    ("global", "film", "cross", "at least as good as",
     "a per-feature scale and shift is FiLM's own form; cross-attention adds a mix of context values and cannot scale x"),
    ("aligned", "selfdoc", "cross", "above",
     "SelfDoc's values come from x; cross-attention's values come from the context, which holds no content"),
    ("memory", "persistent", "cross", "above",
     "learned memory slots hold a fixed table; cross-attention has only the (useless) context to attend to"),
    ("retrieval", "retro", "none", "below (loss)",
     "the neighbours hold the continuation, and only chunked cross-attention reads them"),
]
SLACK = 0.01  # "at least as good as": no seed worse by more than this
FAR = 0.3  # "far above": a margin of at least this much on every seed


def verdicts(doc: dict) -> list[str]:
    cells = {(r["task"], r["variant"]): r for r in doc["results"]}
    lines = ["| task | prediction | margin (mean) | margin per seed | holds |", "|---|---|---|---|---|"]
    for task, a, b, rel, why in PREDICTIONS:
        ra, rb = cells.get((task, a)), cells.get((task, b))
        if not ra or not rb or ra["value"] is None or rb["value"] is None:
            lines.append(f"| {task} | {a} {rel} {b} | - | - | not measured |")
            continue
        sign = 1.0 if ra["higher_is_better"] else -1.0
        per = {s: sign * (ra["per_seed"][s] - rb["per_seed"][s]) for s in ra["per_seed"] if s in rb["per_seed"]}
        mean = sign * (ra["value"] - rb["value"])
        if rel == "far above":
            ok = all(v >= FAR for v in per.values())
        elif rel == "at least as good as":
            ok = all(v >= -SLACK for v in per.values())
        else:
            ok = all(v > 0 for v in per.values())
        seeds = ", ".join(f"seed {s}: {v:+.3f}" for s, v in per.items())
        lines.append(f"| {task} | **{a}** {rel} **{b}** ({why}) | {mean:+.3f} | {seeds} | {'yes' if ok else 'NO'} |")
    return lines


def section(title: str, path: Path) -> list[str]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    png = path.with_suffix(".png")
    body = markdown(doc, picture=f"results/{png.name}" if png.exists() else None)
    later = [f"Rows of {', '.join(m['variants'])} ({', '.join(m['tasks'])}): a later run on the same tier and "
             f"seeds ({m['created']}; its floor rows equal this run's exactly), added with "
             f"`benchmarks/merge_compare.py`." for m in doc.get("merged", [])]
    return [f"## {title}", "", body, *(later + [""] if later else []), "### The predictions", "",
            "Margin = favoured minus other in the task's better direction (for `retrieval`, the "
            "floor's loss minus RETRO's).", "", *verdicts(doc), ""]


def main() -> None:
    out = [INTRO]
    for title, name in (("Quick tier", "compare-quick.json"), ("Full tier (CPU)", "compare-full.json")):
        if (RESULTS / name).exists():
            out += section(title, RESULTS / name)
    (HERE / "COMPARE.md").write_text("\n".join(out), encoding="utf-8")
    # the matrix alone, included by docs/guides/choosing.md (the full tier when there is one)
    best = next(RESULTS / n for n in ("compare-full.json", "compare-quick.json") if (RESULTS / n).exists())
    doc = json.loads(best.read_text(encoding="utf-8"))
    tier = doc["tier"]
    note = (f"\n\n`zoo compare`, tier `{tier['name']}` ({tier['steps']} steps, seeds {tier['seeds']}, "
            f"`benchmarks/results/{best.name}`); n/a: the variant cannot take the task's inputs.\n")
    (HERE / "compare-matrix.md").write_text(matrix_markdown(doc) + note, encoding="utf-8")


if __name__ == "__main__":
    main()

"""What a variant keeps when a pretrained model's attention is converted to it (``zoo.swap``
then ``zoo.distill``): the catalog's section, read from conversion results files.

The zoo's committed ones are ``benchmarks/results/convert-*.json`` (made by the scripts
that ``benchmarks/CONVERT.md`` names): all-MiniLM-L6-v2's self-attention converted
(``"model"`` names it; each row one conversion with its points: stage, steps, mean cosine
to the original embeddings, top-1 agreement, ground-truth top-1), and a translation model's
cross-attention (rows with ``zero_shot`` / ``distilled`` token accuracy). A row belongs to
a variant by its ``variant`` field, else by the first word of its ``label``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from zoo.catalog.text import cell
from zoo.catalog.text import table as table_md

__all__ = ["RESULTS_GLOB", "load_conversions", "retention_section"]

RESULTS_GLOB = "benchmarks/results/convert-*.json"


def load_conversions(paths: Iterable[str | Path]) -> list[tuple[dict, str]]:
    """``(document, file name)`` for each readable conversion results file (others skipped)."""
    docs = []
    for path in sorted(map(Path, paths)):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("rows"), list):
            docs.append((doc, path.name))
    return docs


def _owner(row: dict) -> str:
    return str(row.get("variant") or str(row.get("label", "")).split(" ")[0])


def _f(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def retention_section(docs: list[tuple[dict, str]], name: str) -> str | None:
    """Markdown tables of what ``name`` kept, or ``None`` when no file has a row for it.

    Where several files hold the same self-attention conversion (one label), the row that
    got furthest (most points) is shown, as ``benchmarks/render_convert.py`` merges them."""
    runs: dict[str, tuple[dict, str, str]] = {}  # label -> (row, source, model), the furthest run
    out: list[str] = []
    reasons: list[str] = []
    for doc, source in docs:
        rows = [r for r in doc["rows"] if isinstance(r, dict) and _owner(r) == name]
        for r in rows:
            label = str(r.get("label", name))
            if r.get("reason"):
                reasons.append(f"- {cell(label)}: cannot serve there: {cell(str(r['reason']))}")
            elif "points" in r and len(r["points"]) > len(runs.get(label, ({"points": ()},))[0]["points"]):
                runs[label] = (r, source, str(doc.get("model", "a pretrained model")))
        table_rows = [(cell(str(r.get("label", name))), _f(r.get("zero_shot", {}).get("token_accuracy")),
                       _f(r.get("distilled", {}).get("token_accuracy")), str(r.get("distilled", {}).get("steps", "-")))
                      for r in rows if "zero_shot" in r]
        if table_rows:
            out += [f"Converting a trained translation model's cross-attention (`{source}`): token accuracy "
                    "retained.", "", table_md(("conversion", "zero-shot", "distilled", "steps"), table_rows), ""]
    if runs:
        models = sorted({model for _, _, model in runs.values()})
        sources = sorted({source for _, source, _ in runs.values()})
        table_rows = [(cell(label), cell(str(p.get("stage", "-"))), str(p.get("steps", "-")), _f(p.get("mean_cosine")),
                       _f(p.get("top1_agreement")), _f(p.get("ground_truth_top1")))
                      for label, (r, _, _) in runs.items() for p in r["points"]]
        out = [f"Converting {', '.join(models)}'s self-attention ({', '.join(f'`{s}`' for s in sources)}): mean "
               "cosine between the converted and the original sentence embeddings, agreement of their top-1 "
               "neighbours, and ground-truth top-1 retrieval.", "",
               table_md(("conversion", "stage", "steps", "mean cosine", "top-1 agreement", "ground-truth top-1"),
                        table_rows), "", *out]
    out += list(dict.fromkeys(reasons))  # one line per reason, however many files repeat it
    return "\n".join(out).rstrip() + "\n" if out else None

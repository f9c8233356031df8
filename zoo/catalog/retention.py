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
    """Markdown tables of what ``name`` kept in each results file that has rows for it, or
    ``None`` when none has."""
    out: list[str] = []
    for doc, source in docs:
        rows = [r for r in doc["rows"] if isinstance(r, dict) and _owner(r) == name]
        if not rows:
            continue
        if any("points" in r for r in rows):
            table_rows = [(cell(str(r.get("label", name))), cell(str(p.get("stage", "-"))), str(p.get("steps", "-")),
                      _f(p.get("mean_cosine")), _f(p.get("top1_agreement")), _f(p.get("ground_truth_top1")))
                     for r in rows for p in r.get("points", [])]
            out += [f"Converting {doc.get('model', 'a pretrained model')}'s self-attention (`{source}`): mean "
                    "cosine between the converted and the original sentence embeddings, agreement of their "
                    "top-1 neighbours, and ground-truth top-1 retrieval.", ""]
            if table_rows:
                out += [table_md(("conversion", "stage", "steps", "mean cosine", "top-1 agreement",
                                   "ground-truth top-1"), table_rows), ""]
        else:
            table_rows = [(cell(str(r.get("label", name))), _f(r.get("zero_shot", {}).get("token_accuracy")),
                      _f(r.get("distilled", {}).get("token_accuracy")), str(r.get("distilled", {}).get("steps", "-")))
                     for r in rows if "zero_shot" in r]
            if table_rows:
                out += [f"Converting a trained translation model's cross-attention (`{source}`): token accuracy "
                        "retained.", "", table_md(("conversion", "zero-shot", "distilled", "steps"), table_rows), ""]
        out += [f"- {cell(str(r.get('label', name)))}: cannot serve there: {cell(str(r['reason']))}"
                for r in rows if r.get("reason")]
        if out and out[-1].startswith("- "):
            out.append("")
    return "\n".join(out).rstrip() + "\n" if out else None

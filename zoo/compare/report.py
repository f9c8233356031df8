"""The outputs of ``zoo compare``: the JSON document, the terminal table, the picture
(matplotlib, imported only when drawing) and a Markdown page rendered from the JSON."""

from __future__ import annotations

import datetime
import math
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from zoo.compare.runner import FLOOR, SCHEMA, Tier

__all__ = ["document", "table", "markdown", "draw", "validate_document", "load", "variant_section",
           "matrix_markdown"]

ROW_KEYS = ("variant", "task", "metric", "value", "higher_is_better", "params", "seconds")


def document(rows: list[dict], tier: Tier, *, seed: int, device: str, tasks: Sequence[Any] = ()) -> dict:
    """The ``zoo-compare/1`` JSON document for ``rows``."""
    return {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tier": {"name": tier.name, "steps": tier.steps, "batch": tier.batch, "lrs": list(tier.lrs),
                 "seeds": list(range(seed, seed + tier.seeds)), "eval_size": tier.eval_size},
        "machine": {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "loadavg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None},
        "tasks": {t.name: {"summary": t.summary, "metric": t.metric, "higher_is_better": bool(t.higher_is_better),
                           "chance": t.chance} for t in tasks},
        "results": rows,
    }


def validate_document(doc: Any) -> None:
    """Raise ``ValueError`` if ``doc`` is not a well-formed ``zoo-compare/1`` document."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ValueError(f"not a {SCHEMA} document: schema is {doc.get('schema') if isinstance(doc, dict) else doc!r}")
    if not isinstance(doc.get("results"), list):
        raise ValueError("a zoo-compare document needs a list 'results'")
    for i, row in enumerate(doc["results"]):
        missing = [k for k in ROW_KEYS if k not in row]
        if missing:
            raise ValueError(f"result {i} lacks {missing}")
        if row["value"] is None and not row.get("reason"):
            raise ValueError(f"result {i} ({row['variant']} on {row['task']}) has value null and no reason")
        if row["value"] is not None and not isinstance(row["value"], (int, float)):
            raise ValueError(f"result {i}: value must be a number or null, got {row['value']!r}")


def _fmt(row: dict) -> str:
    v = row["value"]
    if v is None:
        return "n/a"
    spread = row.get("spread")
    return f"{v:.3f}" + (f" ±{spread:.3f}" if spread else "")


def _grid(doc: dict) -> tuple[list[str], list[str], dict[tuple[str, str], dict]]:
    rows = doc["results"]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    if FLOOR in variants:  # the floor last: the line every variant must beat
        variants = [v for v in variants if v != FLOOR] + [FLOOR]
    return tasks, variants, {(r["task"], r["variant"]): r for r in rows}


def table(doc: dict) -> str:
    """Tasks as rows, variants as columns (mean ± spread over seeds), then the null reasons."""
    from zoo.text import format_table

    tasks, variants, cells = _grid(doc)
    headers = ["task", "metric", *variants]
    body = []
    for t in tasks:
        any_row = next(cells[(t, v)] for v in variants if (t, v) in cells)
        arrow = "↑" if any_row["higher_is_better"] else "↓"
        body.append([t, f"{any_row['metric']} {arrow}", *[_fmt(cells[(t, v)]) if (t, v) in cells else "-" for v in variants]])
    out = [format_table(headers, body, wrap_last=False)]
    reasons = [f"- {r['variant']} / {r['task']}: {r['reason']}" for r in doc["results"] if r["value"] is None]
    if reasons:
        out += ["", "n/a:", *reasons]
    timed = [r for r in doc["results"] if r.get("seconds") is not None]
    if timed:
        out += ["", f"{len(timed)} cells, {sum(r['seconds'] for r in timed):.1f} s of training per seed and rate "
                    f"(tier {doc['tier']['name']}: {doc['tier']['steps']} steps x batch {doc['tier']['batch']}, "
                    f"lr grid {doc['tier']['lrs']}, seeds {doc['tier']['seeds']})"]
    return "\n".join(out)


def matrix_markdown(doc: dict) -> str:
    """The task x variant matrix alone, as a Markdown table (mean ± spread over seeds)."""
    tasks, variants, cells = _grid(doc)
    lines = ["| task | metric | chance | " + " | ".join(variants) + " |", "|---|---|---|" + "---|" * len(variants)]
    for t in tasks:
        r0 = next(cells[(t, v)] for v in variants if (t, v) in cells)
        chance = r0.get("chance")
        arrow = "higher is better" if r0["higher_is_better"] else "lower is better"
        vals = [_fmt(cells[(t, v)]) if (t, v) in cells else "n/a" for v in variants]
        lines.append(f"| {t} | {r0['metric']} ({arrow}) | {'-' if chance is None else f'{chance:.3f}'} | "
                     + " | ".join(vals) + " |")
    return "\n".join(lines)


def markdown(doc: dict, picture: str | None = None) -> str:
    """A Markdown page for the document: the matrix, parameters, times and null reasons."""
    tasks, variants, cells = _grid(doc)
    tier, mach = doc["tier"], doc.get("machine", {})
    lines = [f"Tier `{tier['name']}`: {tier['steps']} steps of batch {tier['batch']}, learning rates "
             f"{tier['lrs']} (best on a validation batch), seeds {tier['seeds']}; value = mean on a test "
             f"batch ± standard deviation over seeds. Machine: {mach.get('device', '?')}, torch "
             f"{mach.get('torch', '?')}, {mach.get('threads', '?')} threads"
             + (f", load average {mach['loadavg'][0]:.1f} on {mach.get('cpus')} CPUs at the end (a shared "
                "machine: times are indicative)" if mach.get("loadavg") else "")
             + f"; created {doc.get('created', '?')}.", ""]
    if picture:
        lines += [f"![task x variant matrix]({picture})", ""]
    lines += [matrix_markdown(doc)]
    lines += ["", "Trainable parameters (whole model) and wall time of one training run:", "",
              "| task | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for t in tasks:
        vals = []
        for v in variants:
            r = cells.get((t, v))
            vals.append("-" if r is None or r["params"] is None else f"{r['params']:,} / {r['seconds']:.2f} s")
        lines.append(f"| {t} | " + " | ".join(vals) + " |")
    reasons = [r for r in doc["results"] if r["value"] is None]
    if reasons:
        lines += ["", "Cells with no value:", ""] + [f"- **{r['variant']}** on `{r['task']}`: {r['reason']}" for r in reasons]
    return "\n".join(lines) + "\n"


def draw(doc: dict, path: str | os.PathLike) -> Path:
    """Save the task x variant matrix as a picture: each task's row coloured from its
    floor (or chance) to the best value, so every row reads 'how far above the floor'."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    tasks, variants, cells = _grid(doc)
    fig = Figure(figsize=(1.6 + 1.3 * len(variants), 0.9 + 0.55 * len(tasks)), dpi=120)
    ax = fig.subplots()
    shade = [[math.nan] * len(variants) for _ in tasks]
    for i, t in enumerate(tasks):
        vals = {v: cells[(t, v)]["value"] for v in variants if (t, v) in cells and cells[(t, v)]["value"] is not None}
        if not vals:
            continue
        sign = 1.0 if next(iter(cells[(t, v)] for v in variants if (t, v) in cells))["higher_is_better"] else -1.0
        lo = vals.get(FLOOR, min(vals.values(), key=lambda x: sign * x))
        hi = max(vals.values(), key=lambda x: sign * x)
        for j, v in enumerate(variants):
            if v in vals:
                shade[i][j] = 0.0 if hi == lo else max(0.0, min(1.0, (vals[v] - lo) / (hi - lo)))
            r = cells.get((t, v))
            text = "n/a" if r is None or r["value"] is None else f"{r['value']:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=9)
    ax.imshow(shade, cmap="Greens", vmin=-0.15, vmax=1.15, aspect="auto")
    ax.set_xticks(range(len(variants)), variants)
    labels = []
    for t in tasks:
        r0 = next(cells[(t, v)] for v in variants if (t, v) in cells)
        labels.append(f"{t} ({r0['metric']} {'↑' if r0['higher_is_better'] else '↓'})")
    ax.set_yticks(range(len(tasks)), labels)
    ax.set_title(f"zoo compare ({doc['tier']['name']}): green = far above the floor", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    return out


def load(path: str | os.PathLike | None) -> dict | None:
    """A committed ``zoo-compare/1`` document, or ``None`` when ``path`` is missing."""
    import json

    if path is None or not Path(path).exists():
        return None
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    validate_document(doc)
    return doc


def variant_section(doc: dict | None, name: str) -> str | None:
    """One variant's measured rows next to the floor, as Markdown (for its catalog page);
    ``None`` when the document has no row for ``name``."""
    if not doc:
        return None
    _, _, cells = _grid(doc)
    rows = [r for r in doc["results"] if r["variant"] == name]
    if not rows:
        return None
    lines = ["| task | metric | this variant | floor (`none`) | chance | trainable params |", "|---|---|---|---|---|---|"]
    for r in rows:
        floor = cells.get((r["task"], FLOOR))
        value = _fmt(r) if r["value"] is not None else f"n/a: {r.get('reason', '')}"
        chance = "-" if r.get("chance") is None else f"{r['chance']:.3f}"
        arrow = "↑" if r["higher_is_better"] else "↓"
        lines.append(f"| {r['task']} | {r['metric']} {arrow} | {value} | {_fmt(floor) if floor else '-'} | {chance} | "
                     f"{'-' if r['params'] is None else format(r['params'], ',')} |")
    return "\n".join(lines)

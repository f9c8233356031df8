"""What the harness and the benchmark said, summarised for the catalog's pages."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.catalog.text import cell, table
from zoo.spec import VariantSpec

__all__ = ["HarnessSummary", "harness_summary", "bench_ratios", "bench_table", "load_bench"]


@dataclass
class HarnessSummary:
    """What the shared harness said about one variant (or why it could not say)."""

    available: bool
    passed: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    results: list[tuple[str, str, str]] = field(default_factory=list)
    note: str = ""

    @property
    def short(self) -> str:
        """``"34/34 passed"``, ``"2 failed"`` or ``"not available"`` for the index."""
        if not self.available:
            return "not available"
        ran = self.counts.get("passed", 0) + self.counts.get("failed", 0)
        text = f"{self.counts.get('passed', 0)}/{ran} passed"
        if self.counts.get("failed"):
            text += f", {self.counts['failed']} failed"
        if self.counts.get("skipped"):
            text += f", {self.counts['skipped']} skipped"
        return text

    @classmethod
    def from_report(cls, report: Any) -> HarnessSummary:
        """The summary of a :class:`zoo.harness.CheckReport` already computed."""
        results = [(str(r.check), str(r.status), str(r.message or "")) for r in report.results]
        counts: dict[str, int] = {}
        for _, status, _ in results:
            counts[status] = counts.get(status, 0) + 1
        return cls(True, bool(report.passed), counts, results)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (:meth:`from_dict` reads it back): how the docs build reuses results."""
        return {"available": self.available, "passed": self.passed, "counts": self.counts,
                "results": [list(r) for r in self.results], "note": self.note}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HarnessSummary:
        return cls(bool(data["available"]), bool(data.get("passed")), dict(data.get("counts", {})),
                   [tuple(r) for r in data.get("results", [])], str(data.get("note", "")))


def harness_summary(spec: VariantSpec) -> HarnessSummary:
    """Run the shared harness (:func:`zoo.check`) on ``spec``; never raises."""
    try:
        from zoo.harness import check
    except ImportError as exc:
        return HarnessSummary(False, note=f"the harness is not installed ({exc})")
    try:
        report = check(spec)
    except Exception as exc:  # noqa: BLE001 - a page must still be built
        return HarnessSummary(False, note=f"the harness raised {type(exc).__name__}: {exc}")
    return HarnessSummary.from_report(report)


def load_bench(path: str | Path | None) -> list[dict[str, Any]]:
    if path is None:
        return []
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    rows = data.get("results") if isinstance(data, Mapping) else None
    if not isinstance(rows, list):
        return []
    return [r for r in rows if isinstance(r, Mapping) and isinstance(r.get("variant"), str)
            and isinstance(r.get("ratio"), (int, float)) and math.isfinite(r["ratio"])]  # no ratio: not shown


def bench_ratios(path: str | Path | None) -> dict[str, str]:
    """Per-variant speed ratios from a ``zoo bench`` results JSON (schema ``zoo-bench/1``).

    A ratio is ``zoo_ms / baseline_ms``: the variant's time over the baseline its spec
    gives (:class:`zoo.BenchSpec`; bare ``scaled_dot_product_attention`` for attention)
    doing the same work (lower is faster).
    Summarised per pass (``fwd``, ``fwd+bwd``, ...) as the median over the benchmark's
    shapes and dtypes, e.g. ``{"cross": "fwd 1.01x, fwd+bwd 1.03x"}``. A missing or
    unreadable file gives ``{}`` (the catalog then says "not measured").
    """
    import statistics

    by_variant: dict[str, dict[str, list[float]]] = {}
    for row in load_bench(path):
        passes = by_variant.setdefault(row["variant"], {})
        passes.setdefault(str(row.get("pass", "")), []).append(float(row["ratio"]))
    return {name: ", ".join(f"{label} {statistics.median(r):.2f}x".strip() for label, r in passes.items())
            for name, passes in by_variant.items()}


def bench_table(path: str | Path | None, name: str, baseline_label: str = "baseline") -> str | None:
    """The benchmark rows of one variant as a markdown table (``None`` if not measured);
    the baseline's column is headed with ``baseline_label`` (the spec's
    :attr:`zoo.BenchSpec.baseline_label`, e.g. "bare SDPA")."""
    rows = [r for r in load_bench(path) if r["variant"] == name]
    if not rows:
        return None

    def ms(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, (int, float)) else "-"

    def compare(r: Mapping) -> str:
        c = r.get("compare")
        if isinstance(c, Mapping) and isinstance(c.get("ratio"), (int, float)):
            return f"{c['ratio']:.3f} of `{c.get('variant', '?')}` ({ms(c.get('ms'))} ms)"
        return "-"

    headers = ["shape", "dtype", "pass", "zoo ms", f"{cell(baseline_label)} ms", "ratio"]
    body = [[cell(r.get("shape", "")), cell(r.get("dtype", "")), cell(r.get("pass", "")),
             ms(r.get("zoo_ms")), ms(r.get("baseline_ms")), f"{r['ratio']:.3f}"] for r in rows]
    if any(isinstance(r.get("compare"), Mapping) for r in rows):
        headers.append("time relative to")
        for line, r in zip(body, rows):
            line.append(compare(r))
    return table(headers, body)

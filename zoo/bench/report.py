"""The printed table, the JSON document, and the progress display.

JSON schema (``"schema": "zoo-bench/1"``), read by the catalog (``zoo/catalog.py``)::

    {
      "schema": "zoo-bench/1",
      "created": "2026-11-22T00:55:00Z",
      "machine": {"platform", "processor", "cpu_model", "cores", "threads", "device",
                  "python", "load_average": [start, end]},
      "torch": "2.13.0+cpu",
      "settings": {"size", "repeat", "dtypes", "shapes", "memory"},
      "shapes": {"sd": {"batch", "query_len", "context_len", ...}, ...},
      "results": [                       # one per variant x shape x dtype x pass
        {"variant": "cross", "shape": "sd", "dtype": "float32", "pass": "fwd",
         "zoo_ms": 10.1, "baseline_ms": 10.0, "ratio": 1.01, "target": 1.05, "met": true,
         "zoo_iqr_ms": [..], "baseline_iqr_ms": [..],
         "paired_ratio": 1.01,            # median over rounds of zoo/bare within a round
         "rounds": 11, "calls_per_round": 1,
         "max_abs_diff": 0.0,
         "compare": {"variant": "cross", "ms": 12.3, "ratio": 0.05}}   # film only
      ],
      "memory": [                        # peak MiB above baseline, one per result row
        {"variant", "shape", "dtype", "pass", "zoo_mib", "baseline_mib", "ratio"}
      ],
      "system": {
        "dispatch": [{"variant", "zoo_us", "baseline_us", "overhead_us", "target_us", "met"}],
        "import": {"seconds", "samples", "target_s", "met"},
        "memory_scaling": {"rows": [{"length", "zoo_mib", "bare_mib", "score_matrix_mib"}],
                           "growth", "target_mib", "growth_limit", "met"},
        "gflops": {"float32": {"matmul_peak_gflops", "matmul_median_gflops", "sdpa_gflops",
                               "sdpa_fraction_of_matmul", "sdpa_fraction_of_peak",
                               "layer", "layer_gflops", "layer_fraction_of_matmul", ...}, ...}
      },
      "skipped": ["<variant>: <why>"],
      "all_met": true
    }

``ratio`` is ``zoo_ms / baseline_ms``, both medians over the same interleaved rounds.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

__all__ = ["Progress", "format_results", "format_memory", "format_system", "write_json", "SCHEMA"]

SCHEMA = "zoo-bench/1"


class Progress:
    """One status line on stderr: rewritten in place on a terminal, one line per step in a log."""

    def __init__(self, total: int, *, enabled: bool = True, stream=None) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self._last = ""

    def _elapsed(self) -> str:
        s = int(time.perf_counter() - self.start)
        return f"{s // 60}:{s % 60:02d}"

    def _eta(self) -> str:
        if not self.done:
            return "?"
        s = int((time.perf_counter() - self.start) / self.done * (self.total - self.done))
        return f"{s // 60}:{s % 60:02d}"

    def show(self, what: str, detail: str = "") -> None:
        if not self.enabled:
            return
        line = f"[{self.done}/{self.total}] {self._elapsed()} (eta {self._eta()}) {what}"
        if detail:
            line += f"  {detail}"
        if self.tty:
            self.stream.write("\r\033[K" + line[:200])
        elif what != self._last:
            self.stream.write(line + "\n")
        self._last = what
        self.stream.flush()

    def step(self, what: str = "") -> None:
        self.done += 1
        if what:
            self.show(what)

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _verdict(met: bool | None) -> str:
    return "-" if met is None else ("ok" if met else "MISS")


def format_results(results: list[dict]) -> str:
    from zoo.cli import format_table

    rows = []
    for r in results:
        note = ""
        if "compare" in r:
            c = r["compare"]
            note = f"{c['variant']} {c['ms']:.2f} ms: film is {c['ratio']:.3f}x of it"
        if r.get("mismatch"):
            note = f"OUTPUT MISMATCH {r['max_abs_diff']:.2e}"
        rows.append((r["variant"], r["shape"], r["dtype"], r["pass"], f"{r['zoo_ms']:.2f}",
                     f"{r['baseline_ms']:.2f}", f"{r['ratio']:.3f}", f"{r['target']:.2f}",
                     _verdict(r["met"]), note))
    return format_table(("variant", "shape", "dtype", "pass", "zoo ms", "bare ms", "ratio", "target",
                         "verdict", "note"), rows)


def format_memory(memory: list[dict]) -> str:
    from zoo.cli import format_table

    rows = [(m["variant"], m["shape"], m["dtype"], m["pass"], f"{m['zoo_mib']:.1f}",
             f"{m['baseline_mib']:.1f}", f"{m['ratio']:.2f}" if m["ratio"] is not None else "-")
            for m in memory]
    return format_table(("variant", "shape", "dtype", "pass", "zoo MiB", "bare MiB", "ratio"), rows,
                        wrap_last=False)


def format_system(system: dict) -> str:
    from zoo.cli import format_table

    rows = []
    for d in system.get("dispatch", []):
        rows.append((f"dispatch overhead ({d['variant']})",
                     f"{d['overhead_us']:.1f} us (zoo {d['zoo_us']:.1f} us, bare {d['baseline_us']:.1f} us)",
                     f"< {d['target_us']:.0f} us", _verdict(d["met"])))
    imp = system.get("import")
    if imp:
        rows.append(("import zoo + plugin discovery", f"{imp['seconds']:.3f} s beyond torch "
                     f"({imp['variants_discovered']} variants)", f"< {imp['target_s']} s", _verdict(imp["met"])))
    ms = system.get("memory_scaling")
    if ms:
        parts = ", ".join(f"N=M={r['length']}: {r['zoo_mib']:.0f} MiB (bare {r['bare_mib']:.0f})" for r in ms["rows"])
        rows.append(("peak memory, fwd, fp32", parts + f"; growth {ms['growth']:.2f}x "
                     f"(linear {ms['expected_linear_growth']:.0f}x, N x M {ms['expected_linear_growth'] ** 2:.0f}x)",
                     f"< {ms['target_mib']:.0f} MiB, <= {ms['growth_limit']:.0f}x", _verdict(ms["met"])))
    for name, g in system.get("gflops", {}).items():
        rows.append((f"fused attention GFLOP/s ({name})",
                     f"SDPA {g['sdpa_gflops']:.0f}: {g['sdpa_fraction_of_matmul']:.0%} of same-round matmul "
                     f"({g['matmul_median_gflops']:.0f}), {g['sdpa_fraction_of_peak']:.0%} of its best sample "
                     f"({g['matmul_peak_gflops']:.0f})", "~70%", "-"))
        if "layer_gflops" in g:
            rows.append((f"zoo {g['layer']} layer GFLOP/s ({name}, fwd)",
                         f"{g['layer_gflops']:.0f} (projections included): {g['layer_fraction_of_matmul']:.0%} of "
                         f"same-round matmul, {g['layer_fraction_of_peak']:.0%} of best", "-", "-"))
    return format_table(("system check", "measured", "target", "verdict"), rows, wrap_last=False)


def write_json(doc: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return path


def _md_table(headers, rows) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def to_markdown(doc: dict) -> str:
    """The results document as markdown (``python -m zoo.bench.report cpu.json``)."""
    m = doc["machine"]
    s = doc["settings"]
    lines = [
        f"Run {doc['created']}: {m.get('cpu_model')} ({m.get('cores')} cores, {m.get('threads')} threads, "
        f"{m.get('cpu_capability') or ''}), torch {doc['torch']}, Python {m.get('python')}, device {m.get('device')}; "
        f"size `{s['size']}`, at least {s['repeat']} interleaved rounds per measurement (budget {s.get('budget_s')} s), "
        f"medians; load average at start/end: {m.get('load_average')}.",
        "",
        "Shapes: " + "; ".join(f"`{k}` {_describe(v)}" for k, v in doc["shapes"].items()) + ".",
        "",
        "### Time: zoo layer vs bare SDPA baseline",
        "",
    ]
    rows = []
    for r in doc["results"]:
        note = ""
        if "compare" in r:
            c = r["compare"]
            note = f"zoo {c['variant']} at this shape: {c['ms']:.2f} ms (film = {c['ratio']:.3f}x of it)"
        rows.append((r["variant"], r["shape"], r["dtype"], r["pass"], f"{r['zoo_ms']:.2f}", f"{r['baseline_ms']:.2f}",
                     f"**{r['ratio']:.3f}**", f"{r.get('paired_ratio', float('nan')):.3f}", r.get("rounds", ""),
                     f"<= {r['target']:.2f}", "met" if r["met"] else "**missed**", note))
    lines.append(_md_table(("variant", "shape", "dtype", "pass", "zoo ms", "bare ms", "ratio", "paired ratio",
                            "rounds", "target", "verdict", "note"), rows))
    if doc.get("memory"):
        lines += ["", "### Peak memory of one call above the process baseline (MiB, fresh process each)", ""]
        lines.append(_md_table(("variant", "shape", "dtype", "pass", "zoo MiB", "bare MiB", "ratio"),
                               [(x["variant"], x["shape"], x["dtype"], x["pass"], f"{x['zoo_mib']:.1f}",
                                 f"{x['baseline_mib']:.1f}", "-" if x["ratio"] is None else f"{x['ratio']:.2f}")
                                for x in doc["memory"]]))
    sysd = doc.get("system") or {}
    if sysd:
        lines += ["", "### System checks", "", "```", format_system(sysd), "```"]
    if doc.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(doc["skipped"])]
    lines += ["", "All targets met." if doc["all_met"] else "**Some targets missed.**"]
    return "\n".join(lines) + "\n"


def _describe(shape: dict) -> str:
    if shape.get("chunk_size"):
        return (f"B={shape['batch']} N={shape['query_len']} chunk={shape['chunk_size']} K={shape['neighbours']} "
                f"R={shape['context_len']} width {shape['query_dim']}, {shape['heads']} heads of {shape['dim_head']}")
    return (f"B={shape['batch']} N={shape['query_len']} M={shape['context_len']} query {shape['query_dim']} "
            f"context {shape['context_dim']}, {shape['heads']} heads of {shape['dim_head']}")


if __name__ == "__main__":
    print(to_markdown(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))), end="")

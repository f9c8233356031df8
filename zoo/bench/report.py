"""The printed table, the JSON document, and the progress display.

JSON schema (``"schema": "zoo-bench/1"``), read by the catalog (:mod:`zoo.catalog`)::

    {
      "schema": "zoo-bench/1",
      "created": "2026-11-22T00:55:00Z",
      "machine": {"platform", "processor", "cpu_model", "cores", "threads", "device",
                  "python", "load_average": [start, end]},
      "torch": "2.13.0+cpu",
      "settings": {"size", "repeat", "dtypes", "shapes", "memory"},
      "shapes": {"sd": {"batch", "query_len", "context_len", ...}, ...},
      "results": [                       # one per variant x shape x dtype x pass
        {"variant": "<name>", "shape": "sd", "dtype": "float32", "pass": "fwd",
         "zoo_ms": 10.1, "baseline_ms": 10.0, "ratio": 1.01, "target": 1.05, "met": true,
         "zoo_iqr_ms": [..], "baseline_iqr_ms": [..],
         "paired_ratio": 1.01,            # median over rounds of zoo/bare within a round
         "rounds": 11, "calls_per_round": 1,
         "max_abs_diff": 0.0,
         "baseline": "bare SDPA",          # the spec's baseline_label; null: no baseline, no ratio
         "paired_ratio_ci95": [0.98, 1.03],  # 95 % interval of the median paired ratio (>= 6 rounds)
         "compare": {"variant": "...", "ms": 12.3, "ratio": 0.05}}   # when the spec names one
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

``ratio`` is ``zoo_ms / baseline_ms``, both medians over the same interleaved rounds;
``met`` is ``null`` where no verdict is given (no baseline, or a smoke run whose interval
straddles the target).
"""

from __future__ import annotations

import json
import textwrap
import sys
import time
from pathlib import Path

from zoo.text import format_table

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


WIDTH = 100  # every printed table fits 100 columns
_SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float64": "fp64"}


def _verdict(met: bool | None) -> str:
    return "-" if met is None else ("ok" if met else "MISS")


def _ms(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def format_results(results: list[dict]) -> str:
    """The timing table, one row per variant, workload, dtype and pass, then one note
    line per variant whose baseline is not bare SDPA, has none, or has a comparison
    (fits 100 columns)."""
    rows, notes = [], {}
    for r in results:
        name = r["variant"]
        if r.get("baseline") is None:
            notes.setdefault(name, {})["base"] = "no baseline in its spec: absolute times, no ratio"
        elif r["baseline"] != "bare SDPA":
            notes.setdefault(name, {})["base"] = f"baseline = {r['baseline']}"
        if "compare" in r:
            c = r["compare"]
            notes.setdefault(name, {}).setdefault("compare", []).append(
                f"{r['shape']} {_SHORT.get(r['dtype'], r['dtype'])} {r['pass']}: {c['ratio']:.2f}x")
            notes[name]["with"] = c["variant"]
        if r.get("mismatch"):
            notes.setdefault(name, {}).setdefault("diff", []).append(
                f"OUTPUT MISMATCH {r['shape']} {r['dtype']}: {r['max_abs_diff']:.1e}")
        ci = r.get("paired_ratio_ci95")
        rows.append((name, r["shape"], _SHORT.get(r["dtype"], r["dtype"]), r["pass"], _ms(r["zoo_ms"]),
                     _ms(r.get("baseline_ms")), "-" if r.get("ratio") is None else f"{r['ratio']:.3f}",
                     f"{ci[0]:.2f}-{ci[1]:.2f}" if ci else "-",
                     "-" if r.get("target") is None else f"{r['target']:.2f}", _verdict(r["met"])))
    table = format_table(("variant", "shape", "dtype", "pass", "zoo ms", "base ms", "ratio", "95% CI", "target",
                          "verdict"), rows, wrap_last=False)
    lines = []
    for name, n in notes.items():
        parts = [n["base"]] if "base" in n else []
        if "compare" in n:
            parts.append(f"time as a fraction of {n['with']}'s: " + ", ".join(n["compare"]))
        parts += n.get("diff", [])
        lines += textwrap.wrap(f"{name}: " + "; ".join(parts), WIDTH, subsequent_indent="    ")
    return table + ("\n\n" + "\n".join(lines) if lines else "")


def format_memory(memory: list[dict]) -> str:
    rows = [(m["variant"], m["shape"], _SHORT.get(m["dtype"], m["dtype"]), m["pass"], f"{m['zoo_mib']:.1f}",
             "-" if m.get("baseline_mib") is None else f"{m['baseline_mib']:.1f}",
             f"{m['ratio']:.2f}" if m.get("ratio") is not None else "-")
            for m in memory]
    return format_table(("variant", "shape", "dtype", "pass", "zoo MiB", "base MiB", "ratio"), rows,
                        wrap_last=False)


def format_system(system: dict) -> str:
    """The system checks; the measured column wraps so the table fits 100 columns."""
    rows = []
    for d in system.get("dispatch", []):
        rows.append((f"dispatch ({d['variant']})", f"< {d['target_us']:.0f} us", _verdict(d["met"]),
                     f"{d['overhead_us']:.1f} us (zoo {d['zoo_us']:.1f}, bare {d['baseline_us']:.1f})"))
    imp = system.get("import")
    if imp:
        rows.append(("import + discovery", f"< {imp['target_s']} s", _verdict(imp["met"]),
                     f"{imp['seconds']:.3f} s beyond torch ({imp['variants_discovered']} variants)"))
    ms = system.get("memory_scaling")
    if ms:
        parts = ", ".join(f"N=M={r['length']}: {r['zoo_mib']:.0f} MiB"
                          + (f" (bare {r['bare_mib']:.0f})" if "bare_mib" in r else "") for r in ms["rows"])
        rows.append((f"peak memory ({ms.get('variant', '?')})",
                     f"< {ms['target_mib']:.0f} MiB, <= {ms['growth_limit']:.0f}x", _verdict(ms["met"]),
                     parts + f"; growth {ms['growth']:.2f}x (linear {ms['expected_linear_growth']:.0f}x, "
                     f"N x M {ms['expected_linear_growth'] ** 2:.0f}x)"))
    for name, g in system.get("gflops", {}).items():
        rows.append((f"SDPA GFLOP/s ({_SHORT.get(name, name)})", "~70%", "-",
                     f"{g['sdpa_gflops']:.0f}: {g['sdpa_fraction_of_matmul']:.0%} of same-round matmul "
                     f"({g['matmul_median_gflops']:.0f}), {g['sdpa_fraction_of_peak']:.0%} of its best "
                     f"({g['matmul_peak_gflops']:.0f})"))
        if "layer_gflops" in g:
            rows.append((f"{g['layer']} GFLOP/s ({_SHORT.get(name, name)})", "-", "-",
                         f"{g['layer_gflops']:.0f} (projections included): {g['layer_fraction_of_matmul']:.0%} "
                         f"of same-round matmul, {g['layer_fraction_of_peak']:.0%} of best"))
    return format_table(("system check", "target", "verdict", "measured"), rows, width=WIDTH)


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
        "### Time: zoo layer vs the baseline its spec gives (bare SDPA for attention)",
        "",
    ]
    rows = []
    for r in doc["results"]:
        note = ""
        if "compare" in r:
            c = r["compare"]
            note = f"zoo {c['variant']} at this shape: {c['ms']:.2f} ms ({r['variant']} = {c['ratio']:.3f}x of it)"
        if r.get("baseline") and r["baseline"] != "bare SDPA":
            note = (f"baseline: {r['baseline']}; " + note).rstrip("; ")
        ratio, paired = r.get("ratio"), r.get("paired_ratio")
        verdict = "-" if r.get("met") is None else ("met" if r["met"] else "**missed**")
        rows.append((r["variant"], r["shape"], r["dtype"], r["pass"], _ms(r["zoo_ms"]), _ms(r.get("baseline_ms")),
                     "-" if ratio is None else f"**{ratio:.3f}**", "-" if paired is None else f"{paired:.3f}",
                     r.get("rounds", ""), "-" if r.get("target") is None else f"<= {r['target']:.2f}",
                     verdict, note))
    lines.append(_md_table(("variant", "shape", "dtype", "pass", "zoo ms", "bare ms", "ratio", "paired ratio",
                            "rounds", "target", "verdict", "note"), rows))
    if doc.get("memory"):
        lines += ["", "### Peak memory of one call above the process baseline (MiB, fresh process each)", ""]
        lines.append(_md_table(("variant", "shape", "dtype", "pass", "zoo MiB", "bare MiB", "ratio"),
                               [(x["variant"], x["shape"], x["dtype"], x["pass"], f"{x['zoo_mib']:.1f}",
                                 _ms(x.get("baseline_mib")), "-" if x["ratio"] is None else f"{x['ratio']:.2f}")
                                for x in doc["memory"]]))
    sysd = doc.get("system") or {}
    if sysd:
        lines += ["", "### System checks", "", "```", format_system(sysd), "```"]
    if doc.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(doc["skipped"])]
    if doc["settings"].get("verdicts", True):
        lines += ["", "All targets met." if doc["all_met"] else "**Some targets missed.**"]
    else:
        lines += ["", "Smoke run: verdicts only where a 95 % interval over paired rounds settles them."]
    return "\n".join(lines) + "\n"


def _describe(shape: dict) -> str:
    if "config" in shape:  # a workload (zoo.Workload.as_dict)
        extra = " ".join(f"{k}={v}" for k, v in shape["config"].items())
        return f"B={shape['batch']} N={shape['query_len']} M={shape['context_len']} {extra}".strip()
    return " ".join(f"{k}={v}" for k, v in shape.items())


if __name__ == "__main__":
    print(to_markdown(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))), end="")

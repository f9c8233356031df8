"""System checks: dispatch overhead, import time, memory scaling, GFLOP/s against peak."""

from __future__ import annotations

import statistics
import subprocess
import sys
from collections.abc import Callable

from zoo.bench.timing import interleaved
from zoo.benchspec import Workload

__all__ = ["dispatch_overhead", "import_time", "memory_scaling", "gflops"]

DISPATCH_TARGET_US = 50.0
IMPORT_TARGET_S = 0.3
MEMORY_TARGET_MIB = 512.0
# Linear growth from N=M=4096 to 16384 is 4x; a materialised N x M matrix makes it 16x.
MEMORY_GROWTH_LIMIT = 6.0


def dispatch_overhead(variant: str, *, repeat: int = 15, device: str = "cpu", judge: bool = True) -> dict:
    """Microseconds a call through the zoo layer costs beyond the spec's baseline, at the
    variant's first workload at ``tiny`` size, where the arithmetic is small: validation,
    module calls and the fast-path decisions. Measured on one thread. ``judge=False``
    (smoke runs) reports the number with no verdict (``met`` is ``None``)."""
    import torch

    import zoo
    from zoo.bench.cases import bench_of, build

    spec = zoo.get_variant(variant)
    bench = bench_of(spec)
    if bench.baseline is None:
        raise ValueError(f"{spec.name!r} has no baseline in its BenchSpec: no overhead to measure")
    bare = bench.baseline
    threads = torch.get_num_threads()
    wl = bench.shapes[0].tiny
    module, inputs = build(spec, wl, dtype=torch.float32, device=device)
    module.eval()

    def zoo_call():
        with torch.no_grad():
            module(**inputs)

    def bare_call():
        with torch.no_grad():
            bare(module, **inputs)

    # One thread: the overhead is Python and dispatcher work, which threads do not
    # share; at this size a second thread only adds fork/join jitter (and, on a
    # loaded machine, waits for a descheduled worker).
    torch.set_num_threads(1)
    try:
        s = interleaved({"zoo": zoo_call, "bare": bare_call}, repeat=repeat, warmup=20,
                        min_sample_s=0.01, device=device)
    finally:
        torch.set_num_threads(threads)
    zoo_us, bare_us = s["zoo"].median * 1e6, s["bare"].median * 1e6
    over = zoo_us - bare_us
    return {
        "variant": spec.name,
        "shape": wl.as_dict(),
        "zoo_us": round(zoo_us, 2),
        "baseline_us": round(bare_us, 2),
        "overhead_us": round(over, 2),
        "target_us": DISPATCH_TARGET_US,
        "threads": 1,
        "met": bool(over < DISPATCH_TARGET_US) if judge else None,
    }


def import_time(*, repeat: int = 5, judge: bool = True) -> dict:
    """Seconds ``import zoo`` plus plugin discovery (``zoo.list_variants()``) take in a
    fresh process that has already imported torch (median of ``repeat`` processes)."""
    code = (
        "import time, torch\n"
        "t = time.perf_counter()\n"
        "import zoo\n"
        "names = zoo.list_variants()\n"
        "print(time.perf_counter() - t, len(names))\n"
    )
    times, count = [], 0
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        t, n = out.stdout.split()
        times.append(float(t))
        count = int(n)
    med = statistics.median(times)
    return {
        "seconds": round(med, 4),
        "samples": [round(t, 4) for t in times],
        "variants_discovered": count,
        "target_s": IMPORT_TARGET_S,
        "met": bool(med < IMPORT_TARGET_S) if judge else None,
    }


def _square(n: int) -> Workload:
    return Workload(1, n, n, {"query_dim": 512, "context_dim": 512, "heads": 8, "dim_head": 64})


def memory_scaling(lengths=(4096, 16384), *, variant: str, device: str = "cpu", threads: int | None = None,
                   judge: bool = True, progress: Callable[[str], None] | None = None) -> dict:
    """Peak memory of one forward call (B=1, N=M=L, width 512, 8 heads of 64, float32)
    above the process's baseline, for the zoo layer ``variant`` and its spec's baseline."""
    import zoo
    from zoo.bench.cases import bench_of
    from zoo.bench.memory import measure

    impls = ("zoo", "bare") if bench_of(zoo.get_variant(variant)).baseline is not None else ("zoo",)
    rows = []
    for n in lengths:
        row = {"length": n}
        for impl in impls:
            if progress:
                progress(f"memory scaling {impl} N=M={n}")
            job = {"variant": variant, "impl": impl, "workload": _square(n).as_dict(), "dtype": "float32",
                   "passes": ["fwd"], "device": device, "threads": threads}
            row[f"{impl}_mib"] = round(measure(job)["fwd"], 1)
        # what one float32 N x M score matrix per head would need
        row["score_matrix_mib"] = round(8 * n * n * 4 / 2**20, 1)
        rows.append(row)
    growth = rows[-1]["zoo_mib"] / max(rows[0]["zoo_mib"], 1e-9)
    peak = rows[-1]["zoo_mib"]
    return {
        "variant": variant,
        "pass": "fwd",
        "dtype": "float32",
        "rows": rows,
        "growth": round(growth, 2),
        "expected_linear_growth": lengths[-1] / lengths[0],
        "target_mib": MEMORY_TARGET_MIB,
        "growth_limit": MEMORY_GROWTH_LIMIT,
        "met": bool(peak < MEMORY_TARGET_MIB and growth <= MEMORY_GROWTH_LIMIT) if judge else None,
    }


def gflops(*, dtypes=("float32", "bfloat16"), length: int = 4096, matmul_n: int = 2048,
           repeat: int = 9, device: str = "cpu", layer: str | None = None) -> dict:
    """Achieved GFLOP/s of fused attention against the machine's matmul, same rounds.

    Three workloads run interleaved: a square ``matmul_n`` matmul (the machine's peak:
    its best sample; also its median), SDPA at B=1, N=M=``length``, 8 heads of 64
    (``4 N M h d`` flops), and the zoo ``layer`` at the same shape, width 512, forward
    (projections included in its flops; the first variant whose bench says ``system``).
    Fractions are of the same-round matmul median
    (robust on a shared machine) and of the peak.
    """
    import torch
    import torch.nn.functional as F

    import zoo
    from zoo.bench.cases import attention_flops, build

    out = {}
    for name in dtypes:
        dtype = getattr(torch, name)
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, 8, length, 64, generator=g).to(device, dtype) for _ in range(3))
        a, b = (torch.randn(matmul_n, matmul_n, generator=g).to(device, dtype) for _ in range(2))
        fns = {
            "matmul": lambda: torch.mm(a, b),
            "sdpa": lambda: F.scaled_dot_product_attention(q, k, v),
        }
        wl = _square(length)
        if layer is not None and layer in zoo.list_variants():
            module, inputs = build(zoo.get_variant(layer), wl, dtype=dtype, device=device)
            module.eval()
            fns["layer"] = lambda: module(**inputs)
        with torch.no_grad():
            s = interleaved(fns, repeat=repeat, warmup=1, min_sample_s=0.05, device=device)
        mm_flops = 2 * matmul_n**3
        peak = mm_flops / min(s["matmul"].seconds) / 1e9
        mm_med = mm_flops / s["matmul"].median / 1e9
        flops = attention_flops(1, length, length, 8, 64, 512, 512)
        at = flops["attention"] / s["sdpa"].median / 1e9
        row = {
            "matmul_peak_gflops": round(peak, 1),
            "matmul_median_gflops": round(mm_med, 1),
            "sdpa_gflops": round(at, 1),
            "sdpa_fraction_of_matmul": round(at / mm_med, 3),
            "sdpa_fraction_of_peak": round(at / peak, 3),
            "shape": wl.as_dict(),
            "matmul_n": matmul_n,
        }
        if "layer" in s:
            lg = flops["total"] / s["layer"].median / 1e9
            row.update({"layer": layer, "layer_gflops": round(lg, 1),
                        "layer_fraction_of_matmul": round(lg / mm_med, 3),
                        "layer_fraction_of_peak": round(lg / peak, 3)})
        out[name] = row
    return out

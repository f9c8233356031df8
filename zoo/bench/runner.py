"""``zoo bench``: every variant at its spec's workloads against its spec's baseline, then the system checks."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import textwrap
from pathlib import Path

import torch

import zoo
from zoo.bench import report, system
from zoo.benchspec import Workload
from zoo.bench.cases import SIZES, Case, bench_of, build, cases_for, workload
from zoo.bench.memory import measure as measure_memory
from zoo.bench.memory import measure_many as measure_memory_many
from zoo.bench.timing import interleaved, median_ci

__all__ = ["bench", "main", "default_json_path"]

PASSES = ("fwd", "fwd+bwd")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": device,
        "python": platform.python_version(),
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)(),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    try:
        info["load_average"] = [round(os.getloadavg()[0], 2)]
    except OSError:
        pass
    return info


def load_warning(machine: dict) -> str:
    """The load the run saw, and a warning when it was above one per core (else a plain line)."""
    loads, cores = machine.get("load_average") or [], machine.get("cores") or 1
    if not loads:
        return ""
    line = f"  load average {' -> '.join(f'{v:.2f}' for v in loads)} (start -> end) on {cores} cores"
    if max(loads) > cores:
        line += "\n" + textwrap.fill("WARNING: the machine was busy (load above one per core): timings and "
                                     "verdicts are unreliable; rerun on an idle machine, or with --threads 1",
                                     report.WIDTH, initial_indent="  ", subsequent_indent="  ")
    return line


def default_json_path(device: str, size: str) -> Path | None:
    """``benchmarks/results/<device>[-<size>].json`` when run from the repository, else None."""
    here = Path.cwd()
    for root in (here, *here.parents):
        if (root / "benchmarks").is_dir() and (root / "pyproject.toml").is_file():
            if "attention-zoo" in (root / "pyproject.toml").read_text(encoding="utf-8", errors="replace"):
                kind = "cuda" if device.startswith("cuda") else "cpu"
                suffix = "" if size == "full" else f"-{size}"
                return root / "benchmarks" / "results" / f"{kind}{suffix}.json"
    return None


def _close(a: torch.Tensor, b: torch.Tensor) -> tuple[float, bool]:
    diff = (a.float() - b.float()).abs().max().item()
    scale = max(b.float().abs().max().item(), 1.0)
    tol = 1e-4 if a.dtype in (torch.float32, torch.float64) else 3e-2
    return diff, diff <= tol * scale


def _plan(names: list[str], size: str, shapes: tuple[str, ...] | None) -> tuple[list[Case], list[str]]:
    plan, skipped = [], []
    for name in names:
        spec = zoo.get_variant(name)
        cases = cases_for(spec, size, shapes)
        if not cases:
            own = ", ".join(s.name for s in bench_of(spec).shapes)
            skipped.append(f"{spec.name}: none of its workloads ({own}) selected")
        plan.extend(cases)
    return plan, skipped


def _verdict(ratio: float, paired: list[float], target: float | None, ok: bool, decide: bool) -> bool | None:
    """``met``: at full size the median ratio against the target; in a smoke run only
    where the 95 % interval of the paired ratios lies on one side of it, else ``None``."""
    if not ok:
        return False
    if target is None:
        return None
    if decide:
        return bool(ratio <= target)
    ci = median_ci(paired)
    if ci is None:
        return None
    if ci[1] <= target:
        return True
    if ci[0] > target:
        return False
    return None


def _time_case(case: Case, dtype_name: str, passes, *, repeat, budget_s, device, decide, prog) -> list[dict]:
    dtype = getattr(torch, dtype_name)
    bench = case.bench
    what = f"{case.spec.name} {case.shape} {dtype_name}"
    prog.show(what, "building")
    module, inputs = build(case.spec, case.workload, dtype=dtype, device=device)
    bare_fn = bench.baseline
    diff, ok = 0.0, True
    module.eval()
    if bare_fn is not None:
        with torch.no_grad():
            diff, ok = _close(module(**inputs), bare_fn(module, **inputs))
    compare = None
    compare_name = _system_variant() if bench.compare is True else bench.compare
    if compare_name and compare_name in zoo.list_variants():
        try:  # context only: a comparison that cannot be built is left out
            compare, cinputs = build(zoo.get_variant(compare_name), case.workload, dtype=dtype, device=device)
        except Exception:  # noqa: BLE001
            compare = None
    params = list(module.parameters())
    rows = []
    for p in passes:
        module.train(p != "fwd")
        fns = {"zoo": workload(module, params, inputs, p)}
        if bare_fn is not None:
            fns["bare"] = workload(lambda m=module, f=bare_fn, **kw: f(m, **kw), params, inputs, p)
        s = interleaved(fns, repeat=repeat, warmup=1, device=device, budget_s=budget_s, max_repeat=4 * repeat,
                        on_round=lambda i, n, w=f"{what} {p}": prog.show(w, f"round {i}/{n}"))
        row = {"variant": case.spec.name, "shape": case.shape, "dtype": dtype_name, "pass": p,
               "zoo_ms": round(s["zoo"].ms, 3), "zoo_iqr_ms": [round(v, 3) for v in s["zoo"].iqr_ms()],
               "baseline": bench.baseline_label if bare_fn is not None else None,
               "baseline_ms": None, "ratio": None, "target": bench.effective_target, "met": None,
               "rounds": len(s["zoo"].seconds), "calls_per_round": s["zoo"].number}
        if bare_fn is not None:
            ratio = s["zoo"].median / s["bare"].median
            paired = [a / b for a, b in zip(s["zoo"].seconds, s["bare"].seconds)]
            ci = median_ci(paired)
            row.update({
                "baseline_ms": round(s["bare"].ms, 3), "ratio": round(ratio, 3),
                "baseline_iqr_ms": [round(v, 3) for v in s["bare"].iqr_ms()],
                "paired_ratio": round(statistics.median(paired), 3),
                "paired_ratio_ci95": [round(v, 3) for v in ci] if ci else None,
                "met": _verdict(ratio, paired, bench.effective_target, ok, decide),
                "max_abs_diff": diff,
            })
            if not ok:
                row["mismatch"] = True
        if compare is not None:
            compare.train(p != "fwd")
            cs = interleaved({"c": workload(compare, list(compare.parameters()), cinputs, p)},
                             repeat=max(3, repeat // 3), warmup=1, device=device)
            row["compare"] = {"variant": compare_name, "ms": round(cs["c"].ms, 3),
                              "ratio": round(s["zoo"].median / cs["c"].median, 4)}
        rows.append(row)
    prog.step(what)
    return rows


def _system_variant() -> str | None:
    """The first registered variant whose bench says it stands for "an attention layer"."""
    for n in zoo.list_variants():
        b = zoo.get_variant(n).bench
        if b is not None and b.system:
            return n
    return None


def bench(
    names: list[str] | None = None,
    *,
    size: str = "full",
    dtypes: tuple[str, ...] = ("float32", "bfloat16"),
    shapes: tuple[str, ...] | None = None,
    passes: tuple[str, ...] = PASSES,
    repeat: int = 21,
    budget_s: float = 4.0,
    memory: bool = True,
    isolate_memory: bool = True,
    system_checks: bool = True,
    device: str = "cpu",
    threads: int | None = None,
    progress: bool = True,
) -> dict:
    """Run the benchmark and return the JSON document (see :mod:`zoo.bench.report`).

    Every variant is timed at the workloads of its :class:`zoo.BenchSpec` (``shapes``
    limits them by name), against the spec's baseline where it has one. Every
    measurement takes at least ``repeat`` interleaved rounds, more (up to ``4 * repeat``)
    where a round is short enough to fit ``budget_s`` seconds. Verdicts: at
    ``size="full"`` the median ratio against the target; at other sizes (smoke runs)
    only where a 95 % interval over the paired rounds settles it.
    """
    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("zoo bench: --device cuda requested but torch.cuda.is_available() is False")
    names = [zoo.get_variant(n).name for n in names] if names else zoo.list_variants()
    plan, skipped = _plan(names, size, shapes)
    decide = size == "full"
    steps = len(plan) * len(dtypes) * (2 if memory else 1)
    sysname = _system_variant() if system_checks else None
    sys_steps = 4 if system_checks else 0
    prog = report.Progress(steps + sys_steps, enabled=progress)
    machine = machine_info(device)
    results, mem_rows, mem_jobs, errors = [], [], [], []
    for dtype_name in dtypes:
        for case in list(plan):
            try:
                results += _time_case(case, dtype_name, passes, repeat=repeat, budget_s=budget_s, device=device,
                                      decide=decide, prog=prog)
            except Exception as exc:  # noqa: BLE001 - one variant's workload must not stop the run
                # a ValueError is the variant refusing the workload's inputs (skipped, saying why);
                # anything else is a crash, and fails the run
                (skipped if isinstance(exc, ValueError) else errors).append(
                    f"{case.spec.name} {case.shape} {dtype_name}: {type(exc).__name__}: {exc}")
                plan.remove(case)
                continue
            if memory:
                impls = ("zoo", "bare") if case.bench.baseline is not None else ("zoo",)
                for impl in impls:
                    mem_jobs.append(((case.spec.name, case.shape, dtype_name, impl), {
                        "variant": case.spec.name, "impl": impl, "shape": case.shape, "size": size,
                        "dtype": dtype_name, "passes": list(passes), "device": device, "threads": threads}))
    if mem_jobs:
        got: dict = {}
        if isolate_memory:
            for meta, job in mem_jobs:
                prog.show(f"memory {' '.join(meta)}", "fresh process")
                got[meta] = measure_memory(job)
                if meta[3] == "zoo":
                    prog.step()
        else:
            prog.show(f"memory: {len(mem_jobs)} measurements", "one fresh process")
            for (meta, _), res in zip(mem_jobs, measure_memory_many([j for _, j in mem_jobs])):
                got[meta] = res
            prog.done += sum(1 for m, _ in mem_jobs if m[3] == "zoo")
        for (name, key, dtype_name, impl), _ in mem_jobs:
            if impl != "zoo":
                continue
            for p in passes:
                z = got[(name, key, dtype_name, "zoo")][p]
                b = got.get((name, key, dtype_name, "bare"), {}).get(p)
                mem_rows.append({
                    "variant": name, "shape": key, "dtype": dtype_name, "pass": p, "zoo_mib": round(z, 1),
                    "baseline_mib": None if b is None else round(b, 1),
                    "ratio": round(z / b, 3) if b is not None and b > 1.0 else None,
                })
    sysres: dict = {}
    if system_checks:
        prog.show("system: dispatch overhead")
        dvars = list(dict.fromkeys(c.spec.name for c in plan if c.bench.baseline is not None))
        sysres["dispatch"] = [system.dispatch_overhead(n, device=device, judge=decide) for n in dvars]
        prog.step()
        prog.show("system: import time")
        sysres["import"] = system.import_time(repeat=5 if size == "full" else 2, judge=decide)
        prog.step()
        if memory and sysname is not None:
            lengths = {"full": (4096, 16384), "quick": (512, 2048), "tiny": (128, 512)}[size]
            sysres["memory_scaling"] = system.memory_scaling(
                lengths, device=device, variant=sysname, threads=threads, judge=decide,
                progress=lambda m: prog.show("system: " + m))
        prog.step()
        prog.show("system: GFLOP/s")
        glen = {"full": 4096, "quick": 512, "tiny": 256}[size]
        gmm = {"full": 2048, "quick": 512, "tiny": 256}[size]
        sysres["gflops"] = system.gflops(dtypes=dtypes, length=glen, matmul_n=gmm,
                                         repeat=max(5, repeat) if decide else 3,
                                         device=device, layer=sysname)
        prog.step()
    prog.close()
    try:
        machine["load_average"].append(round(os.getloadavg()[0], 2))
    except (OSError, KeyError):
        pass
    checks = [r["met"] for r in results] + [d["met"] for d in sysres.get("dispatch", [])]
    checks += [sysres[k]["met"] for k in ("import", "memory_scaling") if k in sysres]
    return {
        "schema": report.SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine,
        "torch": torch.__version__,
        "settings": {"size": size, "repeat": repeat, "budget_s": budget_s, "isolate_memory": isolate_memory,
                     "dtypes": list(dtypes), "shapes": sorted({c.shape for c in plan}),
                     "passes": list(passes), "memory": memory, "variants": names, "verdicts": decide},
        "shapes": {f"{c.spec.name}/{c.shape}": c.workload.as_dict() for c in plan},
        "results": results,
        "memory": mem_rows,
        "system": sysres,
        "skipped": skipped,
        "errors": errors,
        "all_met": bool(all(c is not False for c in checks)),
        "verdicts": sum(c is not None for c in checks),
    }


def _usage(message: str) -> SystemExit:
    import sys

    print(f"zoo bench: {message}", file=sys.stderr)
    return SystemExit(2)


def main(args, json_out=None) -> int:
    """``zoo bench``'s work; ``json_out`` is the stream for ``--json -`` (the real stdout)."""
    dtypes = tuple(d.strip() for d in args.dtype.split(",") if d.strip()) if args.dtype else None
    for d in dtypes or ():
        if d not in ("float32", "bfloat16", "float16", "float64"):
            raise _usage(f"unknown dtype {d!r}; use float32, bfloat16, float16 or float64")
    size = "quick" if args.quick and args.size == "full" else args.size
    if size not in SIZES:
        raise _usage(f"unknown size {size!r}; use one of {', '.join(SIZES)}")
    # a smoke run measures one dtype unless told otherwise: it must stay under a minute
    dtypes = dtypes or (("float32", "bfloat16") if size == "full" else ("float32",))
    names = [zoo.get_variant(n).name for n in args.names] if args.names else zoo.list_variants()
    shapes = tuple(s.strip() for s in args.shapes.split(",") if s.strip()) if args.shapes else None
    if shapes:
        known = {s.name for n in names for s in bench_of(zoo.get_variant(n)).shapes}
        unknown = [s for s in shapes if s not in known]
        if unknown:
            raise _usage(f"unknown workload(s) {', '.join(map(repr, unknown))}; "
                         f"the selected variants have: {', '.join(sorted(known))}")
    for flag in ("repeat", "threads"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise _usage(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    repeat = args.repeat or {"full": 21, "quick": 6, "tiny": 3}[size]
    budget = args.budget if args.budget is not None else {"full": 4.0, "quick": 0.25, "tiny": 0.1}[size]
    doc = bench(names, size=size, dtypes=dtypes, shapes=shapes, repeat=repeat, budget_s=budget,
                memory=not args.no_memory, isolate_memory=size == "full",
                system_checks=args.system or not (args.no_system or args.names),
                device=args.device, threads=args.threads, progress=not args.no_progress)
    to_stdout = args.json == "-"  # then the command line sends every print to stderr
    print(textwrap.fill(f"zoo bench: {doc['machine']['cpu_model']}, {doc['machine']['threads']} threads, "
                        f"torch {doc['torch']}, size={size}, at least {repeat} interleaved rounds, medians",
                        report.WIDTH, subsequent_indent="  "))
    busy = load_warning(doc["machine"])
    if busy:
        print(busy)
    for k, v in doc["shapes"].items():
        w = Workload(v["batch"], v["query_len"], v["context_len"], v["config"])
        print(f"  {k}: {w.describe()}")
    print()
    if doc["results"]:
        print(report.format_results(doc["results"]))
        print()
    if doc["memory"]:
        print("peak memory of one call above the process baseline")
        print(report.format_memory(doc["memory"]))
        print()
    if doc["system"]:
        print(report.format_system(doc["system"]))
        print()
    for s_ in doc["skipped"]:
        print(f"skipped: {s_}")
    for e in doc["errors"]:
        print(f"FAILED: {e}")
    whole = not args.names and not args.shapes and not args.dtype  # the run the committed results hold
    if to_stdout:
        json_out.write(json.dumps(doc, indent=2) + "\n")
        json_out.flush()
    else:
        path = Path(args.json) if args.json else (default_json_path(args.device, size) if whole else None)
        if path is not None:
            report.write_json(doc, path)
            print(f"wrote {path}")
        elif not args.json:
            print("a partial run (names, --shapes or --dtype given): no results file written "
                  "(the committed ones hold whole runs); pass --json PATH to keep it")
    if size != "full":
        print(textwrap.fill(
            f"smoke run (--size {size}): short calls on a shared machine are noise, so a row gets a "
            f"verdict only where the 95% interval of its paired per-round ratios lies wholly on one "
            f"side of the target ({doc['verdicts']} did); the full run (`zoo bench`) judges the targets.",
            report.WIDTH))
        if not doc["all_met"]:
            print("a smoke-run interval lies wholly above a target (see MISS above)")
    else:
        print("all targets met" if doc["all_met"] else "SOME TARGETS MISSED")
    if doc["errors"]:
        print(f"zoo bench: {len(doc['errors'])} workload(s) failed (see FAILED above)")
        return 1
    return 0 if doc["all_met"] or not args.strict else 1

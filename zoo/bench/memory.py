"""Peak memory of one call above the process's baseline, each measured in a fresh process.

CPU: the worker runs in its own Python process with glibc told to serve every
allocation above 128 KiB by ``mmap`` (``MALLOC_MMAP_THRESHOLD_``), so freed tensors
go back to the kernel at once and the resident set tracks live tensors. For each
pass it calls the workload once (warm-up: thread pools, kernel caches), resets the
kernel's high-water mark (``/proc/self/clear_refs``), reads the resident set
(baseline: the weights, the inputs, the runtime), calls the workload again and
reports ``VmHWM - baseline``. Where the high-water mark cannot be reset, every pass
gets its own process and ``ru_maxrss`` deltas are used instead.

CUDA: ``torch.cuda.max_memory_allocated()`` above ``memory_allocated()`` after a reset.

Run as a module, the worker takes one JSON argument and prints one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

__all__ = ["measure", "measure_many", "hwm_resettable"]

MiB = 1024 * 1024
_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def hwm_resettable() -> bool:
    """Whether this kernel lets a process reset its peak resident set."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_kib("VmHWM")
        return True
    except OSError:
        return False
    except KeyError:
        return False


def measure(job: dict[str, Any], *, timeout: float = 600.0) -> dict[str, float]:
    """Measure ``job`` in fresh processes; returns ``{pass: MiB above baseline}``.

    ``job``: ``{"variant", "impl": "zoo"|"bare", "dtype", "passes": [...], "device",
    "threads"}`` and either ``"shape"`` (a workload name of the variant's bench) with
    ``"size"``, or ``"workload"`` (:meth:`zoo.Workload.as_dict`).
    """
    if job.get("device", "cpu") == "cpu" and not hwm_resettable():
        out: dict[str, float] = {}
        for p in job["passes"]:
            out.update(_spawn({**job, "passes": [p], "resettable": False}, timeout))
        return out
    return _spawn({**job, "resettable": True}, timeout)


def measure_many(jobs: list[dict[str, Any]], *, timeout: float = 600.0) -> list[dict[str, float]]:
    """Measure several jobs one after the other in *one* fresh process (``--quick``).

    Cheaper than :func:`measure` by a process start per job. Every pass still gets its
    own warm-up and high-water-mark reset, and with ``MALLOC_MMAP_THRESHOLD_`` freed
    tensors leave the resident set, so a job does not see the previous job's memory;
    where the mark cannot be reset this falls back to :func:`measure` per job.
    """
    if not jobs:
        return []
    if any(j.get("device", "cpu") == "cpu" for j in jobs) and not hwm_resettable():
        return [measure(j, timeout=timeout) for j in jobs]
    return _spawn({"jobs": [{**j, "resettable": True} for j in jobs]}, timeout)


def _spawn(job: dict[str, Any], timeout: float) -> Any:
    env = {**os.environ, **_ENV}
    proc = subprocess.run(
        [sys.executable, "-m", "zoo.bench.memory", json.dumps(job)],
        capture_output=True, text=True, env=env, timeout=timeout,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError("memory worker failed: " + " | ".join(tail))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _worker(job: dict[str, Any]) -> dict[str, float]:
    import resource

    import torch

    import zoo
    from zoo.bench.cases import bench_of, build, workload
    from zoo.benchspec import Workload

    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    device = job.get("device", "cpu")
    dtype = getattr(torch, job["dtype"])
    spec = zoo.get_variant(job["variant"])
    bench = bench_of(spec)
    if "workload" in job:
        wl = Workload(**job["workload"])
    else:
        wl = next(s for s in bench.shapes if s.name == job["shape"]).at(job["size"])
    module, inputs = build(spec, wl, dtype=dtype, device=device)
    if job["impl"] == "zoo":
        fn = module
    else:
        bare = bench.baseline

        def fn(**kw):
            return bare(module, **kw)

    params = list(module.parameters())
    out: dict[str, float] = {}
    for p in job["passes"]:
        if p == "fwd":
            module.eval()
        else:
            module.train()
        run = workload(fn, params, inputs, p)
        if device.startswith("cuda"):
            run()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            run()
            torch.cuda.synchronize()
            out[p] = (torch.cuda.max_memory_allocated() - base) / MiB
        elif job.get("resettable", True):
            run()
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            base = _status_kib("VmRSS")
            run()
            out[p] = (_status_kib("VmHWM") - base) / 1024
        else:  # one pass per process; no warm-up at full size (it would set the peak)
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            run()
            out[p] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
        del run
    return out


if __name__ == "__main__":
    _job = json.loads(sys.argv[1])
    if "jobs" in _job:
        print(json.dumps([_worker(j) for j in _job["jobs"]]))
    else:
        print(json.dumps(_worker(_job)))

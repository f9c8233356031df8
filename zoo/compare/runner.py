"""Train every variant on every task under one budget and collect ``zoo-compare/1`` rows.

Fairness is written down here, not promised: for a task, every variant (and the floor,
``"variant": "none"``) gets the same model around its layer, the same training batches
(the same generator seed), the same number of steps, the same learning-rate grid (the
best rate on a validation batch is kept) and the same seeds; the reported value is the
mean over seeds on a separate test batch, with its spread, the trainable parameter
count and the wall time of one training run.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from zoo.compare.adapt import fit_variant
from zoo.compare.task import Problem, Task

__all__ = ["Tier", "QUICK", "FULL", "SCHEMA", "FLOOR", "run_cell", "compare_rows"]

SCHEMA = "zoo-compare/1"
FLOOR = "none"


@dataclass(frozen=True)
class Tier:
    """The training budget shared by every variant of a run."""

    name: str
    steps: int
    batch: int
    lrs: tuple[float, ...]
    seeds: int
    eval_size: int


QUICK = Tier("quick", steps=200, batch=64, lrs=(3e-3, 1e-2), seeds=2, eval_size=512)
FULL = Tier("full", steps=1000, batch=128, lrs=(1e-3, 3e-3, 1e-2), seeds=3, eval_size=2048)


def _gen(*parts: int) -> torch.Generator:
    seed = 0
    for p in parts:
        seed = (seed * 1_000_003 + int(p)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def _to(batch: dict, device: str) -> dict:
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _train_once(problem: Problem, model: torch.nn.Module, tier: Tier, seed: int, lr: float | None,
                device: str) -> tuple[float, float, float]:
    """Train (unless the model has nothing to train); return (val, test, seconds)."""
    params = [p for p in model.parameters() if p.requires_grad]
    start = time.perf_counter()
    if params and lr is not None:
        opt = torch.optim.Adam(params, lr=lr)
        gen = _gen(seed, 1)  # the same training batches for every variant and rate
        model.train()
        for _ in range(tier.steps):
            batch = _to(problem.batch(gen, tier.batch, "train"), device)
            loss = problem.loss(model(batch), batch)
            if not torch.isfinite(loss):
                return math.nan, math.nan, time.perf_counter() - start
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - start
    model.eval()
    scores = []
    with torch.no_grad():
        for split, k in (("val", 2), ("test", 3)):
            batch = _to(problem.batch(_gen(seed, k), tier.eval_size, split), device)
            scores.append(float(problem.score(model(batch), batch)))
    return scores[0], scores[1], seconds


def _params(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters() if p.requires_grad)


def _row(name: str, task: Task, tier: Tier) -> dict[str, Any]:
    """A result row with nothing measured yet."""
    return {"variant": name, "task": task.name, "metric": task.metric, "value": None,
            "higher_is_better": bool(task.higher_is_better), "params": None, "layer_params": None,
            "seconds": None, "chance": task.chance, "tier": tier.name, "steps": tier.steps, "batch": tier.batch}


def run_cell(spec: Any, task: Task, problems: Sequence[tuple[int, Problem]], tier: Tier, *, device: str = "cpu",
             progress: Callable[[str], None] | None = None) -> dict:
    """One result row: ``spec`` (a VariantSpec, or ``None`` for the floor) on ``task``."""
    name = FLOOR if spec is None else spec.name
    row = _row(name, task, tier)
    runs: dict[float | None, list[tuple[int, float, float, float]]] = {}
    for seed, problem in problems:
        row["tokens"] = tier.steps * tier.batch * problem.query_len
        for lr in tier.lrs:
            if progress:
                progress(f"{task.name} · {name} · seed {seed} · lr {lr:g}")
            torch.manual_seed(seed)  # same initial task parameters for every variant
            cond = None
            if spec is not None:
                fit = fit_variant(spec, task, problem)
                if fit.reason:
                    row["reason"] = f"{name} cannot take the {task.name} task's inputs: {fit.reason}"
                    return row
                cond = fit.cond
            try:
                model = problem.model(cond).to(device)
                trainable = _params(model) > 0
                val, test, secs = _train_once(problem, model, tier, seed, lr if trainable else None, device)
            except Exception as exc:  # noqa: BLE001 - one broken variant or task must not take the others down
                row["reason"] = f"{name} failed on the {task.name} task: {type(exc).__name__}: {exc}"
                row["error"] = True
                return row
            row["params"], row["layer_params"] = _params(model), _params(cond)
            key = lr if trainable else None
            runs.setdefault(key, []).append((seed, val, test, secs))
            if not trainable:
                break  # nothing to train: the learning rate does not matter
    sign = 1.0 if task.higher_is_better else -1.0
    finite = {lr: r for lr, r in runs.items() if all(math.isfinite(v) for _, v, _, _ in r)}
    if not finite:
        row["reason"] = f"training diverged (non-finite loss) at every learning rate {list(tier.lrs)}"
        return row
    best = max(finite, key=lambda lr: sign * statistics.fmean(v for _, v, _, _ in finite[lr]))
    chosen = finite[best]
    tests = [t for _, _, t, _ in chosen]
    row.update(
        value=statistics.fmean(tests),
        spread=statistics.stdev(tests) if len(tests) > 1 else 0.0,
        per_seed={str(s): t for s, _, t, _ in chosen},
        lr=best,
        lr_grid={("none" if lr is None else f"{lr:g}"): statistics.fmean(v for _, v, _, _ in r) for lr, r in runs.items()},
        seconds=statistics.fmean(s for *_, s in chosen),
    )
    return row


def _floor(specs: Sequence[Any], task: Task, problems: Sequence[tuple[int, Problem]], tier: Tier, *,
           seed: int, device: str, progress: Callable[[str], None] | None) -> dict:
    """The floor's row: from the cache when this task, tier, seed and code ran it before;
    not trained at all when none of the named variants can take the task."""
    from zoo.compare.cache import floor_key, load_floor, store_floor

    if specs and all(fit_variant(spec, task, problems[0][1]).reason for spec in specs):
        return {**_row(FLOOR, task, tier), "reason": "not trained: none of the named variants can take this task's inputs"}
    key = floor_key(task, tier, seed, device)
    cached = load_floor(key)
    if cached is not None:
        if progress:
            progress(f"{task.name} · {FLOOR} · cached")
        return {**cached, "cached": True}
    row = run_cell(None, task, problems, tier, device=device, progress=progress)
    store_floor(key, row)
    return row


def compare_rows(specs: Sequence[Any], tasks: Sequence[Task], tier: Tier, *, seed: int = 0, device: str = "cpu",
                 progress: Callable[[int, int, str], None] | None = None) -> list[dict]:
    """Rows for every task x (floor + each spec), in that order."""
    total = len(tasks) * (len(specs) + 1)
    rows: list[dict] = []
    for task in tasks:
        try:
            problems = [(seed, task.build(seed, quick=tier.name == "quick"))]
            if not specs or any(not fit_variant(spec, task, problems[0][1]).reason for spec in specs):
                # the other seeds only where some named variant can take the task (a retrieval
                # task builds a database per seed; the floor is not trained for nobody)
                problems += [(s, task.build(s, quick=tier.name == "quick")) for s in range(seed + 1, seed + tier.seeds)]
        except Exception as exc:  # noqa: BLE001 - one broken task must not take the others down
            why = f"the {task.name} task could not be built: {type(exc).__name__}: {exc}"
            for spec in (None, *specs):
                rows.append({"variant": FLOOR if spec is None else spec.name, "task": task.name,
                             "metric": task.metric, "value": None, "higher_is_better": bool(task.higher_is_better),
                             "params": None, "seconds": None, "reason": why, "task_error": True})
            continue
        for spec in (None, *specs):
            done = len(rows)
            note = (lambda msg, _d=done: progress(_d, total, msg)) if progress else None
            if spec is None:
                rows.append(_floor(specs, task, problems, tier, seed=seed, device=device, progress=note))
            else:
                rows.append(run_cell(spec, task, problems, tier, device=device, progress=note))
    if progress:
        progress(total, total, "done")
    return rows

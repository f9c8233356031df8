"""Fit any registered variant into a task's model through its spec alone.

The layer is built with the task's ``layer_fields`` that the variant's config declares
(``query_dim``, ``context_dim``, ``heads``, ...). What inputs it takes is read from the
spec: ``make_inputs`` is called once on the built layer to see whether it takes a
``context`` and of which rank (3: a sequence ``(B, M, Dc)``; 5: retrieved neighbours
``(B, L, K, R, Dc)``), and ``capabilities.equal_lengths`` says whether ``M`` must equal
``N``. A variant that cannot take a task's inputs gets a reason instead of a layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import zoo
from zoo.compare.task import Conditioning, Problem, Task
from zoo.spec import VariantSpec

__all__ = ["Fit", "fit_variant", "layer_fields_for"]

_PROBE_N, _PROBE_M = 12, 7  # distinct lengths: a layer that ignores context_len shows it


@dataclass
class Fit:
    """The outcome of fitting a variant to a task: a conditioning module or a reason."""

    cond: Conditioning | None = None
    reason: str | None = None
    fields: dict | None = None


def layer_fields_for(spec: VariantSpec, task: Task) -> dict:
    """The task's ``layer_fields`` that ``spec.config`` declares (the others are dropped)."""
    declared = spec.config.model_fields
    return {k: v for k, v in task.layer_fields.items() if k in declared}


def _context_form(spec: VariantSpec, layer: torch.nn.Module) -> tuple[str, int | None]:
    """("none" | "sequence" | "aligned" | "neighbours" | "other:<why>", rank)."""
    n = _PROBE_N
    gen = torch.Generator().manual_seed(0)
    inputs = spec.make_inputs(layer, batch=1, query_len=n, context_len=_PROBE_M, generator=gen, dtype=torch.float32)
    extra = sorted(set(inputs) - {"x", "context", "context_mask"})
    if extra:
        return f"other:its inputs include {extra}, which no compare task provides", None
    ctx = inputs.get("context")
    if ctx is None:
        return "none", None
    if ctx.dim() == 5:
        return "neighbours", 5
    if ctx.dim() == 3:
        if spec.capabilities.equal_lengths or ctx.shape[1] == n:
            return "aligned", 3
        return "sequence", 3
    return f"other:its context has rank {ctx.dim()} (shape {tuple(ctx.shape)})", ctx.dim()


def fit_variant(spec: VariantSpec, task: Task, problem: Problem) -> Fit:
    """Build ``spec``'s layer for ``task`` and check that it can read ``problem``'s inputs."""
    fields = layer_fields_for(spec, task)
    try:
        layer = zoo.create(spec, **fields)
    except Exception as exc:  # noqa: BLE001 - a variant that cannot be built gets a null row
        return Fit(reason=f"cannot build the layer with {fields}: {type(exc).__name__}: {exc}", fields=fields)
    if int(getattr(layer.config, "query_dim", task.layer_fields["query_dim"])) != task.layer_fields["query_dim"]:
        return Fit(reason=f"its config has no query_dim field, so its width cannot be set to the task's "
                          f"{task.layer_fields['query_dim']}", fields=fields)
    try:
        form, _ = _context_form(spec, layer)
    except Exception as exc:  # noqa: BLE001
        return Fit(reason=f"make_inputs failed: {type(exc).__name__}: {exc}", fields=fields)
    n, m, task_form = problem.query_len, problem.context_len, problem.context_form
    if form.startswith("other:"):
        return Fit(reason=form[len("other:"):], fields=fields)
    if task_form == "neighbours" and form in ("sequence", "aligned"):
        return Fit(reason="its context is one sequence (B, M, Dc), but this task's context is neighbours "
                          "retrieved chunk by chunk (B, L, K, R, Dc); flattened into one sequence they "
                          "would show each position the neighbours of later chunks", fields=fields)
    if task_form == "sequence" and form == "neighbours":
        return Fit(reason="it reads retrieved neighbours (B, L, K, R, Dc), and this task's context is one "
                          f"sequence (B, {m}, Dc) with no chunks to retrieve for", fields=fields)
    if form == "aligned" and m != n:
        return Fit(reason=f"it needs context as long as x (aligned items), and this task has N={n} "
                          f"queries and M={m} context tokens", fields=fields)
    takes_mask = bool(spec.capabilities.masks)
    return Fit(cond=Conditioning(layer, takes_context=form != "none", takes_mask=takes_mask), fields=fields)

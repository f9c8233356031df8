"""Check family: what must not matter. Other batch elements, the order of orderless context
axes and of the queries. (A variant's own properties, such as RETRO's chunk causality, are
its laws.)"""

from __future__ import annotations

from typing import Any

from zoo.spec import VariantSpec

import torch
from torch import Tensor

from zoo.harness.table import harness_check
from zoo.harness.case import (EXACT, Case, CheckFailed, SkipCheck, _describe, _detached, _float_inputs, _run,
                              _shape, max_diff, scale)

__all__ = ["check_batch_independence", "check_context_order", "check_query_order"]


def _context_order_applies(spec: VariantSpec) -> str | None:
    if not spec.capabilities.context_order_invariant:
        return "capabilities.context_order_invariant is False"
    if not spec.capabilities.context_set_axes:
        return "capabilities.context_set_axes is empty"
    return None


def _query_order_applies(spec: VariantSpec) -> str | None:
    if not spec.capabilities.query_order_equivariant:
        return "capabilities.query_order_equivariant is False (the queries carry positions)"
    return None


def _batch_slice(inputs: dict[str, Any], b: int, batch: int) -> dict[str, Any]:
    return {k: (v[b:b + 1] if isinstance(v, Tensor) and v.ndim and v.shape[0] == batch else v)
            for k, v in inputs.items()}


@harness_check("batch-independence", "batch", "batch elements do not influence each other")
def check_batch_independence(case: Case) -> str:
    """Each batch element's output depends on that element's inputs only."""
    module = case.build(torch.float64)
    batch = 3
    for opts in (dict(mask="random"),) + ((dict(mask=None, self_attention=True),) if case.self_attention() else ()):
        inputs = case.inputs(module, batch=batch, query_len=7, context_len=5, **opts)
        with torch.no_grad():
            out = _run(module, inputs)
            for b in range(batch):
                alone = _run(module, _batch_slice(inputs, b, batch))
                diff = max_diff(out[b:b + 1], alone, f"batch element {b} in the batch vs alone")
                if not diff <= EXACT * scale(out):
                    raise CheckFailed(f"batch element {b} computed inside a batch of {batch} differs by "
                                      f"{diff:.3g} from computing it alone: the layer mixes information "
                                      f"across the batch ({_describe(inputs)})")
        g_inputs = _detached(inputs, grad=True)
        out = _run(module, g_inputs)
        out[0].sum().backward()
        for k in _float_inputs(g_inputs):
            g = g_inputs[k].grad
            if g is not None and g.shape[0] == batch and bool((g[1:] != 0).any()):
                raise CheckFailed(f"the output of batch element 0 has a gradient with respect to input "
                                  f"{k!r} of other batch elements: the layer mixes across the batch")
    return f"{batch} batch elements independent"


@harness_check("context-order", "c-ord", "permuting orderless context axes leaves the output unchanged",
               applies=_context_order_applies)
def check_context_order(case: Case) -> str:
    """Permuting context tokens (and their mask) along each orderless axis leaves the output unchanged."""
    module = case.build(torch.float64)
    inputs = case.inputs(module, batch=2, query_len=7, context_len=6, mask="random")
    ctx = inputs.get("context")
    if not isinstance(ctx, Tensor):
        raise SkipCheck("make_inputs gave no context tensor")
    with torch.no_grad():
        out = _run(module, inputs)
        for axis in case.caps.context_set_axes:
            if axis >= ctx.ndim - 1 or axis == 0:
                raise CheckFailed(f"capabilities.context_set_axes names axis {axis} but context has shape "
                                  f"{_shape(ctx)} (the batch axis 0 and the feature axis cannot be permuted)")
            size = ctx.shape[axis]
            perm = torch.randperm(size, generator=case.generator(axis))
            if size > 1 and bool((perm == torch.arange(size)).all()):
                perm = perm.roll(1)
            moved = dict(inputs)
            moved["context"] = ctx.index_select(axis, perm.to(ctx.device))
            if "context_mask" in inputs:
                moved["context_mask"] = inputs["context_mask"].index_select(axis, perm.to(ctx.device))
            out2 = _run(module, moved)
            diff = max_diff(out, out2, f"output before vs after permuting context axis {axis}")
            if not diff <= EXACT * scale(out):
                raise CheckFailed(f"permuting the context along axis {axis} (with its mask) changed the output "
                                  f"by {diff:.3g}; the variant declares that axis orderless "
                                  f"(capabilities.context_set_axes); if the context carries positions, set "
                                  f"context_order_invariant=False")
    return f"invariant along axes {case.caps.context_set_axes}"


@harness_check("query-order", "q-ord", "permuting queries permutes the output", applies=_query_order_applies)
def check_query_order(case: Case) -> str:
    """Permuting the queries permutes the output the same way (with the aligned context
    too, when equal_lengths)."""
    module = case.build(torch.float64)
    inputs = case.inputs(module, batch=2, query_len=7, context_len=5, mask="random")
    x = inputs["x"]
    perm = torch.randperm(x.shape[1], generator=case.generator(3)).roll(1).to(x.device)
    moved = dict(inputs)
    moved["x"] = x[:, perm]
    if case.caps.equal_lengths:
        for k in ("context", "context_mask"):
            if isinstance(inputs.get(k), Tensor):
                moved[k] = inputs[k][:, perm]
    with torch.no_grad():
        out = _run(module, inputs)
        out2 = _run(module, moved)
    diff = max_diff(out[:, perm], out2, "permuted output vs output of permuted queries")
    if not diff <= EXACT * scale(out):
        both = " (and the aligned context)" if case.caps.equal_lengths else ""
        raise CheckFailed(f"permuting the queries{both} did not permute the output the same way (error "
                          f"{diff:.3g}): the layer depends on query positions; if it should, set "
                          f"query_order_equivariant=False")
    return "equivariant"

"""Check family: what must not matter. Other batch elements, the order of orderless context
axes and of the queries, the context of chunks a position has not finished."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from zoo.harness.case import (EXACT, Case, CheckFailed, SkipCheck, _describe, _detached, _float_inputs, _run,
                              _shape, max_diff, scale)

__all__ = ["check_batch_independence", "check_context_order", "check_query_order", "check_chunk_causality"]


def _batch_slice(inputs: dict[str, Any], b: int, batch: int) -> dict[str, Any]:
    return {k: (v[b:b + 1] if isinstance(v, Tensor) and v.ndim and v.shape[0] == batch else v)
            for k, v in inputs.items()}


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


def _chunk_size(case: Case, module: torch.nn.Module) -> int:
    """The chunk length m, found from ``make_inputs``: the shortest ``x`` that gets one chunk
    (context axis 1 has length ``N // m``)."""
    for q in range(1, 513):
        inputs = case.spec.make_inputs(module, batch=1, query_len=q, context_len=4, generator=case.generator(q),
                                       dtype=torch.float64)
        ctx = inputs.get("context")
        if not isinstance(ctx, Tensor) or ctx.ndim < 3:
            raise CheckFailed("capabilities.chunk_causal is True but make_inputs gives no context with a "
                              "chunk axis 1 (expected shape (B, L, ..., Dc) with L = N // chunk_size)")
        if ctx.shape[1] >= 1:
            return q
    raise CheckFailed("capabilities.chunk_causal is True but make_inputs gives no chunk (context axis 1 stays "
                      "empty) for any query length up to 512")


def check_chunk_causality(case: Case) -> str:
    """Chunk-causal variants (RETRO): perturbing the context of chunk u (context axis 1)
    changes no position p < (u+1)*m - 1, m the chunk length: a position only ever sees
    the context of chunks it has completely read."""
    module = case.build(torch.float64)
    m = _chunk_size(case, module)
    n = 3 * m + max(1, m // 2)  # three complete chunks and a remainder
    inputs = case.inputs(module, batch=2, query_len=n, context_len=4, mask=None)
    ctx = inputs["context"]
    with torch.no_grad():
        out = _run(module, inputs)
        for u in range(ctx.shape[1]):
            changed = ctx.clone()
            changed[:, u] += torch.randn(changed[:, u].shape, generator=case.generator(100 + u),
                                         dtype=ctx.dtype).to(ctx.device) * 10
            out2 = _run(module, {**inputs, "context": changed})
            max_diff(out, out2, f"output before vs after changing the context of chunk {u}")  # finite
            per_pos = (out2 - out).abs().amax(dim=(0, 2))
            first = (u + 1) * m - 1
            leak = per_pos[:first]
            if leak.numel() and leak.max().item() > EXACT * scale(out):
                p = int(torch.nonzero(leak > EXACT * scale(out))[0])
                raise CheckFailed(f"changing the context of chunk {u} (context[:, {u}]) changed position {p}, "
                                  f"before {first} = (u+1)*chunk_size - 1 with chunk_size {m}: a position "
                                  f"sees the context of a chunk it has not finished (N={n}, "
                                  f"{_describe(inputs)})")
    return f"causal over {ctx.shape[1]} chunks of {m}"

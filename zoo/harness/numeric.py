"""Check family: values. Shapes, the float64 oracle (forward and gradients), masks and
fully masked rows."""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from zoo.harness.table import harness_check
from zoo.harness.case import (DTYPES, EXACT, Case, CheckFailed, SkipCheck, _describe, _detached, _float_inputs,
                              _forward_cases, _needs_masks, _needs_reference, _reference, _run, _shape, compare,
                              max_diff, scale)

__all__ = ["check_shape", "check_oracle_forward", "check_oracle_grad", "check_mask", "check_masked_rows"]


def _width_overrides(case: Case) -> list[dict]:
    """Extra widths for the shape check: a context wider than the queries, and wider queries."""
    out = []
    qd = case.fields.get("query_dim", case.spec.config.model_fields.get("query_dim") and
                        case.spec.config.model_fields["query_dim"].get_default())
    if isinstance(qd, int):
        if case.has_field("context_dim"):
            out.append({"context_dim": qd + 5})
        out.append({"query_dim": qd + 3})
    return out


@harness_check("shape", "shape", "output has x's shape, dtype and device over batch sizes, lengths and widths")
def check_shape(case: Case) -> str:
    """Output has x's shape, dtype and device over batch sizes, lengths, widths and dtypes."""
    from pydantic import ValidationError

    shapes = [(1, 1, 1), (3, 7, 5), (2, 33, 40), (2, 1, 9), (1, 8, 1)]  # (B, N, M): 1, odd, long
    builds = [(dname, {}) for dname in case.dtypes]
    builds += [(case.dtypes[0], w) for w in _width_overrides(case)]
    n = 0
    for dname, widths in builds:
        dtype = DTYPES[dname]
        try:
            module = case.build(dtype, **widths)
        except ValidationError:
            continue  # the config refuses these widths (e.g. a divisibility rule): nothing to check
        runs = [(shape, dict(mask="random")) for shape in (shapes if not widths else shapes[:3])]
        if not widths:
            runs += [(shape, dict(mask=None)) for shape in shapes[:2]]
            if case.self_attention():
                runs += [(shape, dict(mask=None, self_attention=True)) for shape in shapes[:3]]
        for (b, q, c), opts in runs:
            inputs = case.inputs(module, batch=b, query_len=q, context_len=c, dtype=dtype, **opts)
            with torch.no_grad():
                out = _run(module, inputs, f"forward in {dname}" + (f" with {widths}" if widths else ""))
            x = inputs["x"]
            where = f"for {_describe(inputs)} in {dname}" + (f" with {widths}" if widths else "")
            if tuple(out.shape) != tuple(x.shape):
                raise CheckFailed(f"output has shape {_shape(out)} but must have x's shape {_shape(x)} {where}")
            if out.dtype != x.dtype:
                raise CheckFailed(f"output has dtype {out.dtype} but x has {x.dtype} {where}")
            if out.device != x.device:
                raise CheckFailed(f"output is on {out.device} but x is on {x.device} {where}")
            n += 1
    return f"{n} input shapes"


@harness_check("oracle-forward", "fwd", "forward equals the float64 naive oracle (float32, float64, bfloat16)",
               applies=_needs_reference)
def check_oracle_forward(case: Case) -> str:
    """The output equals the float64 naive oracle, per dtype."""
    worst = []
    for dname in case.dtypes:
        dtype = DTYPES[dname]
        module = case.build(dtype)
        oracle_module = copy.deepcopy(module).to(torch.float64)
        atol, rtol = case.tol(dname)
        for desc, opts in _forward_cases(case):
            for q, c in ((7, 5), (1, 11)):
                inputs = case.inputs(module, batch=2, query_len=q, context_len=c, dtype=dtype, **opts)
                with torch.no_grad():
                    out = _run(module, inputs, f"forward in {dname}")
                    ref = _reference(case, oracle_module, _detached(inputs, torch.float64))
                compare(out, ref, atol, rtol, f"{dname} forward {desc} ({_describe(inputs)}) vs the float64 oracle")
        worst.append(dname)
    return "matches the oracle in " + ", ".join(worst)


@harness_check("oracle-grad", "grad", "input and parameter gradients equal the oracle's", applies=_needs_reference)
def check_oracle_grad(case: Case) -> str:
    """Input and parameter gradients equal the float64 oracle's (float32, float64)."""
    dnames = [d for d in case.dtypes if d != "bfloat16"] or ["float64"]
    for dname in dnames:
        dtype = DTYPES[dname]
        module = case.build(dtype)
        oracle_module = copy.deepcopy(module).to(torch.float64)
        atol, rtol = case.tol(dname)
        atol, rtol = atol * 10, rtol * 10  # gradients sum over more terms than outputs
        base = case.inputs(module, batch=2, query_len=7, context_len=5, dtype=dtype, mask="random")
        inputs = _detached(base, grad=True)
        module.zero_grad(set_to_none=True)
        out = _run(module, inputs, f"forward in {dname}")
        cot = torch.randn(out.shape, generator=case.generator(77), dtype=torch.float64)
        try:
            (out * cot.to(out.dtype).to(out.device)).sum().backward()
        except RuntimeError as exc:
            raise CheckFailed(f"backward through the layer failed in {dname}: {exc}") from exc
        ref_inputs = _detached(base, torch.float64, grad=True)
        oracle_module.zero_grad(set_to_none=True)
        ref = _reference(case, oracle_module, ref_inputs)
        (ref * cot.to(ref.device)).sum().backward()
        for k in _float_inputs(inputs):
            g, rg = inputs[k].grad, ref_inputs[k].grad
            _compare_grad(g, rg, atol, rtol, f"{dname} gradient of input {k!r}")
        ref_params = dict(oracle_module.named_parameters())
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            _compare_grad(p.grad, ref_params[name].grad, atol, rtol, f"{dname} gradient of parameter {name!r}")
    return "gradients match the oracle in " + ", ".join(dnames)


def _compare_grad(g: Tensor | None, rg: Tensor | None, atol: float, rtol: float, what: str) -> None:
    ref_nonzero = rg is not None and bool((rg != 0).any())
    if g is None or not bool((g != 0).any()):
        if ref_nonzero:
            state = "no gradient (None)" if g is None else "an all-zero gradient"
            raise CheckFailed(f"{what}: the layer gives {state} but the oracle's is nonzero "
                              f"(max {rg.abs().max().item():.3g}); is it detached, used under "
                              f"torch.no_grad(), or not used at all?")
        return
    if rg is None:
        rg = torch.zeros_like(g, dtype=torch.float64)
    compare(g, rg, atol, rtol, what)


@harness_check("mask", "mask", "masked context elements have no influence", applies=_needs_masks)
def check_mask(case: Case) -> str:
    """Masked context elements have no influence (value and gradient); an all-True mask
    equals no mask."""
    module = case.build(torch.float64)
    inputs = case.inputs(module, batch=3, query_len=7, context_len=6, mask="random")
    if "context_mask" not in inputs:
        raise SkipCheck("make_inputs gave no context tensor to mask")
    cm = inputs["context_mask"]
    if bool(cm.all()):
        raise SkipCheck("the random mask masked nothing")
    with torch.no_grad():
        out = _run(module, inputs)
        changed = dict(inputs)
        noise = torch.randn(inputs["context"].shape, generator=case.generator(5), dtype=torch.float64) * 10
        hidden = (~cm).unsqueeze(-1).to(inputs["context"].device)
        changed["context"] = torch.where(hidden, inputs["context"] + noise.to(hidden.device), inputs["context"])
        out2 = _run(module, changed)
    diff = max_diff(out, out2, "output before vs after changing masked context elements")
    if not diff <= EXACT * scale(out):
        raise CheckFailed(f"changing only masked context elements (context_mask False) changed the output "
                          f"by {diff:.3g}: the mask is ignored or inverted ({_describe(inputs)})")
    # gradient: masked elements get exactly zero gradient
    g_inputs = _detached(inputs, grad=True)
    out = _run(module, g_inputs)
    out.sum().backward()
    grad = g_inputs["context"].grad
    if grad is not None:
        leak = (grad * hidden).abs().max().item()
        if not leak <= EXACT:  # NaN fails too
            raise CheckFailed(f"masked context elements receive gradient {leak:.3g}; they must receive none")
    # an all-True mask is the same as no mask
    full = dict(inputs)
    full["context_mask"] = torch.ones_like(cm)
    no_mask = {k: v for k, v in inputs.items() if k != "context_mask"}
    with torch.no_grad():
        a, b = _run(module, full), _run(module, no_mask)
    compare(a, b, EXACT, EXACT, "an all-True context_mask vs context_mask=None")
    return f"{int((~cm).sum())} masked elements have no influence"


def _padding_applies(spec) -> str | None:
    why = _needs_masks(spec)
    if why:
        return why
    if spec.capabilities.equal_lengths:
        return "capabilities.equal_lengths is True (the context cannot grow apart from x)"
    if not spec.capabilities.context_set_axes:
        return "capabilities.context_set_axes is empty (no axis along which padding can be appended)"
    return None


@harness_check("masked-padding", "pad", "appending masked context positions changes nothing",
               applies=_padding_applies)
def check_masked_padding(case: Case) -> str:
    """Appending context positions that the mask hides (padding) leaves the output unchanged:
    a layer may not count, normalise by or otherwise see how much padding a batch carries."""
    module = case.build(torch.float64)
    inputs = case.inputs(module, batch=2, query_len=7, context_len=5, mask="random")
    ctx, cm = inputs.get("context"), inputs.get("context_mask")
    if not isinstance(ctx, Tensor) or cm is None:
        raise SkipCheck("make_inputs gave no context tensor to mask")
    axes = case.caps.context_set_axes
    with torch.no_grad():
        out = _run(module, inputs)
        for axis in axes:
            if axis == 0 or axis >= ctx.ndim - 1:
                raise CheckFailed(f"capabilities.context_set_axes names axis {axis} but context has shape "
                                  f"{tuple(ctx.shape)}")
            extra = list(ctx.shape)
            extra[axis] = 4
            pad = torch.randn(extra, generator=case.generator(11), dtype=ctx.dtype).to(ctx.device) * 10
            padded = dict(inputs, context=torch.cat([ctx, pad], dim=axis),
                          context_mask=torch.cat([cm, cm.new_zeros(extra[:-1])], dim=axis))
            diff = max_diff(_run(module, padded), out, f"output with 4 masked positions appended on axis {axis}")
            if not diff <= EXACT * scale(out):
                raise CheckFailed(f"appending 4 masked context positions along axis {axis} changed the output "
                                  f"by {diff:.3g}: the layer sees padding (e.g. it normalises by the context "
                                  f"length counting masked positions) ({_describe(inputs)})")
    return f"4 masked positions appended along context axes {list(axes)} change nothing"


@harness_check("masked-rows", "rows", "fully masked rows are finite, context-free, zero attention term",
               applies=_needs_masks)
def check_masked_rows(case: Case) -> str:
    """A batch element whose context is fully masked gives finite output and gradients,
    does not depend on its context, and matches the oracle (zero attention term)."""
    for dname in case.dtypes:
        dtype = DTYPES[dname]
        module = case.build(dtype)
        inputs = case.inputs(module, batch=2, query_len=7, context_len=5, dtype=dtype, mask="empty-first")
        if "context_mask" not in inputs:
            raise SkipCheck("make_inputs gave no context tensor to mask")
        g_inputs = _detached(inputs, grad=True)
        out = _run(module, g_inputs, f"forward in {dname} with batch element 0 fully masked")
        if not bool(torch.isfinite(out).all()):
            bad = "batch element 0 (fully masked)" if not bool(torch.isfinite(out[0]).all()) else "other elements"
            raise CheckFailed(f"{dname}: non-finite output (NaN/inf) in {bad} when batch element 0's "
                              f"context is fully masked; a query with nothing to attend must get an "
                              f"attention term of exactly zero")
        module.zero_grad(set_to_none=True)
        out.sum().backward()
        for k in _float_inputs(g_inputs):
            g = g_inputs[k].grad
            if g is not None and not bool(torch.isfinite(g).all()):
                raise CheckFailed(f"{dname}: non-finite gradient of input {k!r} with a fully masked row")
        for name, p in module.named_parameters():
            if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                raise CheckFailed(f"{dname}: non-finite gradient of parameter {name!r} with a fully masked row")
    module = case.build(torch.float64)
    inputs = case.inputs(module, batch=2, query_len=7, context_len=5, mask="empty-first")
    with torch.no_grad():
        out = _run(module, inputs)
        changed = dict(inputs)
        ctx = inputs["context"].clone()
        ctx[0] = torch.randn(ctx[0].shape, generator=case.generator(9), dtype=ctx.dtype) * 10
        changed["context"] = ctx
        out2 = _run(module, changed)
    diff = max_diff(out[0], out2[0], "fully masked batch element before vs after changing its context")
    if not diff <= EXACT * scale(out):
        raise CheckFailed(f"the output of a fully masked batch element still depends on its context "
                          f"(changed by {diff:.3g}); with nothing to attend the attention term must be zero")
    if case.spec.reference is not None:
        with torch.no_grad():
            ref = _reference(case, module, _detached(inputs))
        atol, rtol = case.tol("float64")
        compare(out, ref, atol, rtol, "float64 output with batch element 0 fully masked vs the oracle")
    return "fully masked rows are finite and context-free"

"""The checks: each a function of one :class:`Case` (a variant's spec plus one of its
example configs) that raises :class:`CheckFailed` with a message for the author.

Every check has a stable id (see :data:`CHECKS`). ``applies(spec)`` returns the reason
a check does not apply to a variant (its capabilities decide, like scikit-learn's
estimator tags) or ``None``.

How the harness builds things (the same for every check):

- Layers come from ``zoo.create(spec, **example_fields)``, never from the name again.
  Every floating parameter is then perturbed with ``N(0, 0.1**2)`` noise so that
  zero-initialised parameters (FiLM's generator, gates) are exercised too.
- Inputs always come from ``spec.make_inputs`` (in float64, then cast to the dtype
  under test); masks are made by the harness: bool of shape ``context.shape[:-1]``,
  True = may be attended, random with the first element of the last mask axis kept
  True (so rows are empty only where a check wants them empty).
- Oracle comparisons run the layer in the dtype under test and ``spec.reference`` on
  a float64 copy of the same layer, in ``eval()``; the error is
  ``max|out - ref| <= atol + rtol * max|ref|`` with per-dtype tolerances
  (:data:`TOLERANCES`, overridable by ``spec.tolerances``).
- A fully masked row is checked generically: its output and gradients are finite in
  every dtype, it does not depend on its (all masked) context, and it equals the
  float64 oracle, which encodes the variant's own "zero attention term" rule.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from zoo.spec import VariantSpec

__all__ = ["Check", "CheckFailed", "SkipCheck", "Case", "CHECKS", "TOLERANCES", "DTYPES"]

# (atol, rtol) per dtype for oracle comparisons: error <= atol + rtol * max|reference|.
TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-10, 1e-9),
    "float32": (1e-5, 1e-4),
    "bfloat16": (1e-2, 4e-2),
}
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}
# Exact properties (mask, order, batch) are checked in float64 with this tolerance.
EXACT = 1e-9
PERTURB_STD = 0.1


class CheckFailed(AssertionError):
    """A check found the variant wrong; the message says what and where."""


class SkipCheck(Exception):
    """The check does not apply to this variant or example; the message says why."""


@dataclass(frozen=True)
class Check:
    """One harness check: a stable ``id``, what it proves, and how to run it."""

    id: str
    description: str
    func: Callable[[Case], str | None]
    applies: Callable[[VariantSpec], str | None] = lambda spec: None
    slow: bool = False


def _shape(t: Any) -> str:
    if isinstance(t, Tensor):
        return "(" + ", ".join(map(str, t.shape)) + ")"
    return repr(t)


def _describe(inputs: dict[str, Any]) -> str:
    return ", ".join(f"{k} {_shape(v)}" for k, v in inputs.items())


class Case:
    """One example config of a variant, with helpers to build layers and inputs."""

    def __init__(self, spec: VariantSpec, fields: dict, index: int, *, device: str = "cpu",
                 seed: int = 0, dtypes: tuple[str, ...] = ("float32", "float64", "bfloat16")) -> None:
        self.spec = spec
        self.fields = dict(fields)
        self.index = index
        self.device = torch.device(device)
        self.seed = seed
        self.dtypes = dtypes
        self.caps = spec.capabilities
        self._self_attention: bool | None = None

    @property
    def label(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self.fields.items()) or "config defaults"
        return f"example {self.index} ({body})"

    def tol(self, dtype: str) -> tuple[float, float]:
        over = dict(self.spec.tolerances or {})
        return over.get(dtype, TOLERANCES[dtype])

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.index * 7919 + offset)

    # -- layers ----------------------------------------------------------------
    def build(self, dtype: torch.dtype = torch.float64, *, seed_offset: int = 0, perturb: bool = True,
              **overrides: Any) -> torch.nn.Module:
        """``zoo.create(spec, **fields, **overrides)``, parameters perturbed, in ``eval()``."""
        import zoo

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 101 + self.index * 13 + seed_offset)
            module = zoo.create(self.spec, **{**self.fields, **overrides})
        if perturb:
            gen = self.generator(10_000 + seed_offset)
            with torch.no_grad():
                for p in module.parameters():
                    if p.is_floating_point():
                        p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * PERTURB_STD)
        return module.to(device=self.device, dtype=dtype).eval()

    def has_field(self, name: str) -> bool:
        return name in self.spec.config.model_fields

    # -- inputs ----------------------------------------------------------------
    def inputs(self, module: torch.nn.Module, *, batch: int = 2, query_len: int = 7, context_len: int = 5,
               dtype: torch.dtype = torch.float64, mask: str | None = "random", self_attention: bool = False,
               offset: int = 0) -> dict[str, Any]:
        """Inputs from ``spec.make_inputs`` (float64, cast to ``dtype``) plus a harness mask.

        ``mask``: ``None`` (no mask), ``"random"``, ``"full"`` (all True) or ``"empty-first"``
        (random, with batch element 0 fully masked).
        """
        gen = self.generator(offset)
        n = max(query_len, self.caps.min_query_len)
        m = n if self.caps.equal_lengths else context_len
        inputs = dict(self.spec.make_inputs(module, batch=batch, query_len=n, context_len=m,
                                            generator=gen, dtype=torch.float64))
        inputs.pop("context_mask", None)
        if self_attention:
            inputs.pop("context", None)
        context = inputs.get("context")
        if mask is not None and self.caps.masks and isinstance(context, Tensor):
            mshape = context.shape[:-1]
            cm = torch.rand(mshape, generator=gen) > 0.4
            cm[..., 0] = True
            if mask == "full":
                cm = torch.ones(mshape, dtype=torch.bool)
            elif mask == "empty-first":
                cm[0] = False
            inputs["context_mask"] = cm
        return {k: _to(v, dtype, self.device) for k, v in inputs.items()}

    def self_attention(self) -> bool:
        """Whether to try ``context=None`` on this example: ``capabilities.self_attention``,
        unless the context is wider or narrower than ``x`` and the layer refuses
        ``context=None`` with a ValueError (cross with ``context_dim != query_dim``)."""
        if not self.caps.self_attention:
            return False
        if self._self_attention is None:
            module = self.build(torch.float64)
            full = self.inputs(module, batch=1, query_len=3, context_len=3, mask=None)
            ctx = full.get("context")
            ok = True
            if isinstance(ctx, Tensor) and ctx.shape[-1] != full["x"].shape[-1]:
                try:
                    with torch.no_grad():
                        module(x=full["x"])
                except ValueError:
                    ok = False
            self._self_attention = ok
        return self._self_attention


def _to(v: Any, dtype: torch.dtype, device: torch.device) -> Any:
    if isinstance(v, Tensor):
        if v.is_floating_point():
            return v.to(device=device, dtype=dtype)
        return v.to(device)
    return v


def _float_inputs(inputs: dict[str, Any]) -> list[str]:
    return [k for k, v in inputs.items() if isinstance(v, Tensor) and v.is_floating_point()]


def _detached(inputs: dict[str, Any], dtype: torch.dtype | None = None, grad: bool = False) -> dict[str, Any]:
    out = {}
    for k, v in inputs.items():
        if isinstance(v, Tensor):
            v = v.detach().clone()
            if v.is_floating_point():
                if dtype is not None:
                    v = v.to(dtype)
                if grad:
                    v.requires_grad_(True)
        out[k] = v
    return out


def _run(module: torch.nn.Module, inputs: dict[str, Any], what: str = "forward") -> Tensor:
    try:
        out = module(**inputs)
    except Exception as exc:  # noqa: BLE001 - turned into a message for the author
        raise CheckFailed(f"{what} raised {type(exc).__name__}: {exc} (inputs: {_describe(inputs)})") from exc
    if not isinstance(out, Tensor):
        raise CheckFailed(f"{what} returned {type(out).__name__}, expected a Tensor (inputs: {_describe(inputs)})")
    return out


def _reference(case: Case, module: torch.nn.Module, inputs: dict[str, Any]) -> Tensor:
    try:
        return case.spec.reference(module, **inputs)
    except Exception as exc:  # noqa: BLE001
        raise CheckFailed(f"the spec's reference oracle raised {type(exc).__name__}: {exc} "
                          f"(inputs: {_describe(inputs)})") from exc


def compare(out: Tensor, ref: Tensor, atol: float, rtol: float, what: str) -> None:
    """Raise :class:`CheckFailed` unless ``max|out-ref| <= atol + rtol * max|ref|``."""
    if tuple(out.shape) != tuple(ref.shape):
        raise CheckFailed(f"{what}: shape {_shape(out)} but the oracle gives {_shape(ref)}")
    o, r = out.detach().to(torch.float64).cpu(), ref.detach().to(torch.float64).cpu()
    if not torch.isfinite(o).all():
        bad = (~torch.isfinite(o)).nonzero()[0].tolist()
        raise CheckFailed(f"{what}: non-finite value {o[tuple(bad)].item()} at index {tuple(bad)} "
                          f"(the oracle gives {r[tuple(bad)].item():.4g})")
    if o.numel() == 0:
        return
    diff = (o - r).abs()
    err = diff.max().item()
    scale = r.abs().max().item()
    limit = atol + rtol * scale
    if not err <= limit:
        idx = tuple(int(i) for i in torch.nonzero(diff == diff.max())[0])
        raise CheckFailed(f"{what}: max abs error {err:.3g} > tolerance {limit:.3g} (atol {atol:g} + "
                          f"rtol {rtol:g} * max|oracle| {scale:.3g}); at index {idx} got "
                          f"{o[idx].item():.6g}, oracle {r[idx].item():.6g}")


def _forward_cases(case: Case) -> Iterator[tuple[str, dict]]:
    """(description, input options) of the forward configurations worth comparing."""
    yield "with context and mask", dict(mask="random")
    if case.caps.masks:
        yield "with context, no mask", dict(mask=None)
    if case.self_attention():
        yield "self-attention (context=None)", dict(mask=None, self_attention=True)


def _needs_reference(spec: VariantSpec) -> str | None:
    return None if spec.reference is not None else "the spec declares no reference oracle"


def _needs_masks(spec: VariantSpec) -> str | None:
    return None if spec.capabilities.masks else "capabilities.masks is False (no context_mask)"


# --------------------------------------------------------------------------- checks


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
    diff = (out - out2).abs().max().item()
    if not diff <= EXACT * max(1.0, out.abs().max().item()):
        raise CheckFailed(f"changing only masked context elements (context_mask False) changed the output "
                          f"by {diff:.3g}: the mask is ignored or inverted ({_describe(inputs)})")
    # gradient: masked elements get exactly zero gradient
    g_inputs = _detached(inputs, grad=True)
    out = _run(module, g_inputs)
    out.sum().backward()
    grad = g_inputs["context"].grad
    if grad is not None:
        leak = (grad * hidden).abs().max().item()
        if leak > EXACT:
            raise CheckFailed(f"masked context elements receive gradient {leak:.3g}; they must receive none")
    # an all-True mask is the same as no mask
    full = dict(inputs)
    full["context_mask"] = torch.ones_like(cm)
    no_mask = {k: v for k, v in inputs.items() if k != "context_mask"}
    with torch.no_grad():
        a, b = _run(module, full), _run(module, no_mask)
    compare(a, b, EXACT, EXACT, "an all-True context_mask vs context_mask=None")
    return f"{int((~cm).sum())} masked elements have no influence"


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
    diff = (out[0] - out2[0]).abs().max().item()
    if diff > EXACT * max(1.0, out.abs().max().item()):
        raise CheckFailed(f"the output of a fully masked batch element still depends on its context "
                          f"(changed by {diff:.3g}); with nothing to attend the attention term must be zero")
    if case.spec.reference is not None:
        with torch.no_grad():
            ref = _reference(case, module, _detached(inputs))
        atol, rtol = case.tol("float64")
        compare(out, ref, atol, rtol, "float64 output with batch element 0 fully masked vs the oracle")
    return "fully masked rows are finite and context-free"


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
                diff = (out[b:b + 1] - alone).abs().max().item()
                if diff > EXACT * max(1.0, out.abs().max().item()):
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


def _context_order_applies(spec: VariantSpec) -> str | None:
    if not spec.capabilities.context_order_invariant:
        return "capabilities.context_order_invariant is False"
    if not spec.capabilities.context_set_axes:
        return "capabilities.context_set_axes is empty"
    return None


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
            diff = (out - out2).abs().max().item()
            if diff > EXACT * max(1.0, out.abs().max().item()):
                raise CheckFailed(f"permuting the context along axis {axis} (with its mask) changed the output "
                                  f"by {diff:.3g}; the variant declares that axis orderless "
                                  f"(capabilities.context_set_axes); if the context carries positions, set "
                                  f"context_order_invariant=False")
    return f"invariant along axes {case.caps.context_set_axes}"


def _query_order_applies(spec: VariantSpec) -> str | None:
    if not spec.capabilities.query_order_equivariant:
        return "capabilities.query_order_equivariant is False (the queries carry positions)"
    return None


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
    diff = (out[:, perm] - out2).abs().max().item()
    if diff > EXACT * max(1.0, out.abs().max().item()):
        both = " (and the aligned context)" if case.caps.equal_lengths else ""
        raise CheckFailed(f"permuting the queries{both} did not permute the output the same way (error "
                          f"{diff:.3g}): the layer depends on query positions; if it should, set "
                          f"query_order_equivariant=False")
    return "equivariant"


def _chunk_causal_applies(spec: VariantSpec) -> str | None:
    return None if spec.capabilities.chunk_causal else "capabilities.chunk_causal is False"


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
            per_pos = (out2 - out).abs().amax(dim=(0, 2))
            first = (u + 1) * m - 1
            leak = per_pos[:first]
            if leak.numel() and leak.max().item() > EXACT * max(1.0, out.abs().max().item()):
                p = int(torch.nonzero(leak > EXACT * max(1.0, out.abs().max().item()))[0])
                raise CheckFailed(f"changing the context of chunk {u} (context[:, {u}]) changed position {p}, "
                                  f"before {first} = (u+1)*chunk_size - 1 with chunk_size {m}: a position "
                                  f"sees the context of a chunk it has not finished (N={n}, "
                                  f"{_describe(inputs)})")
    return f"causal over {ctx.shape[1]} chunks of {m}"


def check_eval_determinism(case: Case) -> str:
    """In eval() two calls agree exactly, and a config's dropout changes nothing."""
    overrides = {"dropout": 0.5} if case.has_field("dropout") else {}
    module = case.build(torch.float32, **overrides)
    inputs = case.inputs(module, batch=2, query_len=7, context_len=5, dtype=torch.float32)
    with torch.no_grad():
        a = _run(module, inputs)
        b = _run(module, inputs)
    if not torch.equal(a, b):
        raise CheckFailed(f"two calls in eval() mode gave different outputs (max difference "
                          f"{(a - b).abs().max().item():.3g}) with {overrides or 'the example config'}: "
                          f"is dropout (or other randomness) active when module.training is False?")
    if overrides:
        plain = case.build(torch.float32, dropout=0.0)
        plain.load_state_dict(module.state_dict())
        with torch.no_grad():
            c = _run(plain, inputs)
        compare(a, c, 1e-6, 1e-6, "eval() output with dropout=0.5 vs dropout=0.0 (same weights)")
    return "deterministic in eval()"


def _dropout_applies(spec: VariantSpec) -> str | None:
    return None if spec.capabilities.dropout else "capabilities.dropout is False"


def check_dropout(case: Case) -> str:
    """With dropout > 0, training-mode calls are random and differ from eval; with
    dropout = 0, training mode equals eval."""
    if not case.has_field("dropout"):
        raise CheckFailed("capabilities.dropout is True but the config has no 'dropout' field; "
                          "set Capabilities(dropout=False) or add the field")
    module = case.build(torch.float32, dropout=0.5)
    inputs = case.inputs(module, batch=2, query_len=7, context_len=5, dtype=torch.float32)
    with torch.no_grad():
        ev = _run(module, inputs)
        module.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            t1 = _run(module, inputs)
            t2 = _run(module, inputs)
    if torch.equal(t1, t2) or torch.equal(t1, ev):
        raise CheckFailed("with dropout=0.5 in training mode the output is deterministic (same on two calls "
                          "and as in eval): the dropout field has no effect")
    zero = case.build(torch.float32, dropout=0.0)
    zero.load_state_dict(module.state_dict())
    with torch.no_grad():
        zero_eval = _run(zero, inputs)
        zero.train()
        zero_train = _run(zero, inputs)
    compare(zero_train, zero_eval, 1e-6, 1e-6, "with dropout=0.0, training-mode output vs eval output")
    return "dropout acts in training only"


def check_state_dict(case: Case) -> str:
    """A state dict moves (strictly, through torch.save) to a fresh layer of the same
    config, which then computes the same output."""
    import zoo

    module = case.build(torch.float32)
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case.seed + 12345)
        fresh = zoo.create(case.spec, **module.config.fields())
    fresh = fresh.to(device=case.device, dtype=torch.float32).eval()
    try:
        fresh.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckFailed(f"the state dict does not load strictly into a fresh layer of the same config: "
                          f"{exc}") from exc
    inputs = case.inputs(module, batch=2, query_len=7, context_len=5, dtype=torch.float32)
    with torch.no_grad():
        a, b = _run(module, inputs), _run(fresh, inputs)
    if not torch.allclose(a, b, atol=1e-6, rtol=1e-6):
        raise CheckFailed(f"a fresh layer with the loaded state dict computes a different output (max "
                          f"difference {(a - b).abs().max().item():.3g}): some state is not in the state "
                          f"dict (a plain tensor attribute? register it as a parameter or buffer)")
    return f"{len(state)} tensors round-trip"


def check_config_roundtrip(case: Case) -> str:
    """module.config is the spec's config; it survives JSON, and zoo.create(module.config)
    builds the same architecture that takes the state dict."""
    import zoo
    from zoo.registry import Registry, use_registry

    module = case.build(torch.float32)
    cfg = getattr(module, "config", None)
    if not isinstance(cfg, case.spec.config):
        raise CheckFailed(f"module.config is {type(cfg).__name__}, expected an instance of "
                          f"{case.spec.config.__name__}")
    if cfg.variant != case.spec.name:
        raise CheckFailed(f"module.config.variant is {cfg.variant!r}, expected {case.spec.name!r}")
    try:
        again = case.spec.config.model_validate_json(cfg.model_dump_json())
    except Exception as exc:  # noqa: BLE001
        raise CheckFailed(f"module.config does not survive a JSON round trip: {exc}") from exc
    if again != cfg:
        lost = {k: (getattr(cfg, k), getattr(again, k)) for k in type(cfg).model_fields
                if getattr(cfg, k) != getattr(again, k)}
        raise CheckFailed(f"module.config changes in a JSON round trip (field: (before, after)): {lost}")
    # zoo.create(config) resolves the name, so run it against a registry holding exactly this spec.
    sandbox = Registry(load_entry_points=False)
    sandbox.register(case.spec.replace(plugin=None, distribution=None))
    with use_registry(sandbox):
        rebuilt = {"zoo.create(module.config)": lambda: zoo.create(cfg),
                   "zoo.create(JSON of module.config)": lambda: zoo.create(again),
                   "zoo.create(module.config.model_dump())": lambda: zoo.create(cfg.model_dump())}
        state = module.state_dict()
        inputs = case.inputs(module, batch=2, query_len=7, context_len=5, dtype=torch.float32)
        with torch.no_grad():
            ref = _run(module, inputs)
        for how, make in rebuilt.items():
            try:
                other = make()
            except Exception as exc:  # noqa: BLE001
                raise CheckFailed(f"{how} raised {type(exc).__name__}: {exc}") from exc
            if type(other) is not type(module):
                raise CheckFailed(f"{how} built a {type(other).__name__}, not a {type(module).__name__}")
            shapes = {k: tuple(v.shape) for k, v in other.state_dict().items()}
            want = {k: tuple(v.shape) for k, v in state.items()}
            if shapes != want:
                diff = sorted(set(shapes.items()) ^ set(want.items()))[:6]
                raise CheckFailed(f"{how} builds a different architecture (state-dict keys/shapes differ: "
                                  f"{diff})")
            other = other.to(device=case.device, dtype=torch.float32).eval()
            try:
                other.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise CheckFailed(f"the state dict does not load into {how}: {exc}") from exc
            with torch.no_grad():
                out = _run(other, inputs, how)
            if not torch.allclose(out, ref, atol=1e-6, rtol=1e-6):
                raise CheckFailed(f"{how} with the same state dict computes a different output (max "
                                  f"difference {(out - ref).abs().max().item():.3g})")
    return "config round-trips"


def check_bad_input(case: Case) -> str:
    """Bad input raises ValueError: wrong rank, wrong feature size, mask of the wrong
    shape or dtype, mismatched lengths (equal_lengths)."""
    module = case.build(torch.float32)
    inputs = case.inputs(module, batch=2, query_len=7, context_len=5, dtype=torch.float32)
    x = inputs["x"]
    bad: list[tuple[str, dict]] = [
        ("x with one feature too many", {**inputs, "x": torch.cat([x, x[..., :1]], -1)}),
        ("x without its batch axis", {**inputs, "x": x[0]}),
    ]
    ctx = inputs.get("context")
    if isinstance(ctx, Tensor):
        bad.append(("context with one feature too many", {**inputs, "context": torch.cat([ctx, ctx[..., :1]], -1)}))
    cm = inputs.get("context_mask")
    if isinstance(cm, Tensor):
        bad.append(("context_mask of the wrong shape", {**inputs, "context_mask": cm[..., :-1]}))
        bad.append(("context_mask of dtype float32", {**inputs, "context_mask": cm.float()}))
    if case.caps.equal_lengths and isinstance(ctx, Tensor):
        other = case.inputs(module, batch=2, query_len=8, context_len=8, dtype=torch.float32)
        bad.append(("x and context of different lengths", {**inputs, "x": other["x"]}))
    for what, kwargs in bad:
        try:
            with torch.no_grad():
                module(**kwargs)
        except ValueError:
            continue
        except Exception as exc:  # noqa: BLE001
            raise CheckFailed(f"{what} ({_describe(kwargs)}) raised {type(exc).__name__}: {exc}; the contract "
                              f"asks for a ValueError naming the argument, expected and received shape") from exc
        raise CheckFailed(f"{what} ({_describe(kwargs)}) was accepted; it must raise ValueError")
    return f"{len(bad)} bad inputs refused"


def check_law(law) -> Callable[[Case], str]:
    def run(case: Case) -> str:
        try:
            law.check(case.spec, dict(case.fields), case.generator(4242))
        except AssertionError as exc:
            raise CheckFailed(f"law {law.name!r} ({law.description}) does not hold: {exc}") from exc
        return law.description

    run.__doc__ = law.description
    return run


def _compile(case: Case) -> str:
    from zoo.harness.slow import check_compile

    return check_compile(case)


def _ddp(case: Case) -> str:
    from zoo.harness.slow import check_ddp

    return check_ddp(case)


CHECKS: dict[str, Check] = {c.id: c for c in (
    Check("shape", "output has x's shape, dtype and device over batch sizes, lengths and widths", check_shape),
    Check("oracle-forward", "forward equals the float64 naive oracle (float32, float64, bfloat16)",
          check_oracle_forward, _needs_reference),
    Check("oracle-grad", "input and parameter gradients equal the oracle's", check_oracle_grad, _needs_reference),
    Check("mask", "masked context elements have no influence", check_mask, _needs_masks),
    Check("masked-rows", "fully masked rows are finite, context-free, zero attention term", check_masked_rows,
          _needs_masks),
    Check("batch-independence", "batch elements do not influence each other", check_batch_independence),
    Check("context-order", "permuting orderless context axes leaves the output unchanged", check_context_order,
          _context_order_applies),
    Check("query-order", "permuting queries permutes the output", check_query_order, _query_order_applies),
    Check("chunk-causality", "no position sees the context of a chunk it has not finished (RETRO)",
          check_chunk_causality, _chunk_causal_applies),
    Check("eval-determinism", "eval() is deterministic and dropout is off", check_eval_determinism),
    Check("dropout", "dropout acts in training (and only there)", check_dropout, _dropout_applies),
    Check("state-dict", "state dict round-trips into a fresh layer", check_state_dict),
    Check("config-roundtrip", "zoo.create(module.config) rebuilds the layer", check_config_roundtrip),
    Check("bad-input", "bad input raises ValueError", check_bad_input),
    Check("compile", "torch.compile gives the eager output and gradients", _compile, slow=True),
    Check("ddp", "a 2-process DistributedDataParallel step equals single-process training", _ddp, slow=True),
)}

DEFAULT_CHECK_IDS = tuple(c.id for c in CHECKS.values() if not c.slow)
SLOW_CHECK_IDS = tuple(c.id for c in CHECKS.values() if c.slow)


def checks_for(spec: VariantSpec) -> list[Check]:
    """Every check for ``spec``: the built-in ones, then one ``law:<name>`` per law."""
    laws = [Check(f"law:{law.name}", law.description, check_law(law)) for law in spec.laws]
    return [*CHECKS.values(), *laws]


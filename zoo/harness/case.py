"""What every check shares: a :class:`Case` (a variant's spec plus one of its example
configs) with helpers to build layers and inputs, the tolerances, and the comparisons.

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
- From finite inputs, a NaN or inf anywhere in an output fails the check that saw it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from zoo.spec import VariantSpec

__all__ = ["Case", "CheckFailed", "SkipCheck", "TOLERANCES", "DTYPES", "EXACT", "compare", "max_diff", "scale"]

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
        n = query_len
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
        unless the layer refuses ``context=None`` with a ValueError on this example (cross
        with ``context_dim != query_dim``; any example when the capability was inferred)."""
        if not self.caps.self_attention:
            return False
        if self._self_attention is None:
            module = self.build(torch.float64)
            full = self.inputs(module, batch=1, query_len=3, context_len=3, mask=None)
            ctx = full.get("context")
            ok = True
            if "self_attention" in self.caps.inferred or (
                    isinstance(ctx, Tensor) and ctx.shape[-1] != full["x"].shape[-1]):
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


def _run(module: torch.nn.Module, inputs: dict[str, Any], what: str = "forward", *,
         finite: bool = True) -> Tensor:
    """``module(**inputs)``; a crash, a non-tensor or (``finite``) a NaN/inf in the output
    is a :class:`CheckFailed`: with finite inputs no check passes on a non-finite output."""
    try:
        out = module(**inputs)
    except Exception as exc:  # noqa: BLE001 - turned into a message for the author
        raise CheckFailed(f"{what} raised {type(exc).__name__}: {exc} (inputs: {_describe(inputs)})") from exc
    if not isinstance(out, Tensor):
        raise CheckFailed(f"{what} returned {type(out).__name__}, expected a Tensor (inputs: {_describe(inputs)})")
    if finite and out.is_floating_point() and not bool(torch.isfinite(out).all()):
        bad = tuple((~torch.isfinite(out)).nonzero()[0].tolist())
        raise CheckFailed(f"{what} gave a non-finite value ({out[bad].item()}) at index {bad} from finite "
                          f"inputs ({_describe(inputs)})")
    return out


def max_diff(a: Tensor, b: Tensor, what: str) -> float:
    """``max|a - b|`` (0 for empty tensors); a NaN or inf in either is a :class:`CheckFailed`
    (a NaN difference is never "greater than a tolerance", so it must not slip through)."""
    for name, t in (("first", a), ("second", b)):
        if not bool(torch.isfinite(t).all()):
            raise CheckFailed(f"{what}: the {name} output holds NaN or inf")
    if a.numel() == 0:
        return 0.0
    return (a.detach().to(torch.float64) - b.detach().to(torch.float64)).abs().max().item()


def scale(t: Tensor) -> float:
    """``max(1, max|t|)``: the scale exact properties are measured against."""
    return max(1.0, t.detach().abs().max().item()) if t.numel() else 1.0


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

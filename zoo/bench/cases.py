"""What is benchmarked, read from each spec's :class:`zoo.BenchSpec` (never from a name).

A *case* is one variant at one named workload (:class:`zoo.BenchShape`) and size. The
layer is built from the workload's config fields (those its config has), or from the
spec's first example config when the workload gives none (:data:`zoo.benchspec.DEFAULT_SHAPES`);
the inputs come from the spec's own ``make_inputs``. Nothing here names a variant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zoo.benchspec import SIZES, BenchSpec, Workload, default_bench
from zoo.spec import VariantSpec

__all__ = ["Case", "SIZES", "bench_of", "cases_for", "layer_fields", "build", "workload", "attention_flops"]


def bench_of(spec: VariantSpec) -> BenchSpec:
    """The spec's bench information, or the default one (no baseline, no ratio)."""
    return spec.bench if spec.bench is not None else default_bench()


@dataclass(frozen=True)
class Case:
    """One variant at one named workload and size."""

    spec: VariantSpec
    shape: str
    size: str
    workload: Workload

    @property
    def bench(self) -> BenchSpec:
        return bench_of(self.spec)


def cases_for(spec: VariantSpec, size: str, shapes: tuple[str, ...] | None = None) -> list[Case]:
    """The cases of ``spec`` at ``size``, limited to the workload names in ``shapes``."""
    if size not in SIZES:
        raise ValueError(f"unknown benchmark size {size!r}; use one of {', '.join(SIZES)}")
    return [Case(spec, s.name, size, s.at(size)) for s in bench_of(spec).shapes
            if shapes is None or s.name in shapes]


def layer_fields(spec: VariantSpec, wl: Workload) -> dict[str, Any]:
    """The config fields to build ``spec`` with for ``wl``: the workload's fields that the
    config has (or the first example config when the workload gives none), dropout off."""
    fields = spec.config.model_fields
    if wl.config:
        out = {k: v for k, v in wl.config.items() if k in fields and v is not None}
    else:
        out = {k: v for k, v in spec.example_configs()[0].items() if k != "variant"}
    if "dropout" in fields:
        out["dropout"] = 0.0
    return out


def _randomise_zeros(module) -> None:
    """Give zero-initialised parameters (a FiLM generator, a tanh gate) random values, so
    the comparison with the baseline means something."""
    import torch

    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            if p.numel() and p.abs().max().item() == 0:
                p.copy_(torch.randn(p.shape, generator=g).to(p.dtype) * 0.02)


def build(spec: VariantSpec, wl: Workload, *, dtype, device: str = "cpu", seed: int = 0):
    """``(module, inputs)``: the layer for ``wl`` (seeded, zero parameters randomised)
    and the keyword inputs of one call, from the spec's ``make_inputs``."""
    import torch

    import zoo

    torch.manual_seed(seed)
    module = zoo.create(spec, **layer_fields(spec, wl))
    _randomise_zeros(module)
    g = torch.Generator().manual_seed(seed)
    inputs = spec.make_inputs(module, batch=wl.batch, query_len=wl.query_len, context_len=wl.context_len,
                              generator=g, dtype=torch.float32)
    module = module.to(device=device, dtype=dtype)
    inputs = {k: (v.to(device=device, dtype=dtype) if torch.is_tensor(v) and v.is_floating_point()
                  else v.to(device) if torch.is_tensor(v) else v) for k, v in inputs.items()}
    return module, inputs


def workload(fn: Callable, params: list, inputs: dict, pass_: str) -> Callable[[], object]:
    """A zero-argument callable doing one forward (``"fwd"``, under ``no_grad``) or one
    forward and backward (``"fwd+bwd"``, gradients of the parameters and of every
    floating-point input, released after every call so that every call allocates them
    afresh). ``fn(**inputs)`` is the call."""
    import torch

    if pass_ == "fwd":
        def run():
            with torch.no_grad():
                return fn(**inputs)

        return run
    if pass_ != "fwd+bwd":
        raise ValueError(f"pass must be 'fwd' or 'fwd+bwd', got {pass_!r}")
    grads = {k: v.detach().requires_grad_(True) if torch.is_tensor(v) and v.is_floating_point() else v
             for k, v in inputs.items()}
    with torch.no_grad():
        grad_out = torch.randn_like(fn(**inputs))

    def run():
        out = fn(**grads)
        out.backward(grad_out)
        for v in grads.values():
            if torch.is_tensor(v):
                v.grad = None
        for p in params:
            p.grad = None

    return run


def attention_flops(batch: int, query_len: int, context_len: int, heads: int, dim_head: int,
                    query_dim: int, context_dim: int) -> dict[str, float]:
    """Forward floating-point operations (multiply-add = 2) of one multi-head
    cross-attention call: ``attention`` (the two N x M x d products per head) and
    ``total`` (plus the four projections)."""
    inner = heads * dim_head
    attn = 4 * batch * query_len * context_len * inner
    proj = 2 * batch * query_len * query_dim * inner * 2 + 2 * 2 * batch * context_len * context_dim * inner
    return {"attention": float(attn), "total": float(attn + proj)}

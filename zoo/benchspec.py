"""What ``zoo bench`` needs from a variant: :class:`BenchSpec`, set as ``VariantSpec.bench``.

The benchmark names no variant. Everything it measures comes from the spec:

- the **workloads**: named :class:`BenchShape` s, each the keyword arguments of the
  spec's own ``make_inputs`` (``batch``, ``query_len``, ``context_len``) and config
  overrides, at the three sizes ``"full"`` (the shapes worth publishing), ``"quick"``
  (a smoke run) and ``"tiny"`` (tests);
- the **baseline**: ``baseline(module, **inputs) -> Tensor``, what a user would write by
  hand with the module's own weights (for an attention variant: projections and one
  ``scaled_dot_product_attention`` call; for a layer without attention: its own
  fused or plain expression), labelled by ``baseline_label``;
- the **target**: the ratio ``zoo time / baseline time`` the variant promises.

A variant whose spec has no ``bench`` still gets a row: :func:`default_bench` times it
on :data:`DEFAULT_SHAPES` through its ``make_inputs`` with its first example config,
and reports absolute time and memory with **no ratio**: the zoo cannot know what
"the same computation written by hand" is for a variant it has never seen, and
timing it against an unrelated layer would print a ratio that means nothing.

Example (the plugin guide's variant)::

    def bare(module, x, context, **_):      # the same maths on the same weights
        ...

    SPEC = zoo.VariantSpec(..., bench=zoo.BenchSpec(baseline=bare, shapes=zoo.STANDARD_SHAPES))

This module does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SIZES", "DEFAULT_TARGET", "Workload", "BenchShape", "BenchSpec", "STANDARD_SHAPES",
           "DEFAULT_SHAPES", "default_bench"]

SIZES = ("full", "quick", "tiny")
DEFAULT_TARGET = 1.05


@dataclass(frozen=True)
class Workload:
    """One call's size: the ``make_inputs`` arguments and the config fields to build with.

    Attributes:
        batch, query_len, context_len: passed to the spec's ``make_inputs`` (what
            ``context_len`` means is the variant's: RETRO reads it as ``K * R``).
        config: config overrides (``query_dim``, ``heads``, ...); fields the variant's
            config does not have are dropped, so one workload serves several variants.
    """

    batch: int
    query_len: int
    context_len: int
    config: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """``B=2 N=4096 M=77 query_dim=320 ...`` for tables and logs."""
        extra = " ".join(f"{k}={v}" for k, v in self.config.items())
        return f"B={self.batch} N={self.query_len} M={self.context_len} {extra}".strip()

    def as_dict(self) -> dict[str, Any]:
        return {"batch": self.batch, "query_len": self.query_len, "context_len": self.context_len,
                "config": dict(self.config)}


@dataclass(frozen=True)
class BenchShape:
    """A named workload at the three sizes (``full``, ``quick``, ``tiny``).

    Attributes:
        name: the key printed in tables and used by ``zoo bench --shapes``.
        description: one line (what the workload stands for).
        full, quick, tiny: the :class:`Workload` at each size.
    """

    name: str
    description: str
    full: Workload
    quick: Workload
    tiny: Workload

    def at(self, size: str) -> Workload:
        """The workload at ``size``; a ``ValueError`` names the sizes for anything else."""
        if size not in SIZES:
            raise ValueError(f"unknown benchmark size {size!r}; use one of {', '.join(SIZES)}")
        return getattr(self, size)


@dataclass(frozen=True, kw_only=True)
class BenchSpec:
    """A variant's benchmark: its workloads, its hand-written twin, its target.

    Attributes:
        shapes: the workloads (default: :data:`DEFAULT_SHAPES`).
        baseline: ``baseline(module, **inputs) -> Tensor`` on the module's own weights,
            with the inputs ``make_inputs`` made; ``None``: absolute numbers, no ratio.
        baseline_label: what the baseline is, for table headers ("bare SDPA",
            "hand-written FiLM", ...).
        target: the promised ``zoo / baseline`` ratio of median times
            (default :data:`DEFAULT_TARGET` when there is a baseline).
        compare: another registered variant timed at the same workloads, for context
            (a layer without attention against the attention it replaces, say); ``True``:
            the variant that stands for "an attention layer" (the first whose bench says
            ``system``), so a plugin need not name another plugin.
        system: this variant stands for "an attention layer" in the system checks
            (memory scaling, GFLOP/s); the first registered one that says so is used.
    """

    shapes: tuple[BenchShape, ...] = ()
    baseline: Callable[..., Any] | None = None
    baseline_label: str = "bare SDPA"
    target: float | None = None
    compare: str | bool | None = None
    system: bool = False

    def __post_init__(self) -> None:
        if self.baseline is not None and not callable(self.baseline):
            raise ValueError(f"BenchSpec.baseline must be callable, got {self.baseline!r}")
        if self.target is not None and not self.target > 0:
            raise ValueError(f"BenchSpec.target must be a positive ratio, got {self.target!r}")
        for s in self.shapes:
            if not isinstance(s, BenchShape):
                raise ValueError(f"BenchSpec.shapes must hold BenchShape objects, got {s!r}")
        if not self.shapes:
            object.__setattr__(self, "shapes", DEFAULT_SHAPES)

    @property
    def effective_target(self) -> float | None:
        """The target that applies: ``None`` without a baseline (no ratio to judge)."""
        if self.baseline is None:
            return None
        return self.target if self.target is not None else DEFAULT_TARGET


def _dims(qd: int, cd: int, h: int, d: int) -> dict[str, int]:
    return {"query_dim": qd, "context_dim": cd, "heads": h, "dim_head": d}


#: Two cross-attention workloads for any variant that takes ``x (B, N, Dq)`` and a
#: context sequence: ``sd`` (Stable Diffusion: 4096 latent tokens attend to 77 text
#: tokens, width 320, context 768, 8 heads of 40) and ``long`` (N = M = 4096, width
#: 512, 8 heads of 64).
STANDARD_SHAPES: tuple[BenchShape, ...] = (
    BenchShape("sd", "Stable Diffusion: 4096 latent tokens attend to 77 text tokens",
               full=Workload(2, 4096, 77, _dims(320, 768, 8, 40)),
               quick=Workload(1, 1024, 77, _dims(320, 768, 8, 40)),
               tiny=Workload(1, 64, 7, _dims(32, 48, 2, 8))),
    BenchShape("long", "long sequences, N = M = 4096",
               full=Workload(1, 4096, 4096, _dims(512, 512, 8, 64)),
               quick=Workload(1, 512, 512, _dims(512, 512, 8, 64)),
               tiny=Workload(1, 48, 48, _dims(32, 32, 2, 16))),
)

#: What a variant without bench information is timed on: its first example config
#: (the spec's ``examples``), at these lengths.
DEFAULT_SHAPES: tuple[BenchShape, ...] = (
    BenchShape("default", "the variant's first example config, make_inputs at these lengths",
               full=Workload(2, 1024, 256), quick=Workload(1, 256, 64), tiny=Workload(1, 16, 8)),
)


def default_bench() -> BenchSpec:
    """The bench of a spec that declares none: :data:`DEFAULT_SHAPES`, no baseline."""
    return BenchSpec(shapes=DEFAULT_SHAPES, baseline=None, baseline_label="-")

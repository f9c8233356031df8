"""What is benchmarked: the shapes, which variant runs at which shape, and the workloads.

Shapes (``size="full"``, the issue's):

- ``sd``: Stable Diffusion cross-attention, B=2, N=4096 latent tokens, M=77 text
  tokens, query width 320, context width 768, 8 heads of 40.
- ``long``: long cross-attention, B=1, N=M=4096, width 512, 8 heads of 64.
- ``retro``: RETRO, B=2, N=2048, chunks of 64, K=2 neighbours of R=128 tokens,
  width 512, 8 heads of 64.

``size="quick"`` shrinks the sequence lengths (CI smoke runs, well under a minute),
``size="tiny"`` shrinks everything (tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

__all__ = ["Shape", "SHAPES", "SIZES", "VARIANT_SHAPES", "shape_for", "layer_fields", "make_inputs", "workload", "attention_flops"]


@dataclass(frozen=True)
class Shape:
    key: str
    batch: int
    query_len: int  # N
    context_len: int  # M (for retro: neighbour length R)
    query_dim: int
    context_dim: int
    heads: int
    dim_head: int
    chunk_size: int | None = None
    neighbours: int | None = None  # K

    def describe(self) -> str:
        if self.chunk_size:
            return (f"B={self.batch} N={self.query_len} chunk={self.chunk_size} K={self.neighbours} "
                    f"R={self.context_len} Dq={self.query_dim} Dc={self.context_dim} h={self.heads}x{self.dim_head}")
        return (f"B={self.batch} N={self.query_len} M={self.context_len} Dq={self.query_dim} "
                f"Dc={self.context_dim} h={self.heads}x{self.dim_head}")

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


SIZES = ("full", "quick", "tiny")

SHAPES: dict[str, dict[str, Shape]] = {
    "full": {
        "sd": Shape("sd", 2, 4096, 77, 320, 768, 8, 40),
        "long": Shape("long", 1, 4096, 4096, 512, 512, 8, 64),
        "retro": Shape("retro", 2, 2048, 128, 512, 512, 8, 64, chunk_size=64, neighbours=2),
    },
    "quick": {
        "sd": Shape("sd", 1, 1024, 77, 320, 768, 8, 40),
        "long": Shape("long", 1, 1024, 1024, 512, 512, 8, 64),
        "retro": Shape("retro", 1, 512, 128, 512, 512, 8, 64, chunk_size=64, neighbours=2),
    },
    "tiny": {
        "sd": Shape("sd", 1, 64, 7, 32, 48, 2, 8),
        "long": Shape("long", 1, 48, 48, 32, 32, 2, 16),
        "retro": Shape("retro", 1, 32, 4, 32, 32, 2, 16, chunk_size=8, neighbours=2),
    },
}

# Which shapes each built-in variant is measured at (selfdoc needs N == M; retro
# needs neighbours; film and persistent are compared at the cross-attention shapes).
VARIANT_SHAPES: dict[str, tuple[str, ...]] = {
    "cross": ("sd", "long"),
    "selfdoc": ("long",),
    "persistent": ("sd", "long"),
    "retro": ("retro",),
    "film": ("sd", "long"),
}

# Target ratio of median times, zoo / bare baseline (issue 7).
TARGETS: dict[str, float] = {"retro": 1.10}
DEFAULT_TARGET = 1.05


def shape_for(size: str, key: str) -> Shape:
    try:
        return SHAPES[size][key]
    except KeyError:
        raise ValueError(f"unknown shape {key!r} or size {size!r}; shapes: {', '.join(SHAPES['full'])}; "
                         f"sizes: {', '.join(SIZES)}") from None


def layer_fields(config_model: type, shape: Shape) -> dict:
    """The config fields for ``shape`` that the variant's config model has."""
    wanted = {
        "query_dim": shape.query_dim,
        "context_dim": shape.context_dim,
        "heads": shape.heads,
        "dim_head": shape.dim_head,
        "chunk_size": shape.chunk_size,
        "dropout": 0.0,
    }
    fields = config_model.model_fields
    return {k: v for k, v in wanted.items() if k in fields and v is not None}


def make_inputs(shape: Shape, *, dtype, device="cpu", seed: int = 0):
    """``(x, context)`` for ``shape``: context ``(B, M, Dc)``, or ``(B, L, K, R, Dc)`` for RETRO."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape.batch, shape.query_len, shape.query_dim, generator=g)
    if shape.chunk_size:
        L = shape.query_len // shape.chunk_size
        c = torch.randn(shape.batch, L, shape.neighbours, shape.context_len, shape.context_dim, generator=g)
    else:
        c = torch.randn(shape.batch, shape.context_len, shape.context_dim, generator=g)
    return x.to(device=device, dtype=dtype), c.to(device=device, dtype=dtype)


def workload(fn: Callable, params: list, x, context, pass_: str) -> Callable[[], object]:
    """A zero-argument callable doing one forward (``"fwd"``, under ``no_grad``) or one
    forward and backward (``"fwd+bwd"``, gradients of the parameters and both inputs,
    released after every call so that every call allocates them afresh)."""
    import torch

    if pass_ == "fwd":
        def run():
            with torch.no_grad():
                return fn(x, context)

        return run
    if pass_ != "fwd+bwd":
        raise ValueError(f"pass must be 'fwd' or 'fwd+bwd', got {pass_!r}")
    xg = x.detach().requires_grad_(True)
    cg = context.detach().requires_grad_(True)
    with torch.no_grad():
        grad_out = torch.randn_like(fn(x, context))

    def run():
        out = fn(xg, cg)
        out.backward(grad_out)
        xg.grad = None
        cg.grad = None
        for p in params:
            p.grad = None

    return run


def attention_flops(shape: Shape, variant: str = "cross") -> dict[str, float]:
    """Forward floating-point operations (multiply-add = 2) of one layer call at ``shape``:
    ``attention`` (the two N x M x d products per head) and ``total`` (plus projections)."""
    b, n, h, d = shape.batch, shape.query_len, shape.heads, shape.dim_head
    inner = h * d
    if shape.chunk_size:
        L = n // shape.chunk_size
        keys = shape.neighbours * shape.context_len
        attn = 4 * b * L * shape.chunk_size * keys * inner
        proj = 2 * b * n * shape.query_dim * inner * 2 + 2 * 2 * b * L * keys * shape.context_dim * inner
    else:
        m = shape.context_len
        attn = 4 * b * n * m * inner
        proj = 2 * b * n * shape.query_dim * inner * 2 + 2 * 2 * b * m * shape.context_dim * inner
    return {"attention": float(attn), "total": float(attn + proj)}

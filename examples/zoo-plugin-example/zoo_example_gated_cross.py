"""``gated-cross``: Flamingo's tanh-gated cross-attention, as a third-party zoo plugin.

Alayrac et al., "Flamingo: a Visual Language Model for Few-Shot Learning", 2022,
arXiv:2204.14198. Flamingo inserts cross-attention blocks into a frozen, pretrained
language model and multiplies each block's output by ``tanh(alpha)``, a learned scalar
that starts at 0: at initialisation the new block is exactly the identity, so the
language model is unchanged until training opens the gate.

This module is a complete plugin: a config, a layer, a naive oracle, two laws and the
hook that registers them. ``pyproject.toml`` names it under the entry-point group
``zoo``; once the distribution is installed, ``zoo list`` shows ``gated-cross``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

import zoo
from zoo.nn import MultiHeadBase, attend, split_heads
from zoo.oracle import heads_merge, heads_view, linear, naive_attention
from zoo.testing import expect

__all__ = ["GatedCrossAttention", "GatedCrossConfig", "SPEC", "reference", "zoo_register_variants"]


class GatedCrossConfig(zoo.VariantConfig):
    """Config of :class:`GatedCrossAttention` (select it with ``variant: gated-cross``)."""

    variant: Literal["gated-cross"] = "gated-cross"
    query_dim: int = Field(64, gt=0, description="Width of x, the queries (Dq).")
    context_dim: int | None = Field(None, gt=0, description="Width of the context (Dc); None means query_dim.")
    heads: int = Field(8, gt=0, description="Number of attention heads (h).")
    dim_head: int = Field(64, gt=0, description="Width of each head (d).")
    gate_init: float = Field(0.0, description="Initial gate alpha; 0 makes the block the identity at start.")


class GatedCrossAttention(MultiHeadBase):
    """Cross-attention added to ``x`` through a tanh gate: ``y = x + tanh(alpha) * attn(x, c)``.

    :class:`zoo.nn.MultiHeadBase` builds diffusers' parameters (``to_q``, ``to_k``,
    ``to_v``, ``to_out.0``) and checks the inputs; this class adds the gate.

    Args:
        query_dim: width of ``x`` (Dq).
        context_dim: width of ``context`` (Dc); ``None`` means ``query_dim``.
        heads: number of heads (h).
        dim_head: width of each head (d).
        gate_init: the initial value of the learned scalar gate ``alpha``.

    Shape:
        - x: ``(B, N, Dq)``
        - context: ``(B, M, Dc)``, or ``None`` to attend over ``x`` itself
        - context_mask: bool ``(B, M)``, True = may be attended
        - output: ``(B, N, Dq)``
    """

    def __init__(self, query_dim: int, context_dim: int | None = None, heads: int = 8,
                 dim_head: int = 64, gate_init: float = 0.0) -> None:
        super().__init__(query_dim, context_dim, heads, dim_head)
        self.attn_gate = torch.nn.Parameter(torch.tensor(float(gate_init)))

    def forward(self, x: Tensor, context: Tensor | None = None, *, context_mask: Tensor | None = None) -> Tensor:
        context = self.check_context(x, context, context_mask)  # clear ValueError on bad input
        q = split_heads(self.to_q(x), self.heads)
        k = split_heads(self.to_k(context), self.heads)
        v = split_heads(self.to_v(context), self.heads)
        attended = self.project_out(attend(q, k, v, context_mask))  # mask (B, M): every head
        return x + torch.tanh(self.attn_gate) * attended


def reference(module: GatedCrossAttention, x: Tensor, context: Tensor | None = None, *,
              context_mask: Tensor | None = None) -> Tensor:
    """The harness's oracle: the same maths written out, never calling ``forward``.

    :func:`zoo.oracle.naive_attention` materialises the scores and gives a query with
    nothing to attend an attention term of exactly zero, the zoo's rule.
    """
    c, h = (x if context is None else context), module.heads
    q, k, v = (heads_view(linear(t, lin), h) for t, lin in ((x, module.to_q), (c, module.to_k), (c, module.to_v)))
    attended = linear(heads_merge(naive_attention(q, k, v, context_mask)), module.to_out[0])
    return x + torch.tanh(module.attn_gate) * attended


def _law_identity_at_init(spec, fields, generator):
    """With the gate at 0 the block returns x exactly, whatever its other weights."""
    layer = zoo.create(spec, **{**fields, "gate_init": 0.0})
    x = torch.randn(2, 5, layer.query_dim, generator=generator)
    c = torch.randn(2, 7, layer.context_dim, generator=generator)
    y = layer(x, c)
    expect(torch.equal(y, x), f"gate 0 must give exactly x; max difference {(y - x).abs().max():.2e}")


def _law_gated_cross(spec, fields, generator):
    """y - x equals tanh(alpha) times the zoo's own `cross` layer with the same weights."""
    layer = zoo.create(spec, **fields).double().eval()
    cross = zoo.create("cross", query_dim=layer.query_dim, context_dim=layer.context_dim, heads=layer.heads,
                       dim_head=layer.to_q.out_features // layer.heads).double().eval()
    cross.load_state_dict({k: v for k, v in layer.state_dict().items() if k != "attn_gate"})  # same names
    x = torch.randn(2, 5, layer.query_dim, generator=generator, dtype=torch.float64)
    c = torch.randn(2, 7, layer.context_dim, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        err = ((layer(x, c) - x) - torch.tanh(layer.attn_gate) * cross(x, c)).abs().max().item()
    expect(err < 1e-10, f"differs from tanh(alpha) * cross(x, c) by {err:.2e}")


SPEC = zoo.VariantSpec(
    name="gated-cross",
    aliases=("flamingo-gated-cross",),
    module=GatedCrossAttention,
    config=GatedCrossConfig,
    summary="Flamingo's tanh-gated cross-attention: x + tanh(alpha) * attention, the identity at start.",
    paper='Alayrac et al., "Flamingo: a Visual Language Model for Few-Shot Learning", 2022, arXiv:2204.14198',
    examples=(
        {"query_dim": 12, "context_dim": 10, "heads": 2, "dim_head": 4, "gate_init": 0.5},
        {"query_dim": 8, "heads": 2, "dim_head": 4, "gate_init": -1.0},
    ),
    reference=reference,
    capabilities=zoo.Capabilities(dropout=False),
    laws=(
        zoo.Law("identity-at-init", "with gate_init=0 the block returns x exactly", _law_identity_at_init),
        zoo.Law("gated-cross", "y - x = tanh(alpha) * cross(x, c) with the same weights", _law_gated_cross),
    ),
    equation=r"y = x + \tanh(\alpha)\,\mathrm{softmax}\left(\frac{(xW_q)(cW_k)^\top}{\sqrt{d}}\right)(cW_v)\,W_o",
    complexity="O(N·M·h·d) time, O((N+M)·h·d) memory",
    context_shape="(B, M, Dc)",
)


@zoo.hookimpl
def zoo_register_variants(register):
    """Register ``gated-cross`` (called once by the zoo's registry)."""
    register(SPEC)


def bare_sdpa(module: GatedCrossAttention, x: Tensor, context: Tensor, **_) -> Tensor:
    """What `zoo bench gated-cross` times the layer against: the same block written by
    hand on the same weights, with one fused ``scaled_dot_product_attention`` call."""
    import torch.nn.functional as F

    def heads(t: Tensor, lin: torch.nn.Linear) -> Tensor:
        return F.linear(t, lin.weight, lin.bias).unflatten(-1, (module.heads, -1)).transpose(1, 2)

    o = F.scaled_dot_product_attention(heads(x, module.to_q), heads(context, module.to_k),
                                       heads(context, module.to_v)).transpose(1, 2).flatten(-2)
    out = module.to_out[0]
    return x + torch.tanh(module.attn_gate) * F.linear(o, out.weight, out.bias)


# `zoo bench` reads what to time from the spec: the zoo's two standard cross-attention
# workloads (sd, long) and the hand-written twin above; the default target (1.05) applies.
SPEC = SPEC.replace(bench=zoo.BenchSpec(shapes=zoo.STANDARD_SHAPES, baseline=bare_sdpa))

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

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

import zoo
from zoo.functional import attend, merge_heads, split_heads, validate_mask, validate_same_batch, validate_tensor

__all__ = ["GatedCrossAttention", "GatedCrossConfig", "SPEC", "reference", "zoo_register_variants"]


class GatedCrossConfig(zoo.VariantConfig):
    """Config of :class:`GatedCrossAttention` (select it with ``variant: gated-cross``)."""

    variant: Literal["gated-cross"] = "gated-cross"
    query_dim: int = Field(64, gt=0, description="Width of x, the queries (Dq).")
    context_dim: int | None = Field(None, gt=0, description="Width of the context (Dc); None means query_dim.")
    heads: int = Field(8, gt=0, description="Number of attention heads (h).")
    dim_head: int = Field(64, gt=0, description="Width of each head (d).")
    gate_init: float = Field(0.0, description="Initial gate alpha; 0 makes the block the identity at start.")


class GatedCrossAttention(nn.Module):
    """Cross-attention added to ``x`` through a tanh gate: ``y = x + tanh(alpha) * attn(x, c)``.

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
        super().__init__()
        self.query_dim, self.context_dim, self.heads = query_dim, context_dim or query_dim, heads
        inner = heads * dim_head
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(self.context_dim, inner, bias=False)
        self.to_v = nn.Linear(self.context_dim, inner, bias=False)
        self.to_out = nn.Linear(inner, query_dim)
        self.attn_gate = nn.Parameter(torch.tensor(float(gate_init)))

    def _validate(self, x: Tensor, context: Tensor | None, context_mask: Tensor | None) -> Tensor:
        w = self.to_q.weight
        validate_tensor("x", x, ndim=3, last_dim=self.query_dim, like=w, legend=f"(B, N, query_dim={self.query_dim})")
        if context is None:
            if self.context_dim != self.query_dim:
                raise ValueError(f"context is None but context_dim={self.context_dim} differs from "
                                 f"query_dim={self.query_dim}; pass a context of width {self.context_dim}")
            context = x
        else:
            validate_tensor("context", context, ndim=3, last_dim=self.context_dim, like=w,
                            legend=f"(B, M, context_dim={self.context_dim})")
            validate_same_batch(x, context)
        if context_mask is not None:
            validate_mask("context_mask", context_mask, context.shape[:-1])
        return context

    def forward(self, x: Tensor, context: Tensor | None = None, *, context_mask: Tensor | None = None) -> Tensor:
        context = self._validate(x, context, context_mask)
        q = split_heads(self.to_q(x), self.heads)
        k = split_heads(self.to_k(context), self.heads)
        v = split_heads(self.to_v(context), self.heads)
        attended = self.to_out(merge_heads(attend(q, k, v, context_mask)))  # mask (B, M): every head
        return x + torch.tanh(self.attn_gate) * attended


def reference(module: GatedCrossAttention, x: Tensor, context: Tensor | None = None, *,
              context_mask: Tensor | None = None) -> Tensor:
    """The harness's oracle: the same maths written out, never calling ``forward``."""
    c = x if context is None else context
    h = module.heads

    def heads_of(t: Tensor, lin: nn.Linear) -> Tensor:  # (B, L, h*d) -> (B, h, L, d)
        return (t @ lin.weight.T).unflatten(-1, (h, -1)).transpose(1, 2)

    q, k, v = heads_of(x, module.to_q), heads_of(c, module.to_k), heads_of(c, module.to_v)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if context_mask is not None:
        keep = context_mask[:, None, None, :]
        empty = ~context_mask.any(-1)[:, None, None, None]  # nothing to attend: term is 0
        scores = scores.masked_fill(~keep, float("-inf")).masked_fill(empty, 0.0)
    out = torch.softmax(scores, dim=-1) @ v
    if context_mask is not None:
        out = out.masked_fill(empty, 0.0)
    attended = out.transpose(1, 2).flatten(-2) @ module.to_out.weight.T + module.to_out.bias
    return x + torch.tanh(module.attn_gate) * attended


def _law_identity_at_init(spec, fields, generator):
    """With the gate at 0 the block returns x exactly, whatever its other weights."""
    layer = zoo.create(spec, **{**fields, "gate_init": 0.0})
    x = torch.randn(2, 5, layer.query_dim, generator=generator)
    c = torch.randn(2, 7, layer.context_dim, generator=generator)
    y = layer(x, c)
    assert torch.equal(y, x), f"gate 0 must give exactly x; max difference {(y - x).abs().max():.2e}"


def _law_gated_cross(spec, fields, generator):
    """y - x equals tanh(alpha) times the zoo's own `cross` layer with the same weights."""
    layer = zoo.create(spec, **fields).double().eval()
    cross = zoo.create("cross", query_dim=layer.query_dim, context_dim=layer.context_dim, heads=layer.heads,
                       dim_head=layer.to_q.out_features // layer.heads).double().eval()
    state = {f"to_{n}.weight": getattr(layer, f"to_{n}").weight for n in "qkv"}
    state |= {"to_out.0.weight": layer.to_out.weight, "to_out.0.bias": layer.to_out.bias}
    cross.load_state_dict(state)
    x = torch.randn(2, 5, layer.query_dim, generator=generator, dtype=torch.float64)
    c = torch.randn(2, 7, layer.context_dim, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        err = ((layer(x, c) - x) - torch.tanh(layer.attn_gate) * cross(x, c)).abs().max().item()
    assert err < 1e-10, f"differs from tanh(alpha) * cross(x, c) by {err:.2e}"


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

"""``example-dot``: single-head scaled dot-product cross-attention, as a third party
would write it, with its own naive oracle. Registers through the ``zoo`` entry point."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

import zoo
from zoo.nn import MultiHeadBase, attend, split_heads
from zoo.oracle import heads_merge, heads_view, linear, naive_attention


class DotConfig(zoo.VariantConfig):
    variant: Literal["example-dot"] = "example-dot"
    query_dim: int = Field(16, gt=0)
    context_dim: int = Field(12, gt=0)
    dim: int = Field(8, gt=0, description="width of queries and keys")


class DotAttention(MultiHeadBase):
    """One head of width ``dim``; the context is required (no self-attention)."""

    def __init__(self, query_dim: int = 16, context_dim: int = 12, dim: int = 8) -> None:
        super().__init__(query_dim, context_dim, heads=1, dim_head=dim)

    def forward(self, x, context=None, *, context_mask=None):
        if context is None:
            raise ValueError("context is required: example-dot has no self-attention")
        context = self.check_context(x, context, context_mask)
        q, k, v = (split_heads(lin(t), 1) for lin, t in ((self.to_q, x), (self.to_k, context), (self.to_v, context)))
        return self.project_out(attend(q, k, v, context_mask))


def reference(module, x, context=None, *, context_mask=None):
    q, k, v = (heads_view(linear(t, lin), 1) for t, lin in ((x, module.to_q), (context, module.to_k),
                                                           (context, module.to_v)))
    return linear(heads_merge(naive_attention(q, k, v, context_mask)), module.to_out[0])


SPEC = zoo.VariantSpec(
    name="example-dot",
    module=DotAttention,
    config=DotConfig,
    summary="single-head dot-product attention (a third-party example)",
    reference=reference,
    capabilities=zoo.Capabilities(self_attention=False, dropout=False),
)


@zoo.hookimpl
def zoo_register_variants(register):
    register(SPEC)

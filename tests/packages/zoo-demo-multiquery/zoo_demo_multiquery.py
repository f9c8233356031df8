"""Multi-query cross-attention (Shazeer, 2019, arXiv:1911.02150): one shared K/V head.

A third-party plugin exactly as an outside author would write it; the zoo's tests
install it into a scratch environment and pick it by name.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

import zoo
from zoo.nn import MultiHeadBase, MultiHeadFields, attend, split_heads
from zoo.oracle import heads_merge, heads_view, linear, naive_attention


class MultiQueryConfig(MultiHeadFields):
    variant: Literal["demo-multiquery"] = "demo-multiquery"


class MultiQueryAttention(MultiHeadBase):
    """Query heads as in ``cross``; keys and values from one shared head, ``to_kv``."""

    def __init__(self, query_dim, context_dim=None, heads=8, dim_head=64, bias=False, out_bias=True, dropout=0.0):
        super().__init__(query_dim, context_dim, heads, dim_head, bias, out_bias, dropout, key_value=False)
        self.to_kv = nn.Linear(self.context_dim, 2 * dim_head, bias=bias)

    def forward(self, x, context=None, *, context_mask=None):
        context = self.check_context(x, context, context_mask)
        q = split_heads(self.to_q(x), self.heads)
        k, v = self.to_kv(context).unsqueeze(1).chunk(2, dim=-1)  # (B, 1, M, d): shared by heads
        h = self.heads
        return self.project_out(attend(q, k.expand(-1, h, -1, -1), v.expand(-1, h, -1, -1), context_mask))


def reference(module, x, context=None, *, context_mask=None):
    c = x if context is None else context
    q = heads_view(linear(x, module.to_q), module.heads)
    k, v = linear(c, module.to_kv).unsqueeze(1).chunk(2, dim=-1)
    return linear(heads_merge(naive_attention(q, k, v, context_mask)), module.to_out[0])


@zoo.hookimpl
def zoo_register_variants(register):
    register(zoo.VariantSpec(
        name="demo-multiquery",
        module=MultiQueryAttention,
        config=MultiQueryConfig,
        summary="Multi-query cross-attention: many query heads, one shared key/value head.",
        paper='Shazeer, "Fast Transformer Decoding: One Write-Head is All You Need", 2019, arXiv:1911.02150',
        reference=reference,
        examples=({"query_dim": 16, "context_dim": 12, "heads": 2, "dim_head": 4, "dropout": 0.25},),
    ))

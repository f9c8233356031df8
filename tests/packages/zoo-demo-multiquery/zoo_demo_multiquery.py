"""Multi-query cross-attention (Shazeer, 2019, arXiv:1911.02150): one shared K/V head.

A third-party plugin exactly as an outside author would write it; the zoo's tests
install it into a scratch environment and pick it by name.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

import zoo
from zoo.functional import attend, merge_heads, split_heads, validate_mask, validate_tensor


class MultiQueryConfig(zoo.VariantConfig):
    variant: Literal["demo-multiquery"] = "demo-multiquery"
    query_dim: int = Field(32, gt=0, description="Width of x.")
    context_dim: int | None = Field(None, gt=0, description="Width of the context; None = query_dim.")
    heads: int = Field(4, gt=0, description="Query heads (they share one key/value head).")
    dim_head: int = Field(8, gt=0, description="Width of each head.")


class MultiQueryAttention(nn.Module):
    def __init__(self, query_dim, context_dim=None, heads=4, dim_head=8):
        super().__init__()
        context_dim = context_dim or query_dim
        self.query_dim, self.context_dim, self.heads = query_dim, context_dim, heads
        self.to_q = nn.Linear(query_dim, heads * dim_head, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, query_dim)

    def forward(self, x, context=None, *, context_mask=None):
        validate_tensor("x", x, ndim=3, last_dim=self.query_dim, like=self.to_q.weight)
        context = x if context is None else context
        validate_tensor("context", context, ndim=3, last_dim=self.context_dim, like=self.to_q.weight)
        if context_mask is not None:
            validate_mask("context_mask", context_mask, context.shape[:-1])
            context_mask = context_mask[:, None, :]
        q = split_heads(self.to_q(x), self.heads)
        k, v = self.to_kv(context).unsqueeze(1).chunk(2, dim=-1)  # (B, 1, M, d): shared by heads
        h = self.heads
        out = attend(q, k.expand(-1, h, -1, -1), v.expand(-1, h, -1, -1), context_mask)
        return self.to_out(merge_heads(out))


def reference(module, x, context=None, *, context_mask=None):
    c = x if context is None else context
    b, n, _ = x.shape
    q = (x @ module.to_q.weight.T).reshape(b, n, module.heads, -1).transpose(1, 2)
    k, v = (c @ module.to_kv.weight.T).chunk(2, dim=-1)
    scores = q @ k[:, None].transpose(-1, -2) / math.sqrt(q.shape[-1])
    if context_mask is not None:
        scores = scores.masked_fill(~context_mask[:, None, None, :], float("-inf"))
        empty = ~context_mask.any(-1)[:, None, None, None]
        scores = scores.masked_fill(empty, 0.0)
    out = torch.softmax(scores, -1) @ v[:, None]
    if context_mask is not None:
        out = out.masked_fill(empty, 0.0)
    out = out.transpose(1, 2).reshape(b, n, -1)
    return out @ module.to_out.weight.T + module.to_out.bias


@zoo.hookimpl
def zoo_register_variants(register):
    register(zoo.VariantSpec(
        name="demo-multiquery",
        module=MultiQueryAttention,
        config=MultiQueryConfig,
        summary="Multi-query cross-attention: many query heads, one shared key/value head.",
        paper='Shazeer, "Fast Transformer Decoding: One Write-Head is All You Need", 2019, arXiv:1911.02150',
        reference=reference,
        capabilities=zoo.Capabilities(dropout=False),
        examples=({"query_dim": 16, "context_dim": 12, "heads": 2, "dim_head": 4},),
    ))

"""``example-dot``: single-head scaled dot-product cross-attention, as a third party
would write it, with its own naive oracle. Registers through the ``zoo`` entry point."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

import zoo
from zoo.functional import attend, validate_mask, validate_same_batch, validate_tensor


class DotConfig(zoo.VariantConfig):
    variant: Literal["example-dot"] = "example-dot"
    query_dim: int = Field(16, gt=0)
    context_dim: int = Field(12, gt=0)
    dim: int = Field(8, gt=0, description="width of queries and keys")


class DotAttention(nn.Module):
    def __init__(self, query_dim: int = 16, context_dim: int = 12, dim: int = 8) -> None:
        super().__init__()
        self.query_dim, self.context_dim = query_dim, context_dim
        self.q = nn.Linear(query_dim, dim, bias=False)
        self.k = nn.Linear(context_dim, dim, bias=False)
        self.v = nn.Linear(context_dim, query_dim, bias=False)

    def forward(self, x, context=None, *, context_mask=None):
        w = self.q.weight
        validate_tensor("x", x, ndim=3, last_dim=self.query_dim, like=w)
        if context is None:
            raise ValueError("context is required: example-dot has no self-attention")
        validate_tensor("context", context, ndim=3, last_dim=self.context_dim, like=w)
        validate_same_batch(x, context)
        mask = None
        if context_mask is not None:
            mask = validate_mask("context_mask", context_mask, context.shape[:-1])
        return attend(self.q(x)[:, None], self.k(context)[:, None], self.v(context)[:, None], mask)[:, 0]


def reference(module, x, context=None, *, context_mask=None):
    s = (x @ module.q.weight.T) @ (context @ module.k.weight.T).transpose(1, 2) / math.sqrt(module.q.out_features)
    if context_mask is not None:
        s = s.masked_fill(~context_mask[:, None, :], float("-inf"))
        empty = ~context_mask.any(-1)
        s = s.masked_fill(empty[:, None, None], 0.0)
    out = torch.softmax(s, -1) @ (context @ module.v.weight.T)
    if context_mask is not None:
        out = out.masked_fill(empty[:, None, None], 0.0)
    return out


SPEC = zoo.VariantSpec(
    name="example-dot",
    module=DotAttention,
    config=DotConfig,
    summary="single-head dot-product attention (a third-party example)",
    reference=reference,
    capabilities=zoo.Capabilities(self_attention=False, dropout=False, context_required=True),
)


@zoo.hookimpl
def zoo_register_variants(register):
    register(SPEC)

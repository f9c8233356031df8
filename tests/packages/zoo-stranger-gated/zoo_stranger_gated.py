"""Tanh-gated cross-attention, written against CONTRACT.md alone (plain torch, no zoo
toolkit), declaring no capabilities. It has no ``dropout`` field; ``context=None`` is
self-attention when the widths allow it. ``y = x + tanh(alpha) * attention(x, context)``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

import zoo


class GatedConfig(zoo.VariantConfig):
    variant: Literal["stranger-gated"] = "stranger-gated"
    query_dim: int = 16
    context_dim: int | None = None
    heads: int = 2
    dim_head: int = 8
    gate_init: float = 0.5


def _check(name, t, ndim, last):
    if not isinstance(t, torch.Tensor) or t.ndim != ndim or t.shape[-1] != last:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} must have shape ({', '.join(['B', 'N'][:ndim - 1])}, {last}), got {got}")


class GatedCrossAttention(nn.Module):
    def __init__(self, query_dim, context_dim=None, heads=2, dim_head=8, gate_init=0.5):
        super().__init__()
        self.query_dim, self.context_dim = query_dim, context_dim or query_dim
        self.heads, self.dim_head = heads, dim_head
        self.to_q = nn.Linear(query_dim, heads * dim_head, bias=False)
        self.to_k = nn.Linear(self.context_dim, heads * dim_head, bias=False)
        self.to_v = nn.Linear(self.context_dim, heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, query_dim)
        self.alpha = nn.Parameter(torch.tensor(float(gate_init)))

    def forward(self, x, context=None, *, context_mask=None):
        _check("x", x, 3, self.query_dim)
        if context is None:
            if self.context_dim != self.query_dim:
                raise ValueError(f"context=None needs context_dim == query_dim, got {self.context_dim} and "
                                 f"{self.query_dim}; pass a context of shape (B, M, {self.context_dim})")
            context = x
        _check("context", context, 3, self.context_dim)
        if context.shape[0] != x.shape[0]:
            raise ValueError(f"context has batch {context.shape[0]} but x has {x.shape[0]}")
        if context_mask is not None and (context_mask.dtype != torch.bool
                                         or tuple(context_mask.shape) != tuple(context.shape[:-1])):
            raise ValueError(f"context_mask must be bool of shape {tuple(context.shape[:-1])}, got "
                             f"{context_mask.dtype} {tuple(context_mask.shape)}")
        b, n, m, h = x.shape[0], x.shape[1], context.shape[1], self.heads
        q = self.to_q(x).view(b, n, h, -1).transpose(1, 2)
        k = self.to_k(context).view(b, m, h, -1).transpose(1, 2)
        v = self.to_v(context).view(b, m, h, -1).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.dim_head)
        if context_mask is not None:
            keep = context_mask[:, None, None, :]
            empty = ~keep.any(-1, keepdim=True)
            weights = torch.softmax(scores.masked_fill(~keep, float("-inf")).masked_fill(empty, 0.0), -1)
            out = (weights @ v).masked_fill(empty, 0.0)
        else:
            out = torch.softmax(scores, -1) @ v
        out = out.transpose(1, 2).reshape(b, n, h * self.dim_head)
        return x + torch.tanh(self.alpha) * self.to_out(out)


def reference(module, x, context=None, *, context_mask=None):
    """The same computation written out per head with explicit loops over heads."""
    c = x if context is None else context
    outs = []
    for i in range(module.heads):
        rows = slice(i * module.dim_head, (i + 1) * module.dim_head)
        q = x @ module.to_q.weight[rows].T
        k = c @ module.to_k.weight[rows].T
        v = c @ module.to_v.weight[rows].T
        s = q @ k.transpose(-1, -2) / math.sqrt(module.dim_head)
        if context_mask is not None:
            s = s.masked_fill(~context_mask[:, None, :], float("-inf"))
            empty = ~context_mask.any(-1)[:, None, None]
            s = s.masked_fill(empty, 0.0)
            outs.append((torch.softmax(s, -1) @ v).masked_fill(empty, 0.0))
        else:
            outs.append(torch.softmax(s, -1) @ v)
    attn = torch.cat(outs, -1) @ module.to_out.weight.T + module.to_out.bias
    return x + torch.tanh(module.alpha) * attn


@zoo.hookimpl
def zoo_register_variants(register):
    register(zoo.VariantSpec(
        name="stranger-gated",
        module=GatedCrossAttention,
        config=GatedConfig,
        summary="Tanh-gated cross-attention by a stranger (contract only, nothing declared).",
        reference=reference,
        examples=({"query_dim": 16, "context_dim": 12, "heads": 2, "dim_head": 4}, {"query_dim": 8}),
    ))

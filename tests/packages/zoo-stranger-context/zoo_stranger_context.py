"""Cross-attention that needs a context and drops attention weights in training, written
against CONTRACT.md alone (plain torch, no zoo toolkit), declaring no capabilities.
``forward(x)`` without a context raises ``ValueError``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

import zoo


class ContextConfig(zoo.VariantConfig):
    variant: Literal["stranger-context"] = "stranger-context"
    query_dim: int = 16
    context_dim: int | None = None
    heads: int = 2
    dim_head: int = 8
    dropout: float = 0.0


class NeedsContextAttention(nn.Module):
    def __init__(self, query_dim, context_dim=None, heads=2, dim_head=8, dropout=0.0):
        super().__init__()
        self.query_dim, self.context_dim = query_dim, context_dim or query_dim
        self.heads, self.dim_head, self.dropout = heads, dim_head, dropout
        self.to_q = nn.Linear(query_dim, heads * dim_head)
        self.to_kv = nn.Linear(self.context_dim, 2 * heads * dim_head)
        self.to_out = nn.Linear(heads * dim_head, query_dim)

    def forward(self, x, context=None, *, context_mask=None):
        if context is None:
            raise ValueError("context is required: this layer attends to a context of shape "
                             f"(B, M, {self.context_dim}); it has no self-attention")
        for name, t, width in (("x", x, self.query_dim), ("context", context, self.context_dim)):
            if not isinstance(t, torch.Tensor) or t.ndim != 3 or t.shape[-1] != width:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"{name} must have shape (B, L, {width}), got {got}")
        if context.shape[0] != x.shape[0]:
            raise ValueError(f"context has batch {context.shape[0]} but x has {x.shape[0]}")
        if context_mask is not None and (context_mask.dtype != torch.bool
                                         or tuple(context_mask.shape) != tuple(context.shape[:-1])):
            raise ValueError(f"context_mask must be bool of shape {tuple(context.shape[:-1])}, got "
                             f"{context_mask.dtype} {tuple(context_mask.shape)}")
        b, n, m, h = x.shape[0], x.shape[1], context.shape[1], self.heads
        q = self.to_q(x).view(b, n, h, -1).transpose(1, 2)
        k, v = self.to_kv(context).view(b, m, 2, h, -1).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.dim_head)
        empty = None
        if context_mask is not None:
            keep = context_mask[:, None, None, :]
            empty = ~keep.any(-1, keepdim=True)
            scores = scores.masked_fill(~keep, float("-inf")).masked_fill(empty, 0.0)
        weights = F.dropout(torch.softmax(scores, -1), self.dropout, self.training)
        out = weights @ v
        if empty is not None:
            out = out.masked_fill(empty, 0.0)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


def reference(module, x, context=None, *, context_mask=None):
    """Naive attention, one batch element and head at a time (eval: no dropout)."""
    hd = module.heads * module.dim_head
    q_all = x @ module.to_q.weight.T + module.to_q.bias
    kv = context @ module.to_kv.weight.T + module.to_kv.bias
    out = torch.zeros(x.shape[0], x.shape[1], hd, dtype=x.dtype, device=x.device)
    for bi in range(x.shape[0]):
        keep = None if context_mask is None else context_mask[bi]
        if keep is not None and not bool(keep.any()):
            continue  # nothing to attend: the attention term is zero
        for hi in range(module.heads):
            cols = slice(hi * module.dim_head, (hi + 1) * module.dim_head)
            kv_h = kv[bi].view(-1, 2, module.heads, module.dim_head)
            q, k, v = q_all[bi, :, cols], kv_h[:, 0, hi], kv_h[:, 1, hi]
            if keep is not None:
                k, v = k[keep], v[keep]
            out[bi, :, cols] = torch.softmax(q @ k.T / math.sqrt(module.dim_head), -1) @ v
    return out @ module.to_out.weight.T + module.to_out.bias


@zoo.hookimpl
def zoo_register_variants(register):
    register(zoo.VariantSpec(
        name="stranger-context",
        module=NeedsContextAttention,
        config=ContextConfig,
        summary="Cross-attention that needs a context, attention dropout in training (contract only).",
        reference=reference,
        examples=({"query_dim": 16, "context_dim": 12, "heads": 2, "dim_head": 4},
                  {"query_dim": 8, "dropout": 0.1}),
    ))

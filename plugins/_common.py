"""Pieces the built-in multi-head variants share: config fields and the naive oracle."""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import Tensor

from zoo import VariantConfig


class MultiHeadFields(VariantConfig):
    """Fields of diffusers' ``Attention(query_dim, cross_attention_dim, heads, dim_head, ...)``."""

    query_dim: int = Field(64, gt=0, description="Width of x, the queries (Dq).")
    context_dim: int | None = Field(
        None, gt=0, description="Width of the context (Dc); None means query_dim."
    )
    heads: int = Field(8, gt=0, description="Number of attention heads (h).")
    dim_head: int = Field(64, gt=0, description="Width of each head (d); inner width is h*d.")
    bias: bool = Field(False, description="Bias in the q/k/v projections.")
    out_bias: bool = Field(True, description="Bias in the output projection.")
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="Dropout on the output projection (training only)."
    )


def naive_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None) -> Tensor:
    """Textbook softmax attention, materialising the score matrix (for oracles only).

    ``q (..., h, N, d)``, ``k (..., h, M, d)``, ``v (..., h, M, dv)``, ``key_mask (..., M)``.
    Rows with nothing to attend give exactly zero.
    """
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if key_mask is not None:
        m = key_mask[..., None, None, :]
        scores = scores.masked_fill(~m, float("-inf"))
        empty = ~key_mask.any(-1)[..., None, None, None]
        scores = scores.masked_fill(empty, 0.0)
    probs = torch.softmax(scores, dim=-1)
    out = probs @ v
    if key_mask is not None:
        out = out.masked_fill(empty, 0.0)
    return out


def heads_view(t: Tensor, heads: int) -> Tensor:
    """``(..., L, h*d) -> (..., h, L, d)`` for the oracles (any number of leading dims)."""
    *lead, n, hd = t.shape
    return t.reshape(*lead, n, heads, hd // heads).transpose(-2, -3)


def heads_merge(t: Tensor) -> Tensor:
    """``(..., h, L, d) -> (..., L, h*d)``."""
    *lead, h, n, d = t.shape
    return t.transpose(-2, -3).reshape(*lead, n, h * d)


def linear(x: Tensor, layer: torch.nn.Linear) -> Tensor:
    """``x W^T + b`` written out, so oracles never call a module's forward."""
    out = x @ layer.weight.transpose(0, 1)
    if layer.bias is not None:
        out = out + layer.bias
    return out

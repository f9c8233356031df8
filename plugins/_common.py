"""Pieces the built-in multi-head variants share: config fields and the naive oracle."""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import Tensor, nn

from zoo.functional import merge_heads, validate_mask, validate_same_batch, validate_tensor

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


class MultiHeadBase(nn.Module):
    """Parameters and input checks shared by the built-in multi-head variants.

    Builds diffusers' ``Attention`` parameter names: ``to_q``, ``to_k``, ``to_v`` and
    ``to_out = [Linear, Dropout]``, so checkpoints move between the libraries.

    Args:
        query_dim, context_dim, heads, dim_head, bias, out_bias, dropout: as
            :class:`MultiHeadFields`.
        value_dim: input width of ``to_v`` (default: ``context_dim``; SelfDoc reads x).
        key_value: build ``to_k``/``to_v`` (False: they are ``None``, e.g. memory only).
    """

    def __init__(
        self,
        query_dim: int,
        context_dim: int | None = None,
        heads: int = 8,
        dim_head: int = 64,
        bias: bool = False,
        out_bias: bool = True,
        dropout: float = 0.0,
        *,
        value_dim: int | None = None,
        key_value: bool = True,
    ) -> None:
        super().__init__()
        self.query_dim, self.context_dim, self.heads = query_dim, context_dim or query_dim, heads
        inner = heads * dim_head
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        if key_value:
            self.to_k = nn.Linear(self.context_dim, inner, bias=bias)
            self.to_v = nn.Linear(value_dim or self.context_dim, inner, bias=bias)
        else:
            self.to_k = self.to_v = None
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim, bias=out_bias), nn.Dropout(dropout)])

    def _check_x(self, x: Tensor) -> None:
        validate_tensor("x", x, ndim=3, last_dim=self.query_dim, like=self.to_q.weight,
                        legend=f"(B, N, query_dim={self.query_dim})")

    def _check_sequence_context(self, x: Tensor, context: Tensor | None, context_mask: Tensor | None,
                                *, length: str = "M") -> Tensor:
        """Check ``x`` and a ``(B, length, Dc)`` context (``None``: self-attention over x)
        and its mask; return the tensor keys are computed from."""
        self._check_x(x)
        if context is None:
            if self.context_dim != self.query_dim:
                raise ValueError(
                    f"context is None (self-attention: context = x) but context_dim={self.context_dim} "
                    f"differs from query_dim={self.query_dim}; pass a context of width {self.context_dim}"
                )
            context = x
        else:
            validate_tensor("context", context, ndim=3, last_dim=self.context_dim, like=self.to_q.weight,
                            legend=f"(B, {length}, context_dim={self.context_dim})")
            validate_same_batch(x, context)
        if context_mask is not None:
            validate_mask("context_mask", context_mask, context.shape[:-1])
        return context

    def _project_out(self, heads_out: Tensor) -> Tensor:
        """``(B, h, N, d)`` attention result -> output projection and dropout."""
        return self.to_out[1](self.to_out[0](merge_heads(heads_out)))

"""Building blocks for variant authors: config fields, a multi-head base, the fused path.

A new multi-head variant is a config that subclasses :class:`MultiHeadFields`, a
layer that subclasses :class:`MultiHeadBase` and a ``forward`` of a few lines::

    class MyConfig(MultiHeadFields):
        variant: Literal["my-attention"] = "my-attention"

    class MyAttention(MultiHeadBase):
        def forward(self, x, context=None, *, context_mask=None):
            context = self.check_context(x, context, context_mask)
            q = split_heads(self.to_q(x), self.heads)
            k = split_heads(self.to_k(context), self.heads)
            v = split_heads(self.to_v(context), self.heads)
            return self.project_out(attend(q, k, v, context_mask))

The base validates inputs with clear ``ValueError`` messages and uses diffusers'
parameter names; :func:`attend` is the fused path with the zoo's zero-row rule.
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor, nn

from zoo.config import VariantConfig
from zoo.functional import (
    attend,
    merge_heads,
    split_heads,
    validate_mask,
    validate_same_batch,
    validate_tensor,
)

__all__ = [
    "MultiHeadFields",
    "MultiHeadBase",
    "attend",
    "split_heads",
    "merge_heads",
    "validate_tensor",
    "validate_mask",
    "validate_same_batch",
]


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

    def check_x(self, x: Tensor) -> None:
        validate_tensor("x", x, ndim=3, last_dim=self.query_dim, like=self.to_q.weight,
                        legend=f"(B, N, query_dim={self.query_dim})")

    def check_context(self, x: Tensor, context: Tensor | None, context_mask: Tensor | None,
                                *, length: str = "M") -> Tensor:
        """Check ``x`` and a ``(B, length, Dc)`` context (``None``: self-attention over x)
        and its mask; return the tensor keys are computed from."""
        self.check_x(x)
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

    def project_out(self, heads_out: Tensor) -> Tensor:
        """``(B, h, N, d)`` attention result -> output projection and dropout."""
        return self.to_out[1](self.to_out[0](merge_heads(heads_out)))

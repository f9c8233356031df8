"""Building blocks for variant authors: config fields, a multi-head base, the fused path.

A new multi-head variant is a config that subclasses [`MultiHeadFields`][zoo.nn.MultiHeadFields],
a layer that subclasses [`MultiHeadBase`][zoo.nn.MultiHeadBase] and a ``forward`` of a
few lines (``examples/fifty_lines.py`` is a complete one, oracle, spec and hook included):

```python
class MyConfig(MultiHeadFields):
    variant: Literal["my-attention"] = "my-attention"

class MyAttention(MultiHeadBase):
    def forward(self, x, context=None, *, context_mask=None):
        context = self.check_context(x, context, context_mask)
        q = split_heads(self.to_q(x), self.heads)
        k = split_heads(self.to_k(context), self.heads)
        v = split_heads(self.to_v(context), self.heads)
        return self.project_out(attend(q, k, v, context_mask))
```

The base validates inputs with clear ``ValueError`` messages and uses diffusers'
parameter names; ``attend`` (re-exported from [`zoo.functional`][zoo.functional]) is
the fused path with the zoo's rule for a query with nothing to attend (exactly zero).
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor, nn

from zoo.variant_config import VariantConfig
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
    "MultiHeadAttention",
    "bare_multihead",
    "attend",
    "split_heads",
    "merge_heads",
    "validate_tensor",
    "validate_mask",
    "validate_same_batch",
]


class MultiHeadFields(VariantConfig):
    """The config fields of a multi-head variant, named as diffusers' ``Attention`` arguments.

    Subclass it and add ``variant: Literal["<name>"]`` (and any field of your own);
    every field has a default, a constraint and a description (shown by the catalog
    and ``zoo schema``). Its field names are :class:`MultiHeadBase`'s arguments, so
    ``MultiHeadBase`` subclasses are built from the config as they are.
    """

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
    """Parameters and input checks shared by multi-head variants (built-in or not).

    Builds diffusers' ``Attention`` parameter names: ``to_q``, ``to_k``, ``to_v`` and
    ``to_out = [Linear, Dropout]``, so checkpoints move between the libraries. A
    subclass writes ``forward`` with :meth:`check_context`, the projections,
    ``attend`` and :meth:`project_out`.

    Args:
        query_dim: width of ``x`` (Dq).
        context_dim: width of the context (Dc); ``None`` means ``query_dim``.
        heads: number of heads (h).
        dim_head: width of each head (d); the inner width is ``h * d``.
        bias: bias in the q/k/v projections.
        out_bias: bias in the output projection.
        dropout: dropout after the output projection (training only).
        value_dim: input width of ``to_v`` (default: ``context_dim``; e.g. values read from x).
        key_value: build ``to_k``/``to_v`` (False: they are ``None``, for a variant
            that projects keys and values its own way).

    Attributes:
        query_dim, context_dim, heads, dim_head: the sizes above (``context_dim`` resolved).
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
        self.dim_head = dim_head
        inner = heads * dim_head
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        if key_value:
            self.to_k = nn.Linear(self.context_dim, inner, bias=bias)
            self.to_v = nn.Linear(value_dim or self.context_dim, inner, bias=bias)
        else:
            self.to_k = self.to_v = None
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim, bias=out_bias), nn.Dropout(dropout)])

    def check_x(self, x: Tensor) -> None:
        """Check that ``x`` is a floating ``(B, N, query_dim)`` tensor on the weights' device and dtype.

        Raises:
            ValueError: wrong rank, width, device or dtype, or an empty tensor.
            TypeError: not a floating-point tensor.
        """
        validate_tensor("x", x, ndim=3, last_dim=self.query_dim, like=self.to_q.weight,
                        legend=f"(B, N, query_dim={self.query_dim})")

    def check_context(self, x: Tensor, context: Tensor | None, context_mask: Tensor | None,
                                *, length: str = "M") -> Tensor:
        """Check ``x``, the context and its mask; return the tensor keys are computed from.

        Args:
            x: queries ``(B, N, query_dim)``.
            context: ``(B, length, context_dim)``, or ``None`` for self-attention over
                ``x`` (allowed only when ``context_dim == query_dim``).
            context_mask: optional bool ``(B, length)``, True = may be attended.
            length: the context length's letter in error messages.

        Returns:
            ``context``, or ``x`` when it is ``None``.

        Raises:
            ValueError: naming the argument, what was expected and what came.
        """
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
            validate_mask("context_mask", context_mask, context.shape[:-1], like=context)
        return context

    def project_out(self, heads_out: Tensor) -> Tensor:
        """Merge heads and project: ``(B, h, N, d)`` attention result -> ``(B, N, query_dim)``.

        Applies ``to_out[0]`` (the output projection) then ``to_out[1]`` (dropout).
        """
        return self.to_out[1](self.to_out[0](merge_heads(heads_out)))


class MultiHeadAttention(MultiHeadBase):
    """Plain multi-head attention on :class:`MultiHeadBase`'s parameters: queries from
    ``x``, keys and values from the context (``x`` when it is ``None``).

    A toolkit layer, not a registered variant: variants subclass it, or build it in a
    law to compare against the plain computation with the same weights (its state dict
    is any ``MultiHeadBase`` layer's with the same sizes).
    """

    def forward(self, x: Tensor, context: Tensor | None = None, *, context_mask: Tensor | None = None) -> Tensor:
        context = self.check_context(x, context, context_mask)
        q = split_heads(self.to_q(x), self.heads)
        k = split_heads(self.to_k(context), self.heads)
        v = split_heads(self.to_v(context), self.heads)
        return self.project_out(attend(q, k, v, context_mask))  # mask (B, M): shared by heads


def bare_multihead(m: nn.Module, x: Tensor, context: Tensor, *, values: Tensor | None = None, **_) -> Tensor:
    """What a user writes by hand for a :class:`MultiHeadBase` layer ``m``: ``F.linear``,
    views and one ``scaled_dot_product_attention`` call on ``m``'s weights (no validation,
    no mask); the bench's baseline (``zoo.BenchSpec(baseline=...)``).

    Args:
        m: a layer with ``to_q``, ``to_k``, ``to_v``, ``to_out.0`` and ``heads``.
        x: queries ``(B, N, Dq)``.
        context: what ``to_k`` reads ``(B, M, Dc)``.
        values: what ``to_v`` reads (default ``context``; e.g. ``x`` for values read from x).
    """
    import torch.nn.functional as F

    def heads(t: Tensor) -> Tensor:
        return t.unflatten(-1, (m.heads, -1)).transpose(1, 2)

    q = heads(F.linear(x, m.to_q.weight, m.to_q.bias))
    k = heads(F.linear(context, m.to_k.weight, m.to_k.bias))
    v = heads(F.linear(context if values is None else values, m.to_v.weight, m.to_v.bias))
    o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(-2)
    return F.linear(o, m.to_out[0].weight, m.to_out[0].bias)

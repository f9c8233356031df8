"""Naive float64 oracles for variant authors: every step written out.

An oracle (``VariantSpec.reference``) recomputes a layer's output from the layer's
own parameters without calling its ``forward``. These helpers are deliberately
plain: they materialise the score matrix and apply the zoo's rule for a query
with nothing to attend (an attention term of exactly zero) the obvious way, so
they can serve as an independent check of the fused path.

The oracle of a [`zoo.nn.MultiHeadBase`][zoo.nn.MultiHeadBase] layer with plain
multi-head attention:

```python
from zoo.oracle import heads_merge, heads_view, linear, naive_attention

def reference(module, x, context=None, *, context_mask=None):
    c = x if context is None else context
    q, k, v = (heads_view(linear(t, lin), module.heads)
               for t, lin in ((x, module.to_q), (c, module.to_k), (c, module.to_v)))
    return linear(heads_merge(naive_attention(q, k, v, context_mask)), module.to_out[0])
```
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["naive_attention", "heads_view", "heads_merge", "linear", "multihead_reference"]


def naive_attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None) -> Tensor:
    """Textbook softmax attention, materialising the score matrix (for oracles only).

    Args:
        q: queries ``(..., h, N, d)``.
        k: keys ``(..., h, M, d)`` (any dim broadcasting against ``q``'s, e.g. one
            shared head ``(..., 1, M, d)``).
        v: values ``(..., h, M, dv)``.
        key_mask: optional bool ``(..., M)``, True = may be attended; the same for
            every head and query.

    Returns:
        ``(..., h, N, dv)``; a query whose keys are all masked gets exactly zero
        (the zoo's rule, never NaN).
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
    """Split heads: ``(..., L, h*d) -> (..., h, L, d)`` (any number of leading dims).

    Args:
        t: a projection's output, heads side by side in the last axis.
        heads: the number of heads (h); must divide the last axis.
    """
    *lead, n, hd = t.shape
    if hd % heads:
        raise ValueError(f"heads_view: the last axis ({hd}) must be heads * dim_head, but heads={heads} "
                         f"does not divide it; pass the layer's own number of heads")
    return t.reshape(*lead, n, heads, hd // heads).transpose(-2, -3)


def heads_merge(t: Tensor) -> Tensor:
    """Merge heads, the inverse of :func:`heads_view`: ``(..., h, L, d) -> (..., L, h*d)``."""
    *lead, h, n, d = t.shape
    return t.transpose(-2, -3).reshape(*lead, n, h * d)


def linear(x: Tensor, layer: torch.nn.Linear) -> Tensor:
    """``x W^T + b`` with ``layer``'s parameters, written out so oracles never call its forward.

    Args:
        x: ``(..., in_features)``.
        layer: the ``torch.nn.Linear`` whose weight (and bias, if any) to apply.
    """
    out = x @ layer.weight.transpose(0, 1)
    if layer.bias is not None:
        out = out + layer.bias
    return out


def multihead_reference(module: torch.nn.Module, x: Tensor, context: Tensor | None = None, *,
                        context_mask: Tensor | None = None, values: Tensor | None = None) -> Tensor:
    """The oracle of plain multi-head attention on a :class:`zoo.nn.MultiHeadBase` layer's
    parameters (``to_q``, ``to_k``, ``to_v``, ``to_out.0``, ``heads``): every step written out.

    Args:
        module: the layer whose parameters to use (its ``forward`` is never called).
        x: queries ``(B, N, Dq)``.
        context: ``(B, M, Dc)``; ``None`` means ``x``.
        context_mask: optional bool ``(B, M)``, True = may be attended.
        values: what ``to_v`` reads (default: the context).
    """
    c = x if context is None else context
    v_in = c if values is None else values
    h = module.heads
    q, k, v = (heads_view(linear(t, lin), h) for t, lin in ((x, module.to_q), (c, module.to_k), (v_in, module.to_v)))
    return linear(heads_merge(naive_attention(q, k, v, context_mask)), module.to_out[0])

"""Naive float64 oracles for variant authors: every step written out.

An oracle (``VariantSpec.reference``) recomputes a layer's output from the layer's
own parameters without calling its ``forward``. These helpers are deliberately
plain: they materialise the score matrix and apply the zoo's rule for a query
with nothing to attend (an attention term of exactly zero) the obvious way, so
they can serve as an independent check of the fused path.

Example::

    from zoo.oracle import heads_merge, heads_view, linear, naive_attention

    def reference(module, x, context=None, *, context_mask=None):
        c = x if context is None else context
        q, k, v = (heads_view(linear(t, lin), module.heads)
                   for t, lin in ((x, module.to_q), (c, module.to_k), (c, module.to_v)))
        return linear(heads_merge(naive_attention(q, k, v, context_mask)), module.to_out[0])
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["naive_attention", "heads_view", "heads_merge", "linear"]


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

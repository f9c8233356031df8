"""Bare baselines: what a user would write by hand on ``scaled_dot_product_attention``.

Each baseline is a plain function ``baseline(module, x, context) -> Tensor`` that
reads the weights of a zoo layer by their contract names (``to_q``, ``to_k``,
``to_v``, ``to_out.0``, ``memory_k``, ``memory_v``, ``to_scale_shift``) and does the
same mathematics with nothing but ``F.linear``, views and one SDPA call: no
validation, no masks, no modules. Because the weights are *shared* (the very same
tensors), gradients flow into the same parameters and the two outputs can be
compared exactly (``tests/test_bench.py`` does, in float64 and float32).

The baselines deliberately take the context without a mask: the benchmark measures
the common, unmasked call. The zoo layer must be as fast as this on that call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BASELINES", "baseline_for", "cross", "selfdoc", "persistent", "retro", "film"]


def _heads(t: Tensor, h: int) -> Tensor:
    b, n, _ = t.shape
    return t.view(b, n, h, -1).transpose(1, 2)


def _merge(t: Tensor) -> Tensor:
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)


def _lin(t: Tensor, layer: torch.nn.Linear) -> Tensor:
    return F.linear(t, layer.weight, layer.bias)


def _out(m) -> torch.nn.Linear:
    return m.to_out[0]


def cross(m, x: Tensor, context: Tensor) -> Tensor:
    """Multi-head cross-attention, diffusers' ``Attention`` written out."""
    h = m.config.heads
    q = _heads(_lin(x, m.to_q), h)
    k = _heads(_lin(context, m.to_k), h)
    v = _heads(_lin(context, m.to_v), h)
    return _lin(_merge(F.scaled_dot_product_attention(q, k, v)), _out(m))


def selfdoc(m, x: Tensor, context: Tensor) -> Tensor:
    """SelfDoc: queries and values from ``x``, keys from ``context`` (N == M)."""
    h = m.config.heads
    q = _heads(_lin(x, m.to_q), h)
    k = _heads(_lin(context, m.to_k), h)
    v = _heads(_lin(x, m.to_v), h)
    return _lin(_merge(F.scaled_dot_product_attention(q, k, v)), _out(m))


def persistent(m, x: Tensor, context: Tensor) -> Tensor:
    """SDPA over the persistent memory concatenated with the context's keys/values
    (memory first, as x-transformers; the order does not change the result)."""
    h = m.config.heads
    b = x.shape[0]
    q = _heads(_lin(x, m.to_q), h)
    k = _heads(_lin(context, m.to_k), h)
    v = _heads(_lin(context, m.to_v), h)
    k = torch.cat([m.memory_k.unsqueeze(0).expand(b, -1, -1, -1), k], dim=2)
    v = torch.cat([m.memory_v.unsqueeze(0).expand(b, -1, -1, -1), v], dim=2)
    return _lin(_merge(F.scaled_dot_product_attention(q, k, v)), _out(m))


def retro(m, x: Tensor, context: Tensor) -> Tensor:
    """RETRO's chunked cross-attention, the paper's listing (Borgeaud et al., 2021, App. B).

    Shift the queries left by ``chunk_size - 1`` (zero-padding the end), fold the
    chunks into the batch, attend each chunk to its ``K*R`` neighbour tokens in one
    SDPA call, unfold, and shift back (zero-padding the start).
    """
    h, cs = m.config.heads, m.config.chunk_size
    b, n, _ = x.shape
    _, L, K, R, dc = context.shape
    q = _lin(x, m.to_q)  # (b, n, h*d)
    q = F.pad(q[:, cs - 1 : L * cs], (0, 0, 0, cs - 1))  # (b, L*cs, h*d): attending positions
    q = _heads(q.reshape(b * L, cs, -1), h)  # (b*L, h, cs, d)
    c = context.reshape(b * L, K * R, dc)
    k = _heads(_lin(c, m.to_k), h)
    v = _heads(_lin(c, m.to_v), h)
    o = _lin(_merge(F.scaled_dot_product_attention(q, k, v)), _out(m))  # (b*L, cs, Dq)
    o = o.reshape(b, L * cs, -1)
    return F.pad(o, (0, 0, cs - 1, n - L * cs))[:, :n]


def film(m, x: Tensor, context: Tensor) -> Tensor:
    """FiLM: ``(1 + gamma) * x + beta`` from the mean-pooled context."""
    z = context.mean(dim=1) if context.ndim == 3 else context
    gamma, beta = _lin(z, m.to_scale_shift).unsqueeze(1).chunk(2, dim=-1)
    if getattr(m.config, "residual", True):
        return x * (1 + gamma) + beta
    return x * gamma + beta


BASELINES: dict[str, Callable[..., Tensor]] = {
    "cross": cross,
    "selfdoc": selfdoc,
    "persistent": persistent,
    "retro": retro,
    "film": film,
}


def baseline_for(name: str) -> Callable[..., Tensor] | None:
    """The bare baseline of a registered variant, or ``None`` when there is none."""
    return BASELINES.get(name)

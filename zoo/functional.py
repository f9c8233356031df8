"""The shared pieces of every attention layer: input validation and the fused path.

Validation helpers raise ``ValueError`` naming the argument, what was expected,
what came and how to fix it: never ``assert`` (it vanishes under ``python -O``),
never a crash deep inside torch.

:func:`attend` is the one fused path every attention variant runs on:
``torch.nn.functional.scaled_dot_product_attention`` (a flash kernel on CPU and
CUDA that never materialises the N x M score matrix), with the zoo's rule for a
query that has nothing to attend: its attention term is exactly zero, never NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "attend",
    "split_heads",
    "merge_heads",
    "validate_tensor",
    "validate_mask",
    "validate_same_batch",
]


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def validate_tensor(
    name: str,
    t: object,
    *,
    ndim: int | Sequence[int],
    last_dim: int | None = None,
    like: Tensor | None = None,
    legend: str = "",
) -> Tensor:
    """Check that ``t`` is a floating tensor of rank ``ndim`` whose last axis is ``last_dim``.

    ``like`` (usually a weight) fixes the dtype and device the tensor must have.
    ``legend`` spells the expected shape, e.g. ``"(B, N, query_dim=64)"``.
    """
    ranks = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {legend}, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor (float32, float64, bfloat16, float16), "
            f"got dtype {t.dtype}; convert it with {name}.float()"
        )
    if t.ndim not in ranks:
        raise ValueError(
            f"{name} must have {' or '.join(map(str, ranks))} dimensions {legend}, "
            f"got shape {_shape(t)}"
        )
    if last_dim is not None and t.shape[-1] != last_dim:
        raise ValueError(
            f"{name} must have last dimension {last_dim} {legend}, got shape {_shape(t)}; "
            f"check the layer's config (query_dim/context_dim) against your data"
        )
    if t.numel() == 0:
        raise ValueError(
            f"{name} is empty: shape {_shape(t)}; every dimension must be at least 1 "
            f"(drop empty batches before calling the layer)"
        )
    if like is not None:
        if t.device != like.device:
            raise ValueError(
                f"{name} is on {t.device} but the layer's weights are on {like.device}; "
                f"move one of them (module.to({t.device!s}) or {name}.to({like.device!s}))"
            )
        if t.dtype != like.dtype:
            raise ValueError(
                f"{name} has dtype {t.dtype} but the layer's weights are {like.dtype}; "
                f"cast one of them (module.to({t.dtype}) or {name}.to({like.dtype}))"
            )
    return t


def validate_same_batch(x: Tensor, context: Tensor) -> None:
    if context.shape[0] != x.shape[0]:
        raise ValueError(
            f"context has batch size {context.shape[0]} but x has {x.shape[0]}: "
            f"x {_shape(x)}, context {_shape(context)}"
        )


def validate_mask(
    name: str, mask: object, expected: Sequence[int], legend: str = "", *, like: Tensor | None = None
) -> Tensor:
    """Check a boolean mask (True = may be attended) against its expected shape.

    ``like`` (the context, or a weight) fixes the device the mask must be on.
    """
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a bool tensor of shape {tuple(expected)}, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise ValueError(
            f"{name} must have dtype torch.bool (True = may be attended), got {mask.dtype}; "
            f"for a 0/1 mask use {name}.bool()"
        )
    if tuple(mask.shape) != tuple(expected):
        raise ValueError(
            f"{name} must have shape {tuple(expected)} {legend}(context.shape[:-1]), "
            f"got {tuple(mask.shape)}"
        )
    if like is not None:
        _same_device(name, mask, like)
    return mask


def _same_device(name: str, t: Tensor, like: Tensor, what: str = "the layer's inputs") -> None:
    if t.device != like.device:
        raise ValueError(
            f"{name} is on {t.device} but {what} are on {like.device}; "
            f"move it with {name}.to({str(like.device)!r})"
        )


def split_heads(t: Tensor, heads: int) -> Tensor:
    """``(B, L, h*d) -> (B, h, L, d)`` (contiguous ``(h d)`` blocks, as diffusers)."""
    b, n, _ = t.shape
    return t.view(b, n, heads, -1).transpose(1, 2)


def merge_heads(t: Tensor) -> Tensor:
    """``(B, h, L, d) -> (B, L, h*d)``."""
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_mask: Tensor | None = None,
    *,
    dropout_p: float = 0.0,
    enable_gqa: bool = False,
) -> Tensor:
    """Scaled dot-product attention on the fused path, with zero for empty rows.

    Args:
        q: ``(..., h, N, d)``.
        k: ``(..., h_kv, M, d)``; ``h_kv == h`` unless ``enable_gqa``.
        v: ``(..., h_kv, M, d_v)``.
        key_mask: bool ``(..., M)`` where ``...`` are q's leading dims *before* the head
            axis (e.g. ``(B, M)`` for ``q (B, h, N, d)``); True = may be attended, shared
            by every head and query of that batch element; ``None`` attends to everything.
        dropout_p: attention dropout (pass 0.0 in eval).
        enable_gqa: grouped-query attention: ``h_kv`` divides ``h`` and query head ``i``
            reads key/value head ``i // (h // h_kv)``, without repeating K/V in memory
            (SDPA's ``enable_gqa``).

    Returns:
        ``(..., h, N, d_v)``. Where ``key_mask`` leaves nothing to attend, the result
        is exactly zero (forward) with zero gradient (backward): such rows are given
        a harmless all-True mask for the kernel and zeroed afterwards, so neither
        the kernel version nor the device can turn them into NaN.

        Non-finite input gives NaN output, the same with and without a mask and
        whatever kernel runs: a query row holding NaN or inf gives NaN in that row;
        NaN or inf anywhere in one batch element's keys or values (masked positions
        included) gives NaN in that element's whole output. (The fused kernels do
        not agree on this by themselves: without a mask, some return finite rows.)

    Raises:
        ValueError: ``k``, ``v`` or ``key_mask`` on another device than ``q``.
    """
    for name, t in (("k", k), ("v", v), ("key_mask", key_mask)):
        if t is not None:
            _same_device(name, t, q, "the queries")
    gqa = {"enable_gqa": True} if enable_gqa else {}  # the keyword exists from torch 2.5
    if key_mask is None:
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, **gqa)
        return _propagate_nonfinite(out, q, k, v)
    empty = ~key_mask.any(dim=-1)  # (...,)
    # Eagerly, skip the fix-up when no row is empty (the usual case: one cheap sync).
    # Under torch.compile, always apply it so the graph has no data-dependent branch.
    any_empty = torch.compiler.is_compiling() or bool(empty.any())
    if any_empty:
        key_mask = key_mask | empty.unsqueeze(-1)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=key_mask[..., None, None, :], dropout_p=dropout_p, **gqa
    )
    if any_empty:
        out = out.masked_fill(empty[..., None, None, None], 0.0)
    return _propagate_nonfinite(out, q, k, v)


def _propagate_nonfinite(out: Tensor, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Add zero, or NaN where an input was not finite (see :func:`attend`).

    ``amax(...) * 0`` is 0 for finite values, NaN for NaN or +-inf; ``amax`` never
    overflows (a sum of large float16 values would), and the term is computed
    without autograd, so gradients are unchanged. On the CPU (eagerly) one sum of
    each input (in its own dtype, read as float32) decides first whether anything is not finite: the usual case
    then costs three fast reductions and no pass over ``out``. Elsewhere the term
    is always added (no host sync, no data-dependent branch under torch.compile).
    """
    with torch.no_grad():
        if out.device.type == "cpu" and not torch.compiler.is_compiling():
            # sums in the inputs' own dtype (accumulated in float32 for bfloat16/float16): on the CPU
            # ``sum(dtype=torch.float32)`` of a bfloat16 tensor is ~50x slower than ``sum()``
            total = q.sum().float() + k.sum().float() + v.sum().float()
            if bool(torch.isfinite(total)):  # a large finite sum overflowing only takes the exact path
                return out
        poison = q.amax(dim=-1, keepdim=True).mul_(0)  # (..., h, N, 1)
        poison = poison + k.amax(dim=(-3, -2, -1), keepdim=True).mul_(0)  # (..., 1, 1, 1)
        poison = poison + v.amax(dim=(-3, -2, -1), keepdim=True).mul_(0)
    return out + poison.to(out.dtype)

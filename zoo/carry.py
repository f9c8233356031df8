"""What :func:`zoo.swap` carries from a replaced module into the zoo layer (``init="carry"``).

Every weight whose name and shape match is copied. A key/value projection with fewer
heads than the replaced module's (a grouped-query layer) gets the replaced module's
heads mean-pooled over each group (Ainslie et al. 2023, Sec. 2.1): for ``heads = h`` and
``g`` key/value heads, row block ``j`` of the new ``to_k.weight`` (and bias) is the mean of
the old blocks ``j*h/g ... (j+1)*h/g - 1``; the same for ``to_v``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from zoo.swapping import SwapTarget

__all__ = ["carry", "pool_heads", "hooks"]


def pool_heads(tensor: Tensor, shape: torch.Size, dim_head: int) -> Tensor | None:
    """``heads`` key/value heads (row blocks of ``dim_head``) mean-pooled to the fewer heads
    ``shape`` has, group by group (Ainslie et al. 2023, Sec. 2.1); ``None`` when the
    shapes are not such a pair."""
    rows, new_rows = tensor.shape[0], shape[0]
    if tuple(tensor.shape[1:]) != tuple(shape[1:]) or dim_head < 1 or rows % dim_head or new_rows % dim_head:
        return None
    heads, kv_heads = rows // dim_head, new_rows // dim_head
    if not 0 < kv_heads < heads or heads % kv_heads:
        return None
    grouped = tensor.detach().reshape(kv_heads, heads // kv_heads, dim_head, *tensor.shape[1:])
    return grouped.mean(dim=1).reshape(shape)


def carry(layer: nn.Module, target: SwapTarget, init: str) -> tuple[list[str], list[str], list[str], list[str]]:
    """Copy the target's weights into ``layer``: ``(carried, initialised, dropped, notes)``."""
    own = layer.state_dict()
    carried, dropped, notes, pooled = [], [], [], []
    with torch.no_grad():
        for name, tensor in (target.weights.items() if init == "carry" else ()):
            if name in own and own[name].shape == tensor.shape:
                own[name].copy_(tensor.detach().to(own[name].dtype))
                carried.append(name)
            elif name in own and name.startswith(("to_k.", "to_v.")) and (
                    mean := pool_heads(tensor, own[name].shape, target.dim_head)) is not None:
                own[name].copy_(mean.to(own[name].dtype))
                carried.append(name)
                pooled.append((name, tensor.shape[0] // target.dim_head, own[name].shape[0] // target.dim_head))
            else:
                dropped.append(name)
        for name in target.zero_init:
            if name in own and name not in carried:
                own[name].zero_()
                notes.append(f"{name} starts at zero (an identity position: the module computes as before)")
    if pooled:
        names = sorted({n.split(".")[0] for n, _, _ in pooled})
        _, heads, kv = pooled[0]
        notes.append(f"{' and '.join(names)}: {heads} heads mean-pooled to {kv} key/value heads, groups of "
                     f"{heads // kv} (Ainslie et al. 2023)")
    params = [n for n, _ in layer.named_parameters()]
    initialised = [n for n in params if n not in carried]
    fresh = [n for n in initialised if n not in target.zero_init]
    if init == "fresh":
        notes.append("init='fresh': nothing carried, every weight is the variant's own initialisation")
    elif fresh:
        notes.append(f"new, the variant's own initialisation (the replaced module has no counterpart): {', '.join(fresh)}")
    return carried, initialised, dropped, notes


def hooks(module: nn.Module) -> int:
    return sum(len(getattr(module, name, None) or {}) for name in (
        "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))

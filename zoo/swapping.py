"""``zoo.swap``: put a zoo variant in place of the attention modules of another library's model.

The core knows no library and no variant. *Adapters* (registered through the hook
:func:`zoo.hookspecs.zoo_register_adapters`, the built-in ones for diffusers and
transformers exactly like a third party's) recognise the attention modules of their
library and say, for each one, its widths and heads, its q/k/v/output weights under
the zoo's (diffusers') parameter names, and how to wrap a zoo layer so that it takes
the replaced module's call signature. The core then:

1. resolves the variant (a name, a mapping with ``"variant"``, or a config) and the
   overrides;
2. finds the targets (``where``: ``"cross"``, ``"self"`` or ``"all"``) in model order;
3. builds one zoo layer per target with :func:`zoo.create`, refuses a variant that
   cannot serve there (its capabilities, then one tiny probe forward whose
   ``ValueError`` is reported), carries every weight whose name and shape match,
   lets the layer initialise what it adds (:meth:`init_for_swap`, optional), and
   wraps it;
4. only when every target succeeded, puts the replacements into the model.

So on any error the model is untouched.

Two optional layer members let a variant say how it stands in for an attention
branch (neither is required; the toolkit's layers need none):

- ``init_for_swap(self) -> None``: called after the carried-over weights are loaded,
  to make what the variant adds start close to the module it replaces (for example
  zero values for extra memory slots).
- ``output_includes_x: bool``: True when ``forward(x, ...)`` returns ``x`` plus an
  update (a residual modulation such as ``(1 + gamma) * x + beta``). The replaced
  module's output is then ``forward(x, ...) - x``, since the model adds its own
  residual. When a layer does not say, a freshly built one that returns ``x`` exactly
  (a residual block that starts as the identity, e.g. behind a zero gate) is taken
  as such; any other residual layer must declare it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel
from torch import Tensor, nn

from zoo.errors import short_list

__all__ = ["Adapter", "SwapTarget", "SwapReport", "swap", "call_layer", "keep_mask", "GEOMETRY"]

WHERE = ("cross", "self", "all")
GEOMETRY = ("query_dim", "context_dim", "heads", "dim_head", "bias", "out_bias", "dropout")
"""Config fields an adapter reads from the replaced module (each used when the variant's config has it)."""

_ATTENTION_LIKE = re.compile(r"attn|attention", re.I)


@dataclass
class SwapTarget:
    """What an adapter reports about one attention module it recognises.

    Attributes:
        kind: ``"cross"`` (keys and values from a context) or ``"self"``.
        query_dim, context_dim, heads, dim_head, bias, out_bias, dropout: the module's
            geometry,
            as the fields of :class:`zoo.nn.MultiHeadFields`.
        weights: the module's tensors under the zoo layer's parameter names
            (``"to_q.weight"``, ``"to_k.bias"``, ``"to_out.0.weight"``, ...). Each one the
            zoo layer has with the same shape is carried over; the rest are reported
            as dropped.
        wrap: ``wrap(layer) -> nn.Module``: the replacement, taking the replaced
            module's call signature and calling the zoo layer (see :func:`call_layer`).
        problem: why this module cannot be replaced (it is then reported, never
            changed); ``None`` when it can.
        notes: facts the report should carry (e.g. "to_out.0 set to the identity").
        dtype, device: those of the replaced module's parameters.
        training: the replaced module's training flag.
    """

    kind: str
    query_dim: int
    context_dim: int
    heads: int
    dim_head: int
    wrap: Callable[[nn.Module], nn.Module]
    bias: bool = False
    out_bias: bool = True
    dropout: float = 0.0
    weights: Mapping[str, Tensor] = field(default_factory=dict)
    problem: str | None = None
    notes: tuple[str, ...] = ()
    dtype: torch.dtype = torch.float32
    device: torch.device | str = "cpu"
    training: bool = False

    def geometry(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in GEOMETRY}


class Adapter:
    """Base class of an adapter: recognises one library's attention modules.

    Subclasses set :attr:`name` and implement :meth:`match`. An adapter must not
    import its library until it sees one of its modules (``type(module).__module__``
    tells), so ``import zoo`` stays light.
    """

    name: str = "adapter"

    def match(self, path: str, module: nn.Module) -> SwapTarget | None:
        """The :class:`SwapTarget` for ``module`` (at dotted ``path``), or ``None``
        when this adapter does not know it. Descendants of a matched module are not
        visited."""
        raise NotImplementedError


@dataclass
class SwapReport:
    """What :func:`zoo.swap` did.

    Attributes:
        variant: the canonical name of the variant put in.
        where: ``"cross"``, ``"self"`` or ``"all"``.
        swapped: dotted paths of the replaced modules, in model order.
        carried: per path, the zoo layer's parameters loaded from the replaced module.
        initialised: per path, the zoo layer's parameters that are new (the variant's
            own initialisation, or its ``init_for_swap``).
        dropped: per path, weights of the replaced module the zoo layer has no place for.
        notes: per path, what else the adapter did.
        adapters: per path, the name of the adapter that matched it.
    """

    variant: str
    where: str
    swapped: list[str] = field(default_factory=list)
    carried: dict[str, list[str]] = field(default_factory=dict)
    initialised: dict[str, list[str]] = field(default_factory=dict)
    dropped: dict[str, list[str]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    adapters: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"swapped {len(self.swapped)} module(s) to {self.variant!r} (where={self.where!r})"]
        for path in self.swapped:
            lines.append(f"  {path} [{self.adapters[path]}]")
            for label, table in (("carried", self.carried), ("initialised", self.initialised),
                                 ("dropped", self.dropped), ("note", self.notes)):
                if table.get(path):
                    lines.append(f"    {label}: {', '.join(table[path])}")
        return "\n".join(lines)


def call_layer(layer: nn.Module, x: Tensor, context: Tensor | None, context_mask: Tensor | None) -> Tensor:
    """Call a zoo layer as an attention *branch*: its output minus ``x`` when the layer
    says its output includes ``x`` (``output_includes_x``), as is. Adapters' wrappers
    call this, so the model's own residual is not added twice."""
    out = layer(x, context, context_mask=context_mask)
    if getattr(layer, "output_includes_x", False):
        out = out - x
    return out


def keep_mask(mask: Tensor | None, *, batch: int, length: int, name: str = "attention_mask") -> Tensor | None:
    """Another library's mask over the keys -> the zoo's ``context_mask``: bool ``(B, M)``, True = may be attended.

    Accepts a bool mask (True = keep), an integer mask (non-zero = keep) or an additive
    float mask (``0`` = keep; ``-inf``, ``finfo.min`` or anything below ``-1e3`` =
    blocked), of shape ``(B, M)``, ``(B, 1, M)``, ``(B, N, M)``, ``(B, 1, 1, M)`` or
    ``(B, h, N, M)`` as long as it is the same for every query and head (a batch of 1
    is broadcast). A soft bias or a per-query mask cannot be expressed as a zoo mask:
    ``ValueError`` (the value checks are skipped while ``torch.compile`` traces).
    """
    if mask is None:
        return None
    checking = not torch.compiler.is_compiling()
    if mask.dtype == torch.bool:
        keep = mask
    elif mask.is_floating_point():
        if checking and bool(((mask != 0) & (mask > -1e3)).any()):
            raise ValueError(
                f"{name} is an additive bias with values other than 0 (keep) and large negatives "
                f"(blocked); a zoo layer takes a keep/drop mask only, so a soft bias cannot be carried over"
            )
        keep = mask > -1e3
    else:
        keep = mask != 0
    if keep.ndim not in (2, 3, 4):
        raise ValueError(f"{name}: expected (B, M), (B, N, M) or (B, h, N, M), got shape {tuple(mask.shape)}")
    if keep.ndim > 2:
        first = keep[:, :1, :1] if keep.ndim == 4 else keep[:, :1]
        if checking and not bool((keep == first).all()):
            raise ValueError(
                f"{name} of shape {tuple(mask.shape)} differs between queries or heads; a zoo layer "
                "takes one mask over the keys per batch element, (B, M)"
            )
        keep = keep.reshape(keep.shape[0], -1, keep.shape[-1])[:, 0]
    if keep.shape[0] == 1 and batch != 1:
        keep = keep.expand(batch, -1)
    if tuple(keep.shape) != (batch, length):
        raise ValueError(f"{name}: expected a mask over {length} keys for a batch of {batch}, "
                         f"got shape {tuple(mask.shape)}")
    return keep


def _resolve(variant: Any) -> tuple[Any, dict[str, Any]]:
    """``(spec, fields the user chose)`` from a name, a mapping, a config or a spec."""
    from zoo.registry import get_variant
    from zoo.spec import VariantSpec

    if isinstance(variant, VariantSpec):
        return variant, {}
    if isinstance(variant, str):
        return get_variant(variant), {}
    if isinstance(variant, BaseModel) and "variant" in type(variant).model_fields:
        chosen = {k: getattr(variant, k) for k in variant.model_fields_set if k != "variant"}
        return get_variant(variant.variant), chosen
    if isinstance(variant, Mapping):
        if not isinstance(variant.get("variant"), str):
            raise ValueError(
                f"zoo.swap: a mapping must name its variant under the key 'variant' (see `zoo list`); "
                f"got keys {short_list(sorted(map(str, variant)))}"
            )
        return get_variant(variant["variant"]), {k: v for k, v in variant.items() if k != "variant"}
    raise ValueError(
        f"zoo.swap expects a variant name, a mapping with 'variant' or a config instance; "
        f"got {type(variant).__name__}"
    )


def _find(model: nn.Module, adapters: list[Adapter]) -> list[tuple[str, SwapTarget, Adapter]]:
    """Every module some adapter recognises, in model order; matched subtrees are skipped."""
    found: list[tuple[str, SwapTarget, Adapter]] = []
    skip: list[str] = []
    for path, module in model.named_modules():
        if not path or any(path.startswith(prefix + ".") for prefix in skip):
            continue
        for adapter in adapters:
            target = adapter.match(path, module)
            if target is not None:
                found.append((path, target, adapter))
                skip.append(path)
                break
    return found


def _nothing_matched(model: nn.Module, found: list, where: str) -> str:
    like = [f"{p} ({type(m).__name__})" for p, m in model.named_modules()
            if p and (_ATTENTION_LIKE.search(type(m).__name__) or _ATTENTION_LIKE.search(p.rsplit(".", 1)[-1])
                    or isinstance(m, nn.MultiheadAttention))]
    kinds = sorted({t.kind for _, t, _ in found})
    msg = f"zoo.swap found no {'' if where == 'all' else where + '-'}attention module to replace in {type(model).__name__}"
    if kinds:
        msg += f"; it has {' and '.join(kinds)}-attention modules: pass where={kinds[0]!r} or where='all'"
    elif like:
        shown = ", ".join(like[:12]) + (f", ... ({len(like)} in all)" if len(like) > 12 else "")
        msg += (f"; attention-like modules it has, which no registered adapter knows: {shown}. "
                "Write an adapter (hook zoo_register_adapters) to swap them")
    else:
        msg += "; it has no attention-like module at all (no module or class named *attention*/*attn*)"
    return msg


def _cannot_serve(spec: Any, layer: nn.Module, target: SwapTarget) -> str | None:
    """Why this variant cannot stand in for ``target`` (capabilities, then a probe)."""
    caps = spec.capabilities
    if target.kind == "cross" and caps.equal_lengths:
        return (f"{spec.name!r} needs x and the context to index the same items (equal lengths), "
                "but a cross-attention's context has its own length")
    if target.kind == "self" and not caps.self_attention:
        return f"{spec.name!r} needs a context; a self-attention module has none"
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, target.query_dim, generator=gen)
    context = torch.randn(2, 5, target.context_dim, generator=gen) if target.kind == "cross" else None
    try:
        with torch.no_grad():
            out = call_layer(layer, x, context, None)
    except ValueError as exc:
        return f"{spec.name!r} refuses the inputs of a {target.kind}-attention (x (B, N, Dq), context (B, M, Dc)): {exc}"
    if not isinstance(out, Tensor) or out.shape != x.shape:
        return f"{spec.name!r} returned {getattr(out, 'shape', type(out).__name__)} for x of shape {tuple(x.shape)}"
    if not hasattr(layer, "output_includes_x") and torch.equal(out, x):
        # A fresh layer that returns x exactly is a residual block starting as the identity
        # (e.g. a gate at zero): used as x + update, so the model's residual is not doubled.
        layer.output_includes_x = True
    return None


def _carry(layer: nn.Module, weights: Mapping[str, Tensor]) -> tuple[list[str], list[str], list[str]]:
    """Copy matching weights into ``layer``; ``(carried, initialised, dropped)`` names."""
    own = layer.state_dict()
    carried, dropped = [], []
    with torch.no_grad():
        for name, tensor in weights.items():
            if name in own and own[name].shape == tensor.shape:
                own[name].copy_(tensor.detach().to(own[name].dtype))
                carried.append(name)
            else:
                dropped.append(name)
    params = [n for n, _ in layer.named_parameters()]
    return carried, [n for n in params if n not in carried], dropped


def swap(model: nn.Module, variant: Any, /, *, where: str = "cross", **overrides: Any) -> SwapReport:
    """Replace, in place, the attention modules of another library's model by zoo layers.

    Args:
        model: a ``torch.nn.Module`` built with a library some registered adapter
            knows (the built-ins: diffusers' ``Attention``; transformers' BERT-family
            cross-attention and BART-family ``q_proj/k_proj/v_proj/out_proj`` attention).
        variant: a variant name, a mapping with ``"variant"``, or a config instance.
        where: ``"cross"`` (cross-attention modules), ``"self"`` or ``"all"``.
        **overrides: config fields (e.g. ``num_memory=8``); the widths come from the
            replaced module and may not be overridden.

    Returns:
        A :class:`SwapReport`: ``report.swapped`` lists the dotted paths replaced, in
        model order, with what was carried over and what is new.

    Raises:
        ValueError: nothing to replace (the message lists the model's attention-like
            modules), a module an adapter cannot handle, a variant that cannot serve
            there, or a bad override. The model is then unchanged.
        zoo.UnknownVariantError: the variant is not registered.
    """
    from zoo.config import create
    from zoo.registry import adapters as registered_adapters

    if where not in WHERE:
        raise ValueError(f"zoo.swap: where must be one of {', '.join(map(repr, WHERE))}, got {where!r}")
    if not isinstance(model, nn.Module):
        raise ValueError(f"zoo.swap expects a torch.nn.Module, got {type(model).__name__}")
    spec, chosen = _resolve(variant)
    chosen.update(overrides)
    fixed = [k for k in ("query_dim", "context_dim") if k in chosen]
    if fixed:
        raise ValueError(f"zoo.swap reads {' and '.join(fixed)} from each replaced module; "
                         f"do not pass {', '.join(fixed)} (got {', '.join(f'{k}={chosen[k]!r}' for k in fixed)})")

    found = _find(model, registered_adapters())
    targets = [(p, t, a) for p, t, a in found if where == "all" or t.kind == where]
    if not targets:
        raise ValueError(_nothing_matched(model, found, where))
    problems = [f"{p}: {t.problem}" for p, t, _ in targets if t.problem]
    if problems:
        raise ValueError("zoo.swap cannot replace these modules (the model is unchanged):\n  " + "\n  ".join(problems))

    names = spec.config.model_fields
    report = SwapReport(variant=spec.name, where=where)
    replacements: list[tuple[str, nn.Module]] = []
    refused: list[str] = []
    for path, target, adapter in targets:
        fields = {k: v for k, v in target.geometry().items() if k in names}
        fields.update(chosen)
        layer = create(spec, **fields)
        why = _cannot_serve(spec, layer, target)
        if why:
            refused.append(f"{path}: {why}")
            continue
        carried, initialised, dropped = _carry(layer, target.weights)
        init = getattr(layer, "init_for_swap", None)
        if callable(init):
            init()
        layer.to(device=target.device, dtype=target.dtype).train(target.training)
        replacements.append((path, target.wrap(layer)))
        report.swapped.append(path)
        report.carried[path], report.initialised[path], report.dropped[path] = carried, initialised, dropped
        report.notes[path] = list(target.notes)
        if getattr(layer, "output_includes_x", False):
            report.notes[path].append("the layer returns x + update: the update alone replaces the module's output")
        report.adapters[path] = adapter.name
    if refused:
        raise ValueError(f"variant {spec.name!r} cannot serve here (the model is unchanged):\n  " + "\n  ".join(refused))
    for path, replacement in replacements:  # commit: nothing above changed the model
        parent, _, child = path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, replacement)
    return report

"""``zoo.swap``: put a zoo variant in place of the attention modules of another library's model.

The core knows no library and no variant. *Adapters* (registered through the hook
:func:`zoo.hookspecs.zoo_register_adapters`, the built-in ones for diffusers and
transformers exactly like a third party's) recognise the attention modules of their
library and say, for each one, its widths and heads, its q/k/v/output weights under
the zoo's (diffusers') parameter names, and how to wrap a zoo layer so that it takes
the replaced module's call signature. The core then:

1. resolves the variant (a name, a mapping with ``"variant"``, or a config) and the
   overrides;
2. finds the targets (``where``: ``"cross"``, ``"self"`` or ``"all"``) in model order,
   every path of a module shared by several parents included; causal self-attention
   with a key/value cache is never a target (it is listed in ``report.skipped``);
3. builds one zoo layer per target with :func:`zoo.create`, refuses a variant that
   cannot serve there (its capabilities, then one tiny probe forward whose
   ``ValueError`` is reported), carries every weight whose name and shape match
   (``init="carry"``; key/value projections with fewer heads are mean-pooled over each
   group of heads), lets the layer initialise what it adds (:meth:`init_for_swap`,
   optional), wraps it and checks the wrapper;
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
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel
from torch import Tensor, nn

from zoo.errors import short_list

__all__ = ["Adapter", "SwapTarget", "SwapReport", "swap", "call_layer", "keep_mask", "swapped_paths", "GEOMETRY"]

WHERE = ("cross", "self", "all")
INIT = ("carry", "fresh")
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
        causal: True for causal self-attention with a key/value cache (a decoder's): never
            replaced, listed in ``report.skipped``.
        zero_init: zoo parameters in an identity position (e.g. the bias of a ``to_out.0``
            the adapter sets to the identity): when not carried they start at zero.
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
    causal: bool = False
    zero_init: tuple[str, ...] = ()

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
        notes: per path, what else the adapter did (and why what is new is new).
        adapters: per path, the name of the adapter that matched it.
        skipped: modules of the kind asked for that are not replaced, with the reason
            (causal self-attention with a key/value cache).
        problems: adapters whose ``match`` raised (contained; also shown by ``zoo plugins``).
        init: ``"carry"`` or ``"fresh"``.
    """

    variant: str
    where: str
    swapped: list[str] = field(default_factory=list)
    carried: dict[str, list[str]] = field(default_factory=dict)
    initialised: dict[str, list[str]] = field(default_factory=dict)
    dropped: dict[str, list[str]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    adapters: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    init: str = "carry"

    def __str__(self) -> str:
        lines = [f"swapped {len(self.swapped)} module(s) to {self.variant!r} (where={self.where!r}, "
                 f"init={self.init!r})"]
        for path in self.swapped:
            lines.append(f"  {path} [{self.adapters[path]}]")
            for label, table in (("carried", self.carried), ("initialised", self.initialised),
                                 ("dropped", self.dropped), ("note", self.notes)):
                if table.get(path):
                    lines.append(f"    {label}: {', '.join(table[path])}")
        lines += [f"  not replaced: {path}: {why}" for path, why in self.skipped.items()]
        lines += [f"  problem: {p}" for p in self.problems]
        return "\n".join(lines)


def swapped_paths(model: nn.Module) -> dict[str, str]:
    """``{dotted path: variant}`` of the modules :func:`swap` put into ``model`` (each path
    of a shared one), in model order."""
    return {p: m._zoo_swapped_variant for p, m in model.named_modules(remove_duplicate=False)
            if isinstance(getattr(m, "_zoo_swapped_variant", None), str)}


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


@dataclass
class _Found:
    paths: list[str]
    target: SwapTarget
    adapter: Adapter
    module: nn.Module


def _adapter_failed(adapter: Adapter, message: str, exc: Exception) -> None:
    """Contain a raising ``match`` as the registry contains every hook: shown by ``zoo
    plugins`` under the plugin that registered the adapter, a warning here, a
    ``PluginError`` in strict mode."""
    from zoo.errors import PluginError
    from zoo.registry import default_registry

    registry = default_registry()
    for name, plugin in registry.pm.list_name_plugin():
        owner = plugin if isinstance(plugin, type) or hasattr(plugin, "__file__") else type(plugin)
        if type(adapter).__module__ in (getattr(owner, "__name__", None), getattr(owner, "__module__", None)):
            info = registry._plugins.get(name)
            if info is not None and message not in info.problems:
                info.problems.append(message)
            break
    if registry.strict:
        raise PluginError(message) from exc
    warnings.warn(message, stacklevel=4)


def _find(model: nn.Module, adapters: list[Adapter], problems: list[str]) -> list[_Found]:
    """Every module some adapter recognises, in model order, with every path of a module
    shared by several parents; matched subtrees are skipped."""
    found: list[_Found] = []
    by_id: dict[int, _Found] = {}
    skip: list[str] = []
    failed: set[str] = set()
    for path, module in model.named_modules(remove_duplicate=False):
        if any(path.startswith(prefix + ".") for prefix in skip):
            continue
        if id(module) in by_id:
            by_id[id(module)].paths.append(path)
            skip.append(path)
            continue
        for adapter in adapters:
            if adapter.name in failed:
                continue
            try:
                target = adapter.match(path, module)
            except Exception as exc:  # noqa: BLE001 - one broken adapter never takes zoo.swap down
                failed.add(adapter.name)
                message = (f"adapter {adapter.name!r}: match() raised {type(exc).__name__}: {exc} "
                           f"(at {path or 'the model itself'}); it is skipped for this model")
                problems.append(message)
                _adapter_failed(adapter, message, exc)
                continue
            if target is None:
                continue
            if not path:
                raise ValueError(
                    f"zoo.swap replaces attention modules inside a model, in place; the model passed is itself "
                    f"one ({type(module).__name__}, known to adapter {adapter.name!r}). Pass the model that "
                    f"holds it, or a container: `holder = torch.nn.Sequential(module); zoo.swap(holder, ...)`, "
                    f"then use holder[0]")
            entry = _Found([path], target, adapter, module)
            found.append(entry)
            by_id[id(module)] = entry
            skip.append(path)
            break
    return found


def _nothing_matched(model: nn.Module, found: list[_Found], where: str, problems: list[str]) -> str:
    known = {id(f.module) for f in found}
    like = [f"{p} ({type(m).__name__})" for p, m in model.named_modules()
            if p and id(m) not in known and (_ATTENTION_LIKE.search(type(m).__name__)
                                             or _ATTENTION_LIKE.search(p.rsplit(".", 1)[-1])
                                             or isinstance(m, nn.MultiheadAttention))]
    kinds = sorted({f.target.kind for f in found if not f.target.causal and f.target.problem is None})
    causal = [f.paths[0] for f in found if f.target.causal and (where == "all" or f.target.kind == where)]
    msg = f"zoo.swap found no {'' if where == 'all' else where + '-'}attention module to replace in {type(model).__name__}"
    if causal:
        shown = ", ".join(causal[:4]) + (f", ... ({len(causal)} in all)" if len(causal) > 4 else "")
        msg += (f"; its self-attention ({shown}) is causal with a key/value cache, which zoo.swap does not "
                f"replace (no zoo layer keeps a decoding cache)")
    if kinds:
        msg += f"; it has {' and '.join(kinds)}-attention modules zoo.swap can replace: pass where={kinds[0]!r}"
        msg += " or where='all'" if len(kinds) > 1 else ""
    elif like:
        shown = ", ".join(like[:12]) + (f", ... ({len(like)} in all)" if len(like) > 12 else "")
        msg += (f"; attention-like modules it has, which no registered adapter knows: {shown}. "
                "Write an adapter (hook zoo_register_adapters) to swap them")
    elif not causal:
        msg += "; it has no attention-like module at all (no module or class named *attention*/*attn*)"
    if problems:
        msg += ". Adapters that failed on this model: " + "; ".join(problems)
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


def swap(model: nn.Module, variant: Any, /, *, where: str = "cross", init: str = "carry",
         **overrides: Any) -> SwapReport:
    """Replace, in place, the attention modules of another library's model by zoo layers.

    Args:
        model: a ``torch.nn.Module`` built with a library some registered adapter
            knows (the built-ins: diffusers' ``Attention``; transformers' BERT-family
            cross-attention and BART-family ``q_proj/k_proj/v_proj/out_proj`` attention).
        variant: a variant name, a mapping with ``"variant"``, or a config instance.
        where: ``"cross"`` (cross-attention modules), ``"self"`` (self-attention that is
            neither causal nor cached) or ``"all"``.
        init: ``"carry"`` (every weight the variant shares with the replaced module;
            key/value heads mean-pooled where the variant has fewer) or ``"fresh"`` (the
            variant's own initialisation everywhere, for ablations).
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
    from zoo.carry import carry, hooks
    from zoo.config import create
    from zoo.registry import adapters as registered_adapters

    if where not in WHERE:
        raise ValueError(f"zoo.swap: where must be one of {', '.join(map(repr, WHERE))}, got {where!r}")
    if init not in INIT:
        raise ValueError(f"zoo.swap: init must be one of {', '.join(map(repr, INIT))}, got {init!r}")
    if not isinstance(model, nn.Module):
        raise ValueError(f"zoo.swap expects a torch.nn.Module, got {type(model).__name__}")
    spec, chosen = _resolve(variant)
    chosen.update(overrides)
    fixed = [k for k in ("query_dim", "context_dim") if k in chosen]
    if fixed:
        raise ValueError(f"zoo.swap reads {' and '.join(fixed)} from each replaced module; "
                         f"do not pass {', '.join(fixed)} (got {', '.join(f'{k}={chosen[k]!r}' for k in fixed)})")

    report = SwapReport(variant=spec.name, where=where, init=init)
    found = _find(model, registered_adapters(), report.problems)
    chosen_kind = [f for f in found if where == "all" or f.target.kind == where]
    report.skipped = {p: "causal self-attention with a key/value cache (a decoder's) is not replaced: no zoo "
                         "layer keeps a decoding cache" for f in chosen_kind if f.target.causal for p in f.paths}
    targets = [f for f in chosen_kind if not f.target.causal]
    if not targets:
        raise ValueError(_nothing_matched(model, found, where, report.problems))
    problems = [f"{f.paths[0]}: {f.target.problem}" for f in targets if f.target.problem]
    problems += [f"{f.paths[0]}: its weights are on the meta device (not materialised): load the model's weights "
                 f"first (e.g. from_pretrained without a meta device_map, or to_empty() then load_state_dict())"
                 for f in targets if not f.target.problem and any(t.is_meta for t in f.target.weights.values())]
    if problems:
        raise ValueError("zoo.swap cannot replace these modules (the model is unchanged):\n  " + "\n  ".join(problems))

    names = spec.config.model_fields
    replacements: list[tuple[list[str], nn.Module]] = []
    refused: list[str] = []
    for found_at in targets:
        path, target, adapter = found_at.paths[0], found_at.target, found_at.adapter
        fields = {k: v for k, v in target.geometry().items() if k in names}
        fields.update(chosen)
        layer = create(spec, **fields)
        why = _cannot_serve(spec, layer, target)
        if why:
            refused.append(f"{path}: {why}")
            continue
        carried, initialised, dropped, notes = carry(layer, target, init)
        init_for_swap = getattr(layer, "init_for_swap", None)
        if callable(init_for_swap):
            init_for_swap()
        layer.to(device=target.device, dtype=target.dtype).train(target.training)
        replacement = target.wrap(layer)
        if not isinstance(replacement, nn.Module):
            refused.append(f"{path}: adapter {adapter.name!r}'s wrap() returned {type(replacement).__name__}, "
                           f"not a torch.nn.Module (a bug in that adapter: report it to its authors)")
            continue
        replacement.train(target.training)
        replacement._zoo_swapped_variant = spec.name
        replacements.append((found_at.paths, replacement))
        notes = list(target.notes) + notes
        if getattr(layer, "output_includes_x", False):
            notes.append("the layer returns x + update: the update alone replaces the module's output")
        if hooks(found_at.module):
            notes.append(f"{hooks(found_at.module)} hook(s) registered on the replaced module (forward, "
                         f"pre-forward or backward) are not on the replacement: register them again on it")
        if len(found_at.paths) > 1:
            notes.append(f"one module shared by {len(found_at.paths)} parents: one zoo layer replaces it at "
                         f"{', '.join(found_at.paths)} (still shared)")
        for p in found_at.paths:
            report.swapped.append(p)
            report.carried[p], report.initialised[p], report.dropped[p] = carried, initialised, dropped
            report.notes[p], report.adapters[p] = notes, adapter.name
    if refused:
        raise ValueError(f"variant {spec.name!r} cannot serve here (the model is unchanged):\n  " + "\n  ".join(refused))
    for paths, replacement in replacements:  # commit: nothing above changed the model
        for path in paths:
            parent, _, child = path.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, replacement)
    return report

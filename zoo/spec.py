"""`VariantSpec`: the immutable description of one attention variant."""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from zoo.errors import RegistrationError

if TYPE_CHECKING:
    import torch
    from pydantic import BaseModel

    from zoo.benchspec import BenchSpec

__all__ = ["Capabilities", "INFERRED", "Law", "VariantSpec", "default_make_inputs", "validate_spec"]

# Names of variants, aliases and compare tasks: the whole string (fullmatch: "cross\n" is not "cross").
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.\-]*")


class _Inferred:
    """The default of a capability the zoo infers (see :class:`Capabilities`)."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "INFERRED"

    def __reduce__(self):
        return (_Inferred, ())


INFERRED: Any = _Inferred()
"""Default of ``dropout``, ``masks``, ``self_attention`` and ``equal_lengths``: not declared, inferred."""

# Undeclared inferable capabilities hold these until the harness observes the layer
# (zoo.harness.capabilities.resolve_capabilities); they are today's plain-attention values.
_INFERABLE = {"self_attention": True, "masks": True, "dropout": True, "equal_lengths": False}


@dataclass(frozen=True)
class Capabilities:
    """What a variant can do; decides which harness checks apply (like estimator tags).

    Declare only what cannot be observed: the order and causality properties
    (``query_order_equivariant``, ``context_order_invariant``, ``context_set_axes``,
    ``chunk_causal``). The four others default to :data:`INFERRED` and are observed from
    the layer by :func:`zoo.harness.capabilities.resolve_capabilities` (``zoo check`` and
    ``zoo show`` do it); a declared value always wins. Until then they read as plain
    attention's values (True, True, True, False), and :attr:`inferred` names them.

    Attributes:
        attention: computes softmax attention (False for e.g. FiLM).
        self_attention: ``context=None`` is accepted (self-attention or memory only).
            Inferred: ``forward(x)`` returns; a ``ValueError`` means a context is needed.
        masks: ``context_mask`` is accepted. Inferred: ``forward`` has that parameter.
        dropout: the config has a ``dropout`` field that acts in training. Inferred:
            exactly when the config has a ``dropout`` field.
        query_order_equivariant: permuting the queries permutes the output the same way
            (no positions along N).
        context_order_invariant: permuting context tokens along ``context_set_axes``
            leaves the output unchanged.
        context_set_axes: the axes of ``context`` whose order carries no meaning.
        equal_lengths: ``x`` and ``context`` index the same items (``N == M``); the
            query-order check then permutes both together. Inferred: a context of
            another length than ``x`` is refused with a ``ValueError``.
        chunk_causal: positions never see the context of a later chunk (RETRO; the catalog
            draws it; the variant proves it with a law of its own).
        inferred: the names not declared (set by the zoo, not an argument).

    ``context_required`` and ``min_query_len`` (older arguments) are accepted with a
    ``DeprecationWarning`` and ignored: the first is ``self_attention=False``, the second
    was declared by no variant.
    """

    attention: bool = True
    self_attention: bool = INFERRED
    masks: bool = INFERRED
    dropout: bool = INFERRED
    query_order_equivariant: bool = True
    context_order_invariant: bool = True
    context_set_axes: tuple[int, ...] = (1,)
    equal_lengths: bool = INFERRED
    chunk_causal: bool = False
    inferred: frozenset[str] = field(default=frozenset(), init=False, compare=False)
    context_required: dataclasses.InitVar[bool | None] = None  # deprecated: self_attention=False
    min_query_len: dataclasses.InitVar[int | None] = None  # deprecated: declared by no variant

    def __post_init__(self, context_required: bool | None, min_query_len: int | None) -> None:
        for old, value in (("context_required", context_required), ("min_query_len", min_query_len)):
            if value is not None:
                import warnings

                hint = "; declare self_attention=False" if old == "context_required" else ""
                warnings.warn(f"Capabilities({old}=...) is deprecated and ignored{hint}",
                              DeprecationWarning, stacklevel=3)
        undeclared = {k for k in _INFERABLE if getattr(self, k) is INFERRED}
        for k in undeclared:
            object.__setattr__(self, k, _INFERABLE[k])
        object.__setattr__(self, "inferred", frozenset(undeclared))

    def as_dict(self) -> dict[str, Any]:
        """Every capability by name (``inferred`` left out)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "inferred"}


@dataclass(frozen=True)
class Law:
    """A variant-specific property the harness proves (a reduction, causality, ...).

    ``check(spec, fields, generator)`` builds what it needs from ``spec`` and the
    example config ``fields`` and fails through :func:`zoo.testing.expect` (an
    ``AssertionError`` with a helpful message, kept under ``python -O``, unlike
    ``assert``) when the law does not hold. Its harness id is ``law:<name>``.
    """

    name: str
    description: str
    check: Callable[[VariantSpec, dict, torch.Generator], None]


def default_make_inputs(module, *, batch, query_len, context_len, generator, dtype):
    """Inputs for a layer whose config has ``query_dim`` and ``context_dim``.

    Returns ``{"x": (batch, query_len, query_dim), "context": (batch, context_len, context_dim)}``.
    """
    import torch

    cfg = module.config
    query_dim = cfg.query_dim
    context_dim = getattr(cfg, "context_dim", None) or query_dim
    x = torch.randn(batch, query_len, query_dim, generator=generator, dtype=dtype)
    context = torch.randn(batch, context_len, context_dim, generator=generator, dtype=dtype)
    return {"x": x, "context": context}


@dataclass(frozen=True, kw_only=True)
class VariantSpec:
    """The immutable description of one variant: everything the registry, the
    harness, the CLI and the catalog need. Build it with keywords; change a copy
    with :meth:`replace`.

    Attributes:
        name: canonical registry name (lower case, digits, ``-``, ``_``, ``.``).
        module: the layer class; ``module(**config_fields)`` builds it.
        config: its pydantic config model (subclass of :class:`zoo.VariantConfig`)
            with ``variant: Literal[name]``.
        summary: one line for listings.
        paper: citation (title, authors, year, arXiv id or URL).
        aliases: other accepted names.
        make_inputs: ``make_inputs(module, *, batch, query_len, context_len, generator,
            dtype) -> dict`` of keyword arguments for ``module(**inputs)``.
        examples: small configs (field values without ``variant``) the harness checks.
        reference: ``reference(module, **inputs) -> Tensor``, a naive computation of
            the output from the module's parameters that never calls ``forward``.
        capabilities: which checks apply.
        laws: variant-specific properties the harness proves.
        equation: LaTeX of the computation, for the catalog.
        complexity: time complexity in N and M, for the catalog.
        context_shape: the shape of ``context`` in words, for the catalog.
        tolerances: per-dtype ``(atol, rtol)`` for the harness's oracle comparisons,
            keyed ``"float32"``, ``"float64"``, ``"bfloat16"``; unset keys keep the
            harness defaults (:data:`zoo.harness.checks.TOLERANCES`).
        bench: what ``zoo bench`` times and against what (:class:`zoo.BenchSpec`);
            ``None``: default workloads from ``make_inputs``, absolute numbers, no ratio.

    Where a registered spec came from is not the author's to write, nor a field of the
    spec: the registry records it by name (:meth:`zoo.registry.Registry.provenance`) and
    the read-only properties :attr:`plugin`, :attr:`distribution` and :attr:`source` look
    it up in the default registry (a copy that is not registered has none).
    """

    name: str
    module: type
    config: type[BaseModel]
    summary: str
    paper: str | None = None
    aliases: tuple[str, ...] = ()
    make_inputs: Callable[..., dict] = default_make_inputs
    examples: tuple[dict, ...] = ()
    reference: Callable[..., Any] | None = None
    capabilities: Capabilities = field(default_factory=Capabilities)
    laws: tuple[Law, ...] = ()
    equation: str | None = None
    complexity: str | None = None
    context_shape: str | None = None
    tolerances: Mapping[str, tuple[float, float]] | None = None
    bench: BenchSpec | None = None

    def replace(self, **changes: Any) -> VariantSpec:
        """A copy with ``changes`` applied (the spec itself is immutable).

        The copy is not registered, so it has no provenance; ``plugin`` and
        ``distribution`` are accepted (and ignored) for older callers.
        With a new ``name``, the copy registers and checks under that name: when its
        config still names the old variant, a subclass accepting ``variant: Literal[name]``
        is derived, and the old name's aliases are dropped (unless ``aliases`` is given).
        """
        changes.pop("plugin", None)
        changes.pop("distribution", None)
        name = changes.get("name", self.name)
        if name != self.name:
            changes.setdefault("aliases", ())
            config = changes.get("config", self.config)
            if typing.get_args(getattr(config, "model_fields", {}).get("variant", _NoField).annotation) != (name,):
                changes["config"] = _renamed_config(config, name)
        return dataclasses.replace(self, **changes)

    def _provenance(self) -> tuple[str | None, str | None]:
        from zoo.registry import default_registry

        return default_registry().provenance_of(self)

    @property
    def plugin(self) -> str | None:
        """The plugin (entry-point name) that registered this spec, if any (read-only):
        the default registry's record for this very spec, looked up by name."""
        return self._provenance()[0]

    @property
    def distribution(self) -> str | None:
        """The distribution that shipped that plugin, if known (read-only)."""
        return self._provenance()[1]

    @property
    def source(self) -> str:
        """Where the spec came from, for messages: ``plugin (distribution)``."""
        return describe_source(*self._provenance())

    def example_configs(self) -> tuple[dict, ...]:
        """The examples the harness builds; one from the config defaults if none given."""
        return self.examples or ({},)


def describe_source(plugin: str | None, distribution: str | None) -> str:
    """``plugin 'name' (distribution)``, or the in-process registration, for messages."""
    if plugin and distribution:
        return f"plugin {plugin!r} ({distribution})"
    if plugin:
        return f"plugin {plugin!r}"
    return "in-process registration (zoo.register)"


class _NoField:
    annotation = None


def _renamed_config(config: type, name: str) -> type:
    """``config`` subclassed to accept ``variant: Literal[name]`` (for ``replace(name=...)``)."""
    from pydantic import create_model

    if not isinstance(name, str) or not isinstance(config, type) or "variant" not in getattr(config, "model_fields", {}):
        return config  # validate_spec reports what is wrong
    return create_model(config.__name__, __base__=config, __module__=config.__module__,
                        variant=(typing.Literal[name], name))


def validate_spec(spec: Any) -> VariantSpec:
    """Check that ``spec`` is a usable :class:`VariantSpec`; raise ``RegistrationError``."""
    if not isinstance(spec, VariantSpec):
        raise RegistrationError(
            f"register() expects a zoo.VariantSpec, got {type(spec).__name__}: {spec!r:.80}"
        )
    if not isinstance(spec.name, str) or not NAME_PATTERN.fullmatch(spec.name):
        raise RegistrationError(
            f"variant name {spec.name!r} is invalid: use lower-case letters, digits, '-', '_' or '.'"
        )
    import torch
    from pydantic import BaseModel

    if not (isinstance(spec.module, type) and issubclass(spec.module, torch.nn.Module)):
        raise RegistrationError(
            f"variant {spec.name!r}: module must be a torch.nn.Module subclass, got {spec.module!r}"
        )
    if not (isinstance(spec.config, type) and issubclass(spec.config, BaseModel)):
        raise RegistrationError(
            f"variant {spec.name!r}: config must be a pydantic model class, got {spec.config!r}"
        )
    fld = spec.config.model_fields.get("variant")
    if fld is None or typing.get_args(fld.annotation) != (spec.name,):
        raise RegistrationError(
            f"variant {spec.name!r}: its config {spec.config.__name__} must declare "
            f"`variant: Literal[{spec.name!r}]`"
        )
    for alias in spec.aliases:
        if not isinstance(alias, str) or not NAME_PATTERN.fullmatch(alias):
            raise RegistrationError(f"variant {spec.name!r}: alias {alias!r} is invalid")
    if not callable(spec.make_inputs):
        raise RegistrationError(f"variant {spec.name!r}: make_inputs must be callable")
    if spec.reference is not None and not callable(spec.reference):
        raise RegistrationError(f"variant {spec.name!r}: reference must be callable")
    return spec

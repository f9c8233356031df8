"""Configs chosen by their ``variant`` name.

Every variant's config subclasses :class:`VariantConfig` and declares
``variant: Literal["<name>"]``. :data:`AttentionConfig` is a field type that
accepts the config of *any* registered variant (plugins installed later too),
discriminated by ``variant``. A config only ever *names* a registered variant: it
never imports anything.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, GetJsonSchemaHandler, model_validator
from pydantic_core import core_schema

from zoo.errors import UnknownVariantError, closest, short_list, short_repr
from zoo.registry import default_registry
from zoo.spec import VariantSpec

if TYPE_CHECKING:
    import torch

__all__ = ["VariantConfig", "AttentionConfig", "create", "load_config", "parse_config"]


class VariantConfig(BaseModel):
    """Base class of every variant's config.

    Unknown keys are refused with the closest valid field suggested. A config is
    frozen (immutable, hashable): it describes a layer that was built from it, so
    a change is a new config (``config.model_copy(update={...})``) and a new layer.
    Integer and float fields take numbers only: a bool (``True`` is not a width of
    1) or a string (``"8"``) is refused instead of coerced; an integral float such
    as ``8.0`` is still accepted for an int field and an int for a float field, so
    numbers read from YAML, JSON and TOML load as written.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)

    variant: str

    @model_validator(mode="before")
    @classmethod
    def _suggest_unknown_fields(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            known = set(cls.model_fields)
            for key in data:
                if key not in known:
                    hint = closest(str(key), sorted(known - {"variant"}), n=1)
                    did = f"did you mean {hint[0]!r}? " if hint else ""
                    raise ValueError(
                        f"unknown field {short_repr(key)} for variant {cls._variant_name()!r}: {did}"
                        f"valid fields are {', '.join(sorted(known - {'variant'}))}"
                    )
                _check_number(cls, key, data[key])
        return data

    @classmethod
    def _variant_name(cls) -> str:
        import typing

        args = typing.get_args(cls.model_fields["variant"].annotation)
        return args[0] if args else cls.__name__

    def fields(self) -> dict[str, Any]:
        """The constructor keywords: every field but ``variant``."""
        return {k: getattr(self, k) for k in type(self).model_fields if k != "variant"}


def _numeric_kinds(annotation: Any) -> set[type]:
    """The number types an annotation admits (``int | None`` -> {int}); empty when
    it admits anything that is not a plain int or float."""
    import types
    import typing

    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _numeric_kinds(typing.get_args(annotation)[0])
    if origin in (typing.Union, getattr(types, "UnionType", None)):
        kinds: set[type] = set()
        for arg in typing.get_args(annotation):
            if arg is type(None):
                continue
            sub = _numeric_kinds(arg)
            if not sub:
                return set()
            kinds |= sub
        return kinds
    return {annotation} if annotation in (int, float) else set()


def _check_number(cls: type[BaseModel], key: str, value: Any) -> None:
    """Refuse anything but a number for an int/float field: a bool (numpy's too), a string
    or bytes (pydantic would coerce ``True``, ``np.True_`` and ``b"8"`` into widths)."""
    field = cls.model_fields.get(key)
    if field is None or value is None or (isinstance(value, numbers.Number) and not isinstance(value, bool)):
        return
    kinds = _numeric_kinds(field.annotation)
    if not kinds:
        return
    kind = "an integer" if kinds == {int} else "a number"
    raise ValueError(
        f"field {key!r} of variant {cls._variant_name()!r} must be {kind}, got "
        f"{type(value).__name__} {short_repr(value, 60)}; write the number itself "
        f"(a bool or a string is not coerced)"
    )


def _resolve_spec(spec: Any) -> VariantSpec:
    if isinstance(spec, VariantSpec):
        return spec
    return default_registry().get(spec)


def parse_config(data: Any, spec: VariantSpec | None = None) -> VariantConfig:
    """Validate a mapping (with a ``variant`` key) or a config instance into the
    registered variant's config model. Never imports anything: ``variant`` must be
    the name (or alias) of a registered variant."""
    if isinstance(data, BaseModel) and "variant" in type(data).model_fields:
        data = data.model_dump()
    if not isinstance(data, Mapping):
        raise ValueError(
            f"an attention config must be a mapping with a 'variant' key or a config "
            f"instance, got {type(data).__name__}"
        )
    if "variant" not in data:
        raise ValueError(
            f"an attention config needs a 'variant' key naming a registered variant "
            f"(see `zoo list`); got keys {short_list(sorted(map(str, data)))}"
        )
    name = data["variant"]
    if not isinstance(name, str):
        raise ValueError(f"'variant' must be a string naming a variant, got {type(name).__name__}")
    if spec is None:
        spec = default_registry().get(name)
    elif name != spec.name and name not in spec.aliases:
        raise ValueError(f"config names variant {name!r} but the spec is {spec.name!r}")
    return spec.config.model_validate({**data, "variant": spec.name})


def _parse_field(data: Any) -> VariantConfig:
    """:func:`parse_config` for a pydantic field: an unknown variant (a ``LookupError``)
    becomes a ``ValueError``, so pydantic reports a ``ValidationError`` at the field's
    location with the suggestion."""
    try:
        return parse_config(data)
    except LookupError as exc:
        raise ValueError(str(exc)) from None


class _AnyVariant:
    """Pydantic hooks behind :data:`AttentionConfig` (looked up at validation time)."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler):
        def serialize(value: Any, info: core_schema.SerializationInfo) -> Any:
            if isinstance(value, BaseModel):
                return value.model_dump(mode=info.mode)
            return value

        return core_schema.no_info_plain_validator_function(
            _parse_field,
            serialization=core_schema.plain_serializer_function_ser_schema(
                serialize, info_arg=True
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: GetJsonSchemaHandler):
        registry = default_registry()
        options = []
        for name in registry.names():
            options.append(registry.get(name).config.model_json_schema())
        return {
            "title": "AttentionConfig",
            "description": "The config of any registered attention variant, chosen by 'variant'.",
            "oneOf": options,
        }


AttentionConfig = Annotated[VariantConfig, _AnyVariant]
"""A pydantic field type accepting the config of any registered variant.

Examples:
    ```python
    import pydantic
    import zoo

    class ModelConfig(pydantic.BaseModel):
        width: int
        attention: zoo.AttentionConfig

    cfg = ModelConfig(width=320, attention={"variant": "cross", "query_dim": 320})
    layer = zoo.create(cfg.attention)
    ```
"""


def create(spec: Any, /, **overrides: Any) -> torch.nn.Module:
    """Build a layer.

    Args:
        spec: a variant name (or alias), a mapping with key ``"variant"``, a config
            instance, or a :class:`VariantSpec`.
        **overrides: config fields that replace those given in ``spec``.

    Returns:
        The ``torch.nn.Module``, with the validated config as ``module.config``.
    """
    variant_spec: VariantSpec | None = None
    if isinstance(spec, (str, VariantSpec)):
        variant_spec = _resolve_spec(spec)
        data: dict[str, Any] = {"variant": variant_spec.name}
    elif isinstance(spec, BaseModel):
        data = spec.model_dump()
    elif isinstance(spec, Mapping):
        data = dict(spec)
    else:
        raise ValueError(
            f"zoo.create expects a variant name, a mapping with 'variant', or a config "
            f"instance; got {type(spec).__name__}"
        )
    config = parse_config({**data, **overrides}, variant_spec)
    if variant_spec is None:
        variant_spec = default_registry().get(config.variant)
    from zoo.declare import building

    with building(config):
        module = variant_spec.module(**config.fields())
    freeze_config(module, config)
    return module


class FrozenConfigError(AttributeError):
    """``layer.config = ...`` on a layer that already has its config."""


class _ConfigSlot:
    """Data descriptor behind ``layer.config``: set once, then read-only.

    The layer was built from its config; a different config assigned afterwards
    would describe another layer than the one that computes (and ``zoo.save``
    would write a config that does not match the weights).
    """

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        try:
            return obj.__dict__["_zoo_config"]
        except KeyError:
            raise AttributeError(f"{type(obj).__name__!r} object has no attribute 'config' "
                                 f"(build the layer with zoo.create)") from None

    def __set__(self, obj: Any, value: Any) -> None:
        current = obj.__dict__.get("_zoo_config")
        if current is not None and current is not value and current != value:
            raise FrozenConfigError(
                f"{type(obj).__name__}.config is frozen: the layer was built from its config "
                f"and does not reread it. Build a new layer instead: "
                f"zoo.create(layer.config.model_copy(update={{...}})), then load_state_dict if the "
                f"shapes still fit"
            )
        obj.__dict__["_zoo_config"] = value

    def __delete__(self, obj: Any) -> None:
        raise FrozenConfigError(f"{type(obj).__name__}.config is frozen and cannot be deleted")


_SLOT = _ConfigSlot()


def freeze_config(module: Any, config: VariantConfig) -> None:
    """Attach ``config`` to ``module`` as its read-only ``.config``.

    The layer class gets a ``config`` data descriptor (once), unless the class
    defines ``config`` itself (then the attribute is set plainly, unprotected).
    """
    cls = type(module)
    own = next((vars(c)["config"] for c in cls.__mro__ if "config" in vars(c)), None)
    if own is None:
        cls.config = _SLOT
    elif own is not _SLOT:
        module.config = config
        return
    module.__dict__.pop("config", None)
    _SLOT.__set__(module, config)


def load_config(path: str | Path) -> VariantConfig:
    """Read a ``.yaml``/``.yml``/``.json``/``.toml`` file into a validated config.

    Every failure is a ``ValueError`` naming the file (and the line where the
    parser knows it): a directory, non-UTF-8 bytes, a file over 64 KiB, nesting
    over 32 levels, YAML aliases, malformed text, invalid fields. An unknown
    variant raises :class:`zoo.UnknownVariantError` (a ``LookupError``) that is
    also a ``ValueError`` and names the file. The file is parsed as plain data
    (``yaml`` safe loader): it cannot run code. See :mod:`zoo.configfile`.
    """
    from zoo.configfile import read_config_file

    path = Path(path)
    data = read_config_file(path)
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{path}: a config file must hold a mapping with a 'variant' key, "
            f"got {type(data).__name__}"
        )
    try:
        return parse_config(data)
    except UnknownVariantError as exc:
        raise _UnknownVariantInFile(path, exc) from None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


class _UnknownVariantInFile(UnknownVariantError, ValueError):
    """An unknown variant named by a config file: a ``LookupError`` and a ``ValueError``."""

    def __init__(self, path: Path, exc: UnknownVariantError) -> None:
        self.name, self.suggestions = exc.name, exc.suggestions
        Exception.__init__(self, f"{path}: {exc}")

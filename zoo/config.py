"""Configs chosen by their ``variant`` name.

Every variant's config subclasses :class:`VariantConfig` and declares
``variant: Literal["<name>"]``. :data:`AttentionConfig` is a field type that
accepts the config of *any* registered variant (plugins installed later too),
discriminated by ``variant``. A config only ever *names* a registered variant: it
never imports anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import core_schema

from zoo.errors import UnknownVariantError, UnknownVariantInFileError, short_list
from zoo.registry import default_registry
from zoo.spec import VariantSpec
from zoo.variant_config import (  # noqa: F401 - re-exported: zoo.config has always offered them
    FrozenConfigError,
    VariantConfig,
    _check_number,
    _numeric_kinds,
    freeze_config,
)

if TYPE_CHECKING:
    import torch

__all__ = ["VariantConfig", "AttentionConfig", "create", "load_config", "parse_config"]


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


def load_config(path: str | Path) -> VariantConfig:
    """Read a ``.yaml``/``.yml``/``.json``/``.toml`` file into a validated config.

    Every failure is a ``ValueError`` naming the file (and the line where the
    parser knows it): a directory, non-UTF-8 bytes, a file over 64 KiB, nesting
    over 32 levels, YAML aliases, malformed text, invalid fields. An unknown
    variant raises :class:`zoo.UnknownVariantInFileError`: an
    :class:`zoo.UnknownVariantError` (a ``LookupError``) that is also a ``ValueError``
    and names the file. The file is parsed as plain data
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
        raise UnknownVariantInFileError(path, exc) from None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None

"""Configs chosen by their ``variant`` name.

Every variant's config subclasses :class:`VariantConfig` and declares
``variant: Literal["<name>"]``. :data:`AttentionConfig` is a field type that
accepts the config of *any* registered variant (plugins installed later too),
discriminated by ``variant``. A config only ever *names* a registered variant: it
never imports anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, GetJsonSchemaHandler, model_validator
from pydantic_core import core_schema

from zoo.errors import closest
from zoo.registry import default_registry
from zoo.spec import VariantSpec

if TYPE_CHECKING:
    import torch

__all__ = ["VariantConfig", "AttentionConfig", "create", "load_config", "parse_config"]


class VariantConfig(BaseModel):
    """Base class of every variant's config: unknown keys are refused with the
    closest valid field suggested, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

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
                        f"unknown field {key!r} for variant {cls._variant_name()!r}: {did}"
                        f"valid fields are {', '.join(sorted(known - {'variant'}))}"
                    )
        return data

    @classmethod
    def _variant_name(cls) -> str:
        import typing

        args = typing.get_args(cls.model_fields["variant"].annotation)
        return args[0] if args else cls.__name__

    def fields(self) -> dict[str, Any]:
        """The constructor keywords: every field but ``variant``."""
        return {k: getattr(self, k) for k in type(self).model_fields if k != "variant"}


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
            f"(see `zoo list`); got keys {sorted(map(str, data))}"
        )
    name = data["variant"]
    if not isinstance(name, str):
        raise ValueError(f"'variant' must be a string naming a variant, got {type(name).__name__}")
    if spec is None:
        spec = default_registry().get(name)
    elif name != spec.name and name not in spec.aliases:
        raise ValueError(f"config names variant {name!r} but the spec is {spec.name!r}")
    return spec.config.model_validate({**data, "variant": spec.name})


class _AnyVariant:
    """Pydantic hooks behind :data:`AttentionConfig` (looked up at validation time)."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler):
        def serialize(value: Any, info: core_schema.SerializationInfo) -> Any:
            if isinstance(value, BaseModel):
                return value.model_dump(mode=info.mode)
            return value

        return core_schema.no_info_plain_validator_function(
            parse_config,
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
"""A pydantic field type accepting the config of any registered variant::

    class ModelConfig(pydantic.BaseModel):
        width: int
        attention: zoo.AttentionConfig

    ModelConfig(width=320, attention={"variant": "cross", "query_dim": 320})
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
    module = variant_spec.module(**config.fields())
    module.config = config
    return module


def load_config(path: str | Path) -> VariantConfig:
    """Read a ``.yaml``/``.yml``/``.json``/``.toml`` file into a validated config.

    Malformed files raise ``ValueError`` naming the file and line. The file is
    parsed as plain data (``yaml.safe_load``): it cannot run code.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {str(path)!r} does not exist") from None
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = f":{mark.line + 1}" if mark else ""
            raise ValueError(f"{path}{line}: invalid YAML: {exc.problem or exc}") from None
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: invalid YAML: {exc}") from None
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    elif suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: invalid TOML: {exc}") from None
    else:
        raise ValueError(
            f"{path}: unsupported config format {suffix!r}; use .yaml, .yml, .json or .toml"
        )
    if not isinstance(data, Mapping):
        raise ValueError(
            f"{path}: a config file must hold a mapping with a 'variant' key, "
            f"got {type(data).__name__}"
        )
    try:
        return parse_config(data)
    except LookupError:
        raise
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc

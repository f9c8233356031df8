"""The base class of every variant's config, and the read-only ``layer.config`` slot.

Apart from the factory (:mod:`zoo.config`): the toolkit (:mod:`zoo.nn`) and the
declaration (:mod:`zoo.declare`) need these, and nothing here knows the registry.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from zoo.errors import closest, short_repr

__all__ = ["VariantConfig", "FrozenConfigError", "freeze_config"]


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

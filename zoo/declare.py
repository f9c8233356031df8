"""A variant declared once: ``@zoo.variant(name, config=..., ...)`` on the layer class.

From the one declaration follow the config's ``variant: Literal[name]`` (added to the
config class, which declares only its real fields), the :class:`~zoo.spec.VariantSpec`
(``Layer.spec``, laws and bench included) and the registration: the plugin loader
registers every variant declared in an entry point's module (or its package), so the
plugin needs no ``zoo_register_variants`` hook. The layer is built from its validated
config: ``Layer(**fields)`` validates ``fields`` through the config (defaults filled,
bad values a ``ValueError``) and calls the layer's ``__init__`` with every field, so
``__init__`` restates no default; the config is ``layer.config`` from the start.

```python
class QKNormConfig(MultiHeadFields):
    eps: float = Field(1e-5, gt=0, description="LayerNorm epsilon.")

@zoo.variant("qk-norm", config=QKNormConfig, summary="...", reference=reference)
class QKNormAttention(MultiHeadBase):
    def __init__(self, *, eps, **fields):
        super().__init__(**fields)
        ...
```

The older way (a :class:`~zoo.spec.VariantSpec` registered from a
``zoo_register_variants`` hook) keeps working unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import typing
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, Callable, TypeVar

from zoo.errors import RegistrationError
from zoo.spec import VariantSpec, validate_spec

__all__ = ["variant", "declare_variant", "declared_in"]

T = TypeVar("T", bound=type)

_declared: dict[str, list[VariantSpec]] = {}  # module name -> specs declared there, in order
_lock = threading.Lock()
_building: ContextVar[Any] = ContextVar("zoo_building", default=None)


@contextlib.contextmanager
def building(config: Any) -> Iterator[None]:
    """``zoo.create`` builds a layer from ``config``, already validated by the spec's config
    model: the declared layer takes it as its config instead of validating again."""
    token = _building.set(config)
    try:
        yield
    finally:
        _building.reset(token)


def _add_variant_field(config: type, name: str) -> None:
    """Give ``config`` the field ``variant: Literal[name] = name`` (in place)."""
    from pydantic import BaseModel
    from pydantic.fields import FieldInfo

    if not (isinstance(config, type) and issubclass(config, BaseModel)):
        raise RegistrationError(f"variant {name!r}: config must be a pydantic model class "
                                f"(subclass zoo.VariantConfig), got {config!r}")
    current = typing.get_args(config.model_fields.get("variant", FieldInfo()).annotation)
    if current == (name,):
        return
    if len(current) == 1:
        raise RegistrationError(
            f"variant {name!r}: config {config.__name__} already belongs to variant {current[0]!r}; "
            f"give each variant its own config class (subclass the shared one)")
    literal = typing.Literal[name]
    fields = getattr(config, "__pydantic_fields__", None)
    if fields is None:  # pydantic before 2.10 keeps them in model_fields
        fields = config.model_fields
    fields["variant"] = FieldInfo.from_annotated_attribute(literal, name)
    config.__annotations__ = {**getattr(config, "__annotations__", {}), "variant": literal}
    config.model_rebuild(force=True)


def _built_from_config(layer: type, config: type) -> None:
    """Wrap ``layer.__init__``: arguments are validated by ``config``, then every field is passed."""
    init = layer.__init__
    names = [k for k in config.model_fields if k != "variant"]

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(names):
            raise TypeError(f"{layer.__name__}() takes at most {len(names)} positional arguments "
                            f"({', '.join(names)}), got {len(args)}")
        for key, value in zip(names, args):
            if key in kwargs:
                raise TypeError(f"{layer.__name__}() got multiple values for argument {key!r}")
            kwargs[key] = value
        if type(self) is not layer:  # a subclass's __init__ calling super(): its own fields are not ours
            defaults = {k: f.default for k, f in config.model_fields.items() if k != "variant" and not f.is_required()}
            init(self, **{**defaults, **kwargs})
            return
        cfg = _building.get()
        if cfg is not None and cfg.fields() == kwargs:  # zoo.create's, validated by the spec's config
            _building.set(None)  # not for the layers this one builds inside
        else:
            cfg = config.model_validate(kwargs)
        from zoo.variant_config import freeze_config

        freeze_config(self, cfg)
        init(self, **cfg.fields())

    layer.__init__ = __init__


def declare_variant(layer: type, name: str, /, *, config: type, **fields: Any) -> VariantSpec:
    """Declare ``layer`` as variant ``name``; the statement form of :func:`variant`.

    Args:
        layer: the ``torch.nn.Module`` subclass.
        name: the variant's canonical name.
        config: its config model (a :class:`zoo.VariantConfig` subclass declaring only its
            real fields; ``variant: Literal[name]`` is added).
        **fields: every other :class:`~zoo.spec.VariantSpec` field (``summary`` is required;
            ``aliases``, ``paper``, ``examples``, ``reference``, ``laws``, ``bench``, ...).

    Returns:
        The spec, also ``layer.spec``; plugin loading registers it.

    Raises:
        RegistrationError: an invalid name, config or spec, or a layer declared twice.
    """
    if not isinstance(name, str):
        raise RegistrationError(f"a variant name must be a str, got {type(name).__name__}")
    if "spec" in vars(layer):
        raise RegistrationError(f"{layer.__name__} is already declared as variant {layer.spec.name!r}")
    for taken in ("name", "module", "config"):
        if taken in fields:
            raise RegistrationError(f"variant {name!r}: {taken!r} is the declaration's own, not a field to pass")
    _add_variant_field(config, name)
    spec = validate_spec(VariantSpec(name=name, module=layer, config=config, **fields))
    _built_from_config(layer, config)
    layer.spec = spec
    with _lock:
        _declared.setdefault(layer.__module__, []).append(spec)
    return spec


def variant(name: str, /, *, config: type, **fields: Any) -> Callable[[T], T]:
    """Class decorator: declare the layer below as variant ``name`` (see :func:`declare_variant`)."""

    def decorate(layer: T) -> T:
        declare_variant(layer, name, config=config, **fields)
        return layer

    return decorate


def declared_in(module_name: str) -> list[VariantSpec]:
    """The variants declared in module ``module_name`` or in a module of that package."""
    with _lock:
        return [spec for mod, specs in _declared.items()
                if mod == module_name or mod.startswith(module_name + ".") for spec in specs]

"""The registry: which variants exist, under which names, and who registered them.

:class:`Registry` is the name tables (canonical names, aliases, and each name's
provenance: the plugin and distribution that registered it, kept here by name and
never on a spec) on top of :class:`zoo.loader.PluginLoader`, which loads the plugins and
calls their hooks. Names belong to whoever holds them first, in the loader's order: the
built-in variants (distribution ``attention-zoo``), then third-party plugins sorted by
distribution name. A clash is reported against the plugin that lost; its other variants
load.
"""

from __future__ import annotations

import contextlib
import fnmatch
import threading
from collections.abc import Iterator
from typing import Any

from zoo.errors import PluginError, RegistrationError, UnknownVariantError
from zoo.loader import BUILTIN_DISTRIBUTION, ENTRY_POINT_GROUP, PluginInfo, PluginLoader  # noqa: F401 - re-exported
from zoo.spec import VariantSpec, describe_source, validate_spec

__all__ = [
    "PluginInfo",
    "Registry",
    "default_registry",
    "use_registry",
    "register",
    "unregister",
    "list_variants",
    "get_variant",
    "plugins",
    "adapters",
]


class Registry(PluginLoader):
    """A set of registered variants plus the plugin manager that filled it.

    The module-level functions (:func:`zoo.list_variants`, ...) use one default
    instance; tests build their own (``Registry(load_entry_points=False)``) and
    install it with :func:`use_registry`.
    """

    def __init__(self, *, load_entry_points: bool = True, strict: bool | None = None,
                 env: dict[str, str] | None = None) -> None:
        super().__init__(load_entry_points=load_entry_points, strict=strict, env=env)
        self._specs: dict[str, VariantSpec] = {}
        self._aliases: dict[str, str] = {}
        self._provenance: dict[str, tuple[str | None, str | None]] = {}  # name -> (plugin, distribution)

    def _clear(self) -> None:
        self._specs.clear()
        self._aliases.clear()
        self._provenance.clear()

    def _register_from_plugin(self, spec: Any, info: PluginInfo) -> None:
        try:
            spec = validate_spec(spec)
            self._add(spec, (info.name, info.distribution))
        except RegistrationError as exc:
            info.problems.append(str(exc))
            if self.strict:
                raise PluginError(f"plugin {info.label}: {exc}") from exc
            return
        info.variants.append(spec.name)

    # -- registration -----------------------------------------------------
    def _tables(self) -> tuple[dict, dict, dict]:
        return dict(self._specs), dict(self._aliases), dict(self._provenance)

    def _restore(self, tables: tuple[dict, dict, dict]) -> None:
        self._specs, self._aliases, self._provenance = tables

    def _add(self, spec: VariantSpec, provenance: tuple[str | None, str | None] = (None, None)) -> None:
        with self._lock:
            for key in (spec.name, *spec.aliases):
                owner = self._owner(key)
                if owner is not None:
                    what = repr(key) if key == spec.name else f"alias {key!r} of {spec.name!r}"
                    raise RegistrationError(
                        f"cannot register {what} from {describe_source(*provenance)}: the name is already "
                        f"taken by variant {owner.name!r} from {describe_source(*self._provenance[owner.name])}"
                    )
            self._specs[spec.name] = spec
            self._provenance[spec.name] = provenance
            for alias in spec.aliases:
                self._aliases[alias] = spec.name

    def _owner(self, key: str) -> VariantSpec | None:
        if key in self._specs:
            return self._specs[key]
        if key in self._aliases:
            return self._specs[self._aliases[key]]
        return None

    def register(self, spec: VariantSpec) -> VariantSpec:
        """Register ``spec`` in-process; a taken name raises :class:`RegistrationError`."""
        self._ensure_loaded()
        spec = validate_spec(spec)
        self._add(spec)
        return spec

    def unregister(self, name: str) -> VariantSpec:
        """Remove a variant (by canonical name or alias) and return its spec.

        Raises:
            RegistrationError: called by a plugin's hook for a variant it did not register
                (a plugin cannot take another's name by removing it first).
        """
        self._ensure_loaded()
        with self._lock:
            spec = self.get(name)
            caller = self._registering
            if caller is not None and self._provenance[spec.name][0] != caller.name:
                raise RegistrationError(
                    f"plugin {caller.label} tried to unregister {spec.name!r}, registered by "
                    f"{describe_source(*self._provenance[spec.name])}: "
                    f"a plugin may remove only its own variants (name it something else)")
            del self._specs[spec.name]
            self._provenance.pop(spec.name, None)
            for alias in spec.aliases:
                self._aliases.pop(alias, None)
            return spec

    # -- lookup -------------------------------------------------------------
    def names(self, pattern: str = "*") -> list[str]:
        self._ensure_loaded()
        return sorted(n for n in self._specs if fnmatch.fnmatchcase(n, pattern))

    def get(self, name: str) -> VariantSpec:
        self._ensure_loaded()
        if not isinstance(name, str):
            raise TypeError(f"a variant name must be a str, got {type(name).__name__}")
        spec = self._owner(name)
        if spec is None:
            raise UnknownVariantError(name, [*self._specs, *self._aliases], canonical=self._specs)
        return spec

    def provenance(self, name: str) -> dict[str, str | None]:
        """Where a registered variant came from: ``{"plugin", "distribution"}`` (both
        ``None`` for an in-process :meth:`register`). Recorded by the registry, never
        written by the variant's author."""
        plugin, distribution = self._provenance[self.get(name).name]
        return {"plugin": plugin, "distribution": distribution}

    def provenance_of(self, spec: VariantSpec) -> tuple[str | None, str | None]:
        """``(plugin, distribution)`` of ``spec`` if this registry holds that very spec
        under its name, else ``(None, None)`` (a copy, or a spec never registered).
        Loads no plugin."""
        with self._lock:
            if self._specs.get(spec.name) is spec:
                return self._provenance[spec.name]
        return (None, None)

    def plugin_of(self, name: str) -> Any:
        """The plugin object (the entry point's module) that registered variant ``name``,
        for what the plugin ships beside its layer (RETRO's database); ``None`` for an
        in-process :meth:`register`."""
        plugin = self.provenance(name)["plugin"]
        return None if plugin is None else self.pm.get_plugin(plugin)

_default: Registry | None = None
_default_lock = threading.Lock()


def default_registry() -> Registry:
    """The process-wide registry (created on first use)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Registry()
    return _default


@contextlib.contextmanager
def use_registry(registry: Registry) -> Iterator[Registry]:
    """Make ``registry`` the default inside a ``with`` block (tests, sandboxes)."""
    global _default
    previous = _default
    _default = registry
    try:
        yield registry
    finally:
        _default = previous


def register(spec: VariantSpec) -> VariantSpec:
    """Register ``spec`` in-process (notebooks, tests). Duplicate name -> RegistrationError."""
    return default_registry().register(spec)


def unregister(name: str) -> VariantSpec:
    """Undo a registration; returns the removed spec."""
    return default_registry().unregister(name)


def list_variants(pattern: str = "*") -> list[str]:
    """Sorted canonical names of the registered variants matching an fnmatch ``pattern``."""
    return default_registry().names(pattern)


def get_variant(name: str) -> VariantSpec:
    """The spec registered under ``name`` (canonical or alias); unknown -> UnknownVariantError."""
    return default_registry().get(name)


def plugins() -> list[PluginInfo]:
    """The plugins the default registry loaded or failed to load."""
    return default_registry().plugins()


def adapters() -> list[Any]:
    """The swap adapters the default registry's plugins registered (see :func:`zoo.swap`)."""
    return default_registry().adapters()

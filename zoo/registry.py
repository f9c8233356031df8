"""The registry: which variants exist, under which names, and who registered them.

Plugins are found through the entry-point group ``zoo`` and loaded lazily, once,
the first time the registry is consulted. Each plugin is imported and called in
isolation: one that fails to import, raises in its hook (``SystemExit`` included:
any ``BaseException`` but ``KeyboardInterrupt``), registers a clashing name or an
invalid spec is recorded as a failure (``zoo plugins`` lists it with its name,
version and error) and every other plugin keeps working. A failed plugin leaves no
variant behind.

Names belong to whoever holds them first, in this order: the built-in variants
(distribution ``attention-zoo``), then third-party plugins sorted by distribution
name. A clash is reported against the plugin that lost; its other variants load. An
entry point named like an already loaded plugin never replaces it: it is loaded as
``name@distribution`` and the clash is reported.

Hooks are called through pluggy, one plugin at a time, in that order (wrappers work;
``tryfirst``/``trylast`` on ``zoo_register_variants`` are refused, since they would
reorder name precedence). Plugin import times are measured after ``torch`` itself is
imported, so the first plugin is not blamed for it.

Environment variables:
    ZOO_LOAD_PLUGINS: comma-separated entry-point or distribution names to load;
        unset loads all, empty (or ``none``) loads none.
    ZOO_STRICT_PLUGINS: ``1`` turns plugin failures (and slow imports) into a
        :class:`zoo.PluginError` (for CI), raised again on every later call; the
        registry then holds no variant at all (never a half-loaded set).
    ZOO_PLUGIN_SLOW_S: seconds above which a plugin's import is reported as slow
        (default 2).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import os
import sys
import threading
import time
import traceback
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from zoo import hookspecs
from zoo.entrypoints import ENTRY_POINT_GROUP, allowed, precedence, seconds_from_env
from zoo.declare import declared_in
from zoo.errors import PluginError, RegistrationError, UnknownVariantError
from zoo.spec import VariantSpec, validate_spec

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

def _contained(exc: BaseException) -> bool:
    """Whether a plugin's exception is contained (everything but Ctrl-C)."""
    return not isinstance(exc, KeyboardInterrupt)


@dataclass
class PluginInfo:
    """What happened when one plugin was loaded."""

    name: str
    distribution: str | None = None
    version: str | None = None
    status: str = "loaded"  # "loaded" or "failed"
    error: str | None = None
    variants: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # refused specs, slow import, ...
    seconds: float = 0.0

    @property
    def label(self) -> str:
        if self.distribution:
            return f"{self.name} ({self.distribution} {self.version})"
        return self.name


class _Refused(Exception):
    """A hook implementation the zoo refuses to call (the message says why)."""


class Registry:
    """A set of registered variants plus the plugin manager that filled it.

    The module-level functions (:func:`zoo.list_variants`, ...) use one default
    instance; tests build their own (``Registry(load_entry_points=False)``) and
    install it with :func:`use_registry`.
    """

    def __init__(
        self,
        *,
        load_entry_points: bool = True,
        strict: bool | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self._env = os.environ if env is None else env
        self.strict = (
            self._env.get("ZOO_STRICT_PLUGINS", "") not in ("", "0", "false")
            if strict is None
            else strict
        )
        self._specs: dict[str, VariantSpec] = {}
        self._aliases: dict[str, str] = {}
        self._plugins: dict[str, PluginInfo] = {}
        self._load_entry_points = load_entry_points
        self._loaded = False
        self._adapters: list[Any] | None = None
        self._load_error: PluginError | None = None
        self._loader: int | None = None  # the thread loading the entry points, while it does
        self._registering: PluginInfo | None = None  # the plugin whose hook is running, while it does
        self.torch_import_seconds: float | None = None
        self._lock = threading.RLock()
        self.pm = pluggy.PluginManager("zoo")
        self.pm.add_hookspecs(hookspecs)

    # -- plugin loading -------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self._loaded and self._loader in (None, threading.get_ident()):
            self._raise_load_error()
            return
        with self._lock:  # another thread is loading: wait until it is done
            if self._loaded:
                self._raise_load_error()
                return
            self._loaded = True  # before loading: a plugin may consult the registry (same thread)
            if not self._load_entry_points:
                return
            self._loader = threading.get_ident()
            try:
                self._load_entry_point_plugins()
            except Exception as exc:  # strict mode, or a bug: nothing half-loaded, the same error every call
                self._specs.clear()
                self._aliases.clear()
                self._load_error = exc if isinstance(exc, PluginError) else PluginError(f"loading plugins failed: {exc}")
                if exc is not self._load_error:
                    self._load_error.__cause__ = exc
                raise self._load_error from exc
            finally:
                self._loader = None

    def _raise_load_error(self) -> None:
        if self._load_error is not None:
            raise PluginError(str(self._load_error)) from self._load_error.__cause__

    def _load_entry_point_plugins(self) -> None:
        wanted = self._env.get("ZOO_LOAD_PLUGINS")
        seen: set[tuple[str, str]] = set()
        eps = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=precedence)
        slow_s = seconds_from_env(self._env, "ZOO_PLUGIN_SLOW_S", 2.0)
        eps = [ep for ep in eps if allowed(wanted, ep)]
        if eps and "torch" not in sys.modules:  # imported here, it is measured here (else: no figure)
            start = time.perf_counter()
            import torch  # noqa: F401 - every plugin needs it; its import is not any plugin's cost

            self.torch_import_seconds = time.perf_counter() - start
        for ep in eps:
            if (ep.name, ep.value) in seen:
                continue
            seen.add((ep.name, ep.value))
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                name=ep.name,
                distribution=dist.name if dist else None,
                version=dist.version if dist else None,
            )
            start = time.perf_counter()
            try:
                obj = ep.load()
            except BaseException as exc:  # noqa: BLE001 - never take the zoo down (SystemExit too)
                if not _contained(exc):
                    raise
                info.seconds = time.perf_counter() - start
                self._fail(info, f"import failed: {type(exc).__name__}: {exc}", exc)
                continue
            info.seconds = time.perf_counter() - start
            if info.seconds > slow_s:
                info.problems.append(f"slow import: {info.seconds:.1f} s (limit {slow_s:g} s; torch's own "
                                     f"import is not counted)")
            self._add_plugin(obj, info)

    def _fail(self, info: PluginInfo, message: str, exc: BaseException | None = None) -> None:
        self._unique_name(info)
        info.status = "failed"
        info.error = message
        self._plugins[info.name] = info
        if self.strict:
            raise PluginError(f"plugin {info.label}: {message}") from exc

    def load_plugin(self, plugin: Any, name: str | None = None, distribution: str | None = None,
                    version: str | None = None) -> PluginInfo:
        """Register a plugin object (module, class or instance with hook implementations)
        in-process, as if an entry point had named it; returns what happened."""
        self._ensure_loaded()
        info = PluginInfo(name=name or getattr(plugin, "__name__", repr(plugin)),
                          distribution=distribution, version=version)
        with self._lock:
            self._add_plugin(plugin, info)
            self._adapters = None  # collected again: the new plugin may register adapters
        return info

    def _unique_name(self, info: PluginInfo) -> None:
        """An entry point named like a plugin already loaded never replaces it."""
        holder = self._plugins.get(info.name)
        if holder is info or (holder is None and self.pm.get_plugin(info.name) is None):
            return
        wanted, base = info.name, f"{info.name}@{info.distribution or 'in-process'}"
        info.name, n = base, 2
        while info.name in self._plugins or self.pm.get_plugin(info.name) is not None:
            info.name, n = f"{base}-{n}", n + 1
        held = f"plugin {holder.label}" if holder else "another plugin"
        info.problems.append(f"plugin name {wanted!r} is held by {held}; loaded as {info.name!r}")

    def _add_plugin(self, obj: Any, info: PluginInfo) -> None:
        self._unique_name(info)
        try:
            self.pm.register(obj, name=info.name)
            self.pm.check_pending()
        except Exception as exc:  # noqa: BLE001
            if self.pm.get_plugin(info.name) is obj:
                self.pm.unregister(name=info.name)
            self._fail(info, f"invalid hooks: {type(exc).__name__}: {exc}", exc)
            return
        self._plugins[info.name] = info
        specs, aliases = dict(self._specs), dict(self._aliases)
        try:
            self._call_register_hook(obj, info)
        except BaseException as exc:
            if not _contained(exc):
                raise
            self._specs, self._aliases = specs, aliases  # a failed plugin leaves nothing behind
            info.variants.clear()
            self.pm.unregister(obj)  # nor any other hook (its commands)
            if isinstance(exc, PluginError):
                raise
            message = f"zoo_register_variants raised {type(exc).__name__}: {exc}"
            if not isinstance(exc, _Refused):
                message += "\n" + "".join(traceback.format_exception(exc)[-3:]).rstrip()
            self._fail(info, message, exc)
            return
        if self.strict and info.problems:
            self._specs, self._aliases = specs, aliases
            raise PluginError(f"plugin {info.label}: " + "; ".join(info.problems))

    def _subset_caller(self, hook: str, obj: Any):
        """Plugin ``obj``'s implementations of ``hook``, called through pluggy alone."""
        others = [p for p in self.pm.get_plugins() if p is not obj]
        return self.pm.subset_hook_caller(hook, remove_plugins=others)

    def _call_register_hook(self, obj: Any, info: PluginInfo) -> None:
        if isinstance(obj, types.ModuleType):  # variants declared with @zoo.variant need no hook
            for spec in declared_in(obj.__name__):
                self._register_from_plugin(spec, info)
        impls = [i for i in self.pm.hook.zoo_register_variants.get_hookimpls() if i.plugin is obj]
        for impl in impls:
            if impl.tryfirst or impl.trylast:
                raise _Refused(f"plugin {info.name!r} marks zoo_register_variants "
                               f"{'tryfirst' if impl.tryfirst else 'trylast'}: the zoo calls plugins in "
                               f"name-precedence order (built-ins, then distributions by name); drop the marker")
        if not impls:
            return

        def _register(spec: Any) -> None:
            self._register_from_plugin(spec, info)

        self._registering = info
        try:
            self._subset_caller("zoo_register_variants", obj)(register=_register)
        finally:
            self._registering = None

    def _register_from_plugin(self, spec: Any, info: PluginInfo) -> None:
        try:
            spec = validate_spec(spec)
            spec = dataclasses.replace(spec)  # the registry's own copy carries the provenance
            object.__setattr__(spec, "_provenance", (info.name, info.distribution))
            self._add(spec)
        except RegistrationError as exc:
            info.problems.append(str(exc))
            if self.strict:
                raise PluginError(f"plugin {info.label}: {exc}") from exc
            return
        info.variants.append(spec.name)

    # -- registration -----------------------------------------------------
    def _add(self, spec: VariantSpec) -> None:
        with self._lock:
            for key in (spec.name, *spec.aliases):
                owner = self._owner(key)
                if owner is not None:
                    what = repr(key) if key == spec.name else f"alias {key!r} of {spec.name!r}"
                    raise RegistrationError(
                        f"cannot register {what} from {spec.source}: the name is already "
                        f"taken by variant {owner.name!r} from {owner.source}"
                    )
            self._specs[spec.name] = spec
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
            if caller is not None and spec.plugin != caller.name:
                raise RegistrationError(
                    f"plugin {caller.label} tried to unregister {spec.name!r}, registered by {spec.source}: "
                    f"a plugin may remove only its own variants (name it something else)")
            del self._specs[spec.name]
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
        spec = self.get(name)
        return {"plugin": spec.plugin, "distribution": spec.distribution}

    def plugin_of(self, name: str) -> Any:
        """The plugin object (the entry point's module) that registered variant ``name``,
        for what the plugin ships beside its layer (RETRO's database); ``None`` for an
        in-process :meth:`register`."""
        plugin = self.provenance(name)["plugin"]
        return None if plugin is None else self.pm.get_plugin(plugin)

    def plugins(self) -> list[PluginInfo]:
        """Every plugin seen, loaded or failed, sorted by name."""
        self._ensure_loaded()
        return sorted(self._plugins.values(), key=lambda p: p.name)

    def call_each(self, hook: str, **kwargs: Any) -> None:
        """Call ``hook`` plugin by plugin through pluggy (in pluggy's order: tryfirst and
        trylast respected), so that a plugin whose implementation raises is reported in
        ``zoo plugins`` and the other plugins still run (strict mode: a ``PluginError``)."""
        self._ensure_loaded()
        impls = getattr(self.pm.hook, hook).get_hookimpls()
        order = list(dict.fromkeys(i.plugin_name for i in reversed(impls)))  # pluggy calls last-registered first
        for name in order:
            obj = self.pm.get_plugin(name)
            try:
                self._subset_caller(hook, obj)(**kwargs)
            except BaseException as exc:  # noqa: BLE001
                if not _contained(exc):
                    raise
                info = self._plugins.get(name)
                if info is not None:
                    info.problems.append(f"{hook} raised {type(exc).__name__}: {exc}")
                if self.strict:
                    raise PluginError(f"plugin {name}: {type(exc).__name__}: {exc}") from exc

    def call_commands_hook(self, subparsers: Any) -> None:
        """Let each plugin add CLI sub-commands (:meth:`call_each`)."""
        self.call_each("zoo_register_commands", subparsers=subparsers)

    def adapters(self) -> list[Any]:
        """The :class:`zoo.SwapAdapter` objects plugins register (hook
        ``zoo_register_adapters``), collected once, in registration order."""
        self._ensure_loaded()
        with self._lock:
            if self._adapters is None:
                found: list[Any] = []

                def _register(adapter: Any) -> None:
                    name = getattr(adapter, "name", None)
                    if not isinstance(name, str) or not callable(getattr(adapter, "match", None)):
                        raise RegistrationError(
                            f"register() expects an adapter with a str `name` and a `match(path, module)` "
                            f"method (subclass zoo.SwapAdapter), got {adapter!r:.80}")
                    if any(a.name == name for a in found):
                        raise RegistrationError(f"an adapter named {name!r} is already registered")
                    found.append(adapter)

                self.call_each("zoo_register_adapters", register=_register)
                self._adapters = found
            return list(self._adapters)

    def call_tasks_hook(self, register: Any) -> None:
        """Let each plugin register ``zoo compare`` tasks through ``register(task)``
        (:meth:`call_each`: one failing plugin never hides the others' tasks)."""
        self.call_each("zoo_register_tasks", register=register)


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

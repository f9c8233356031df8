"""The plugin loader: finds the plugins of the entry-point group ``zoo`` and calls their hooks.

Plugins are loaded lazily, once, the first time the registry is consulted. Each plugin is
imported and called in isolation: one that fails to import, raises in a hook
(``SystemExit`` included: any ``BaseException`` but ``KeyboardInterrupt``), registers a
clashing name or an invalid spec is recorded as a failure (``zoo plugins`` lists it with
its name, version and error) and every other plugin keeps working. A failed plugin leaves
no variant behind.

Plugins load in name-precedence order: the built-ins (distribution ``attention-zoo``),
then third-party plugins sorted by distribution name. An entry point named like an
already loaded plugin never replaces it: it is loaded as ``name@distribution`` and the
clash is reported.

One calling rule for every hook: through pluggy, one plugin at a time, in load order
(wrappers work). ``tryfirst``/``trylast`` would reorder that order (and with it name
precedence), so a plugin marking any zoo hook with them is refused when it loads.
Plugin import times are measured after ``torch`` itself is imported, so the first plugin
is not blamed for it. pluggy's ``load_setuptools_entrypoints`` is not used: it stops at the
first plugin that fails and knows neither precedence nor ``ZOO_LOAD_PLUGINS``.

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

import os
import sys
import threading
import time
import traceback
import types
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from zoo import hookspecs
from zoo.declare import declared_in
from zoo.entrypoints import BUILTIN_DISTRIBUTION, ENTRY_POINT_GROUP, allowed, precedence, seconds_from_env
from zoo.errors import PluginError, RegistrationError

__all__ = ["PluginInfo", "PluginLoader", "ENTRY_POINT_GROUP", "BUILTIN_DISTRIBUTION", "CORE_PLUGIN"]

CORE_PLUGIN = "zoo"
"""The name of the zoo's own plugin (:mod:`zoo.commands`, registered by the command line),
whose hooks are called before any entry point's."""

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


class PluginLoader:
    """Loads the plugins and calls their hooks; :class:`zoo.registry.Registry` adds the
    name tables (``_register_from_plugin``, ``_tables``, ``_restore``, ``_clear``)."""

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

    # -- what the name tables provide (zoo.registry.Registry) ----------------
    def _register_from_plugin(self, spec: Any, info: PluginInfo) -> None:
        raise NotImplementedError

    def _tables(self) -> Any:
        return None

    def _restore(self, tables: Any) -> None:
        pass

    def _clear(self) -> None:
        pass

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
                self._clear()
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
        tables = self._tables()
        try:
            self._call_register_hook(obj, info)
        except BaseException as exc:
            if not _contained(exc):
                raise
            self._restore(tables)  # a failed plugin leaves nothing behind
            info.variants.clear()
            self.pm.unregister(obj)  # nor any other hook (its commands)
            if isinstance(exc, PluginError):
                raise
            if isinstance(exc, _Refused):
                message = str(exc)
            else:
                message = f"zoo_register_variants raised {type(exc).__name__}: {exc}"
                message += "\n" + "".join(traceback.format_exception(exc)[-3:]).rstrip()
            self._fail(info, message, exc)
            return
        if self.strict and info.problems:
            self._restore(tables)
            raise PluginError(f"plugin {info.label}: " + "; ".join(info.problems))

    def _subset_caller(self, hook: str, obj: Any):
        """Plugin ``obj``'s implementations of ``hook``, called through pluggy alone."""
        others = [p for p in self.pm.get_plugins() if p is not obj]
        return self.pm.subset_hook_caller(hook, remove_plugins=others)

    def use_core_plugin(self, plugin: Any) -> None:
        """Register one of the zoo's own plugins (the command line passes :mod:`zoo.commands`)
        as :data:`CORE_PLUGIN`, called first for every hook; once (a plugin already under
        that name stays)."""
        with self._lock:
            if self.pm.get_plugin(CORE_PLUGIN) is None:
                self.pm.register(plugin, name=CORE_PLUGIN)

    def _refuse_reordering(self, obj: Any, info: PluginInfo) -> None:
        """The one calling rule: every hook plugin by plugin in load order, so a marker that
        would reorder the plugins (``tryfirst``/``trylast``) is refused, on any hook."""
        for caller in self.pm.get_hookcallers(obj) or ():
            for impl in caller.get_hookimpls():
                if impl.plugin is obj and (impl.tryfirst or impl.trylast):
                    raise _Refused(f"plugin {info.name!r} marks {caller.name} "
                                   f"{'tryfirst' if impl.tryfirst else 'trylast'}: the zoo calls every hook "
                                   f"plugin by plugin in load order (built-ins, then distributions by name); "
                                   f"drop the marker")

    def _call_register_hook(self, obj: Any, info: PluginInfo) -> None:
        self._refuse_reordering(obj, info)
        if isinstance(obj, types.ModuleType):  # variants declared with @zoo.variant need no hook
            for spec in declared_in(obj.__name__):
                self._register_from_plugin(spec, info)
        impls = [i for i in self.pm.hook.zoo_register_variants.get_hookimpls() if i.plugin is obj]
        if not impls:
            return

        def _register(spec: Any) -> None:
            self._register_from_plugin(spec, info)

        self._registering = info
        try:
            self._subset_caller("zoo_register_variants", obj)(register=_register)
        finally:
            self._registering = None

    def plugins(self) -> list[PluginInfo]:
        """Every plugin seen, loaded or failed, sorted by name."""
        self._ensure_loaded()
        return sorted(self._plugins.values(), key=lambda p: p.name)

    def call_each(self, hook: str, **kwargs: Any) -> None:
        """Call ``hook`` plugin by plugin through pluggy, in load order (the one calling
        rule, as for ``zoo_register_variants``), so that a plugin whose implementation
        raises is reported in ``zoo plugins`` and the other plugins still run (strict
        mode: a ``PluginError``)."""
        self._ensure_loaded()
        implementing = {i.plugin_name for i in getattr(self.pm.hook, hook).get_hookimpls()}
        order = [name for name in (CORE_PLUGIN, *self._plugins) if name in implementing]  # dicts keep load order
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

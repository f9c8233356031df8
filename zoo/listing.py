"""What ``zoo list``, ``show``, ``schema``, ``plugins`` and ``--help`` print, kept between runs.

Loading the plugins imports torch (every plugin module does), which takes seconds. What
the light commands print depends only on which plugins are installed and their code, so
after the plugins have been loaded once it is stored as a :class:`Listing` (plain JSON:
variants with their config fields and schemas, plugins, sub-commands) in the user's cache
directory, and answered from there by a later run with no plugin (and no torch) import.

The cache key is everything that decides the listing: the Python interpreter, every installed distribution (name and version), every entry point of the
group ``zoo`` with its distribution, the size and modification time of every ``.py``
file of each plugin's top-level package (an editable install changes nothing else), the
zoo's own version and source files, and ``ZOO_LOAD_PLUGINS``, ``ZOO_STRICT_PLUGINS`` and
``ZOO_PLUGIN_SLOW_S``. Any change gives a new key: a stale entry is never read again.

Where: ``$ZOO_CACHE_DIR`` if set (empty: no cache at all), else
``$XDG_CACHE_HOME/attention-zoo`` or ``~/.cache/attention-zoo``, in ``listing/``.
This module imports neither torch nor any plugin.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import UnknownVariantError

__all__ = ["Listing", "cache_root", "listing_key", "load_listing", "store_listing", "build_listing"]

FORMAT = 1
KEY_ENV = ("ZOO_LOAD_PLUGINS", "ZOO_STRICT_PLUGINS", "ZOO_PLUGIN_SLOW_S")


def cache_root() -> Path | None:
    """The zoo's folder in the user's cache directory, or ``None`` when caching is off
    (``ZOO_CACHE_DIR=``)."""
    chosen = os.environ.get("ZOO_CACHE_DIR")
    if chosen is not None:
        return Path(chosen) if chosen else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "attention-zoo"


@dataclass
class Listing:
    """The registry as the light commands print it, as plain data.

    ``variants``: canonical name -> facts (plugin, summary, aliases, paper, source,
    layer, context, complexity, capabilities, laws, config ``fields`` rows and the
    config's JSON ``schema``); ``plugins``: one dict per plugin as
    :class:`zoo.loader.PluginInfo` holds it; ``commands``: ``[name, help]`` of every
    sub-command in ``zoo --help`` order; ``cached_at``: when it was stored (``None``: live).
    """

    variants: dict[str, dict[str, Any]]
    aliases: dict[str, str]
    plugins: list[dict[str, Any]]
    commands: list[list[str]] = field(default_factory=list)
    torch_import_seconds: float | None = None
    cached_at: float | None = None

    def names(self, pattern: str = "*") -> list[str]:
        import fnmatch

        return sorted(n for n in self.variants if fnmatch.fnmatchcase(n, pattern))

    def get(self, name: str) -> dict[str, Any]:
        """The facts of variant ``name`` (canonical or alias); unknown: UnknownVariantError,
        with the same suggestions as the registry's."""
        canonical = name if name in self.variants else self.aliases.get(name)
        if canonical is None:
            raise UnknownVariantError(name, [*self.variants, *self.aliases], canonical=self.variants)
        return self.variants[canonical]

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "variants": self.variants, "aliases": self.aliases, "plugins": self.plugins,
                "commands": self.commands, "torch_import_seconds": self.torch_import_seconds,
                "cached_at": self.cached_at}

    @classmethod
    def from_json(cls, data: Any) -> Listing | None:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            return None
        try:
            return cls(variants=dict(data["variants"]), aliases=dict(data["aliases"]), plugins=list(data["plugins"]),
                       commands=[list(c) for c in data["commands"]], torch_import_seconds=data["torch_import_seconds"],
                       cached_at=data["cached_at"])
        except (KeyError, TypeError, ValueError):
            return None


def build_listing(registry: Any, commands: list[list[str]]) -> Listing:
    """The listing of a loaded registry (imports what the specs need: torch, pydantic)."""
    from zoo.harness.capabilities import describe_capabilities, resolve_capabilities
    from zoo.text import config_rows

    variants: dict[str, dict[str, Any]] = {}
    aliases: dict[str, str] = {}
    for name in registry.names():
        spec = registry.get(name)
        plugin, _ = registry.provenance_of(spec)
        variants[name] = {
            "plugin": plugin, "summary": spec.summary, "aliases": list(spec.aliases), "paper": spec.paper,
            "source": spec.source, "layer": f"{spec.module.__module__}.{spec.module.__qualname__}",
            "context": spec.context_shape, "complexity": spec.complexity,
            "capabilities": describe_capabilities(resolve_capabilities(spec)),
            "laws": [law.name for law in spec.laws],
            "fields": [list(row) for row in config_rows(spec.config)],
            "schema": spec.config.model_json_schema(),
        }
        aliases.update({alias: name for alias in spec.aliases})
    plugins = [{"name": p.name, "distribution": p.distribution, "version": p.version, "status": p.status,
                "error": p.error, "variants": list(p.variants), "problems": list(p.problems), "seconds": p.seconds}
               for p in registry.plugins()]
    return Listing(variants, aliases, plugins, commands, registry.torch_import_seconds)


# -- the key ------------------------------------------------------------------
def _stat_tree(location: str, out: list) -> None:
    """(path, size, mtime) of every ``.py`` file under ``location`` (a file or a folder)."""
    if os.path.isfile(location):
        st = os.stat(location)
        out.append((location, st.st_size, st.st_mtime_ns))
        return
    for folder, dirs, files in os.walk(location):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                out.append((path, st.st_size, st.st_mtime_ns))


def _package_locations(top: str) -> list[str]:
    """Where top-level module ``top`` lives, found without importing it."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return sorted(str(p) for p in spec.submodule_search_locations)
    return [spec.origin] if spec.origin and os.path.isfile(spec.origin) else []


def _installed_distributions() -> list[str]:
    """The ``*.dist-info`` / ``*.egg-info`` folders on ``sys.path`` (names carry versions)."""
    found = []
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        found.extend(f"{entry}:{n}" for n in names if n.endswith((".dist-info", ".egg-info")))
    return sorted(found)


def listing_key() -> str:
    """The cache key of the listing this process would build (see the module's docstring)."""
    from importlib import metadata

    from zoo.entrypoints import ENTRY_POINT_GROUP

    eps = []
    tops: set[str] = {"zoo"}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        eps.append((ep.name, ep.value, dist.name if dist else None, dist.version if dist else None))
        tops.add(ep.value.split(":")[0].split(".")[0].strip())
    files: list = []
    for top in sorted(tops):
        for location in _package_locations(top):
            _stat_tree(location, files)
    parts = {
        "format": FORMAT, "python": [sys.executable, sys.version], "entry_points": sorted(eps, key=str),
        "distributions": _installed_distributions(), "files": files,
        "env": {name: os.environ.get(name) for name in KEY_ENV},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _path(key: str) -> Path | None:
    root = cache_root()
    return None if root is None else root / "listing" / f"{key}.json"


def load_listing(key: str) -> Listing | None:
    """The stored listing for ``key``, or ``None`` (no cache, no entry, an unreadable one)."""
    path = _path(key)
    if path is None:
        return None
    try:
        return Listing.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def store_listing(key: str, listing: Listing) -> None:
    """Keep ``listing`` under ``key``; a cache that cannot be written is skipped."""
    from zoo.io import atomic_write

    path = _path(key)
    if path is None:
        return
    data = listing.to_json()
    data["cached_at"] = time.time()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "w") as handle:
            handle.write(json.dumps(data))
    except (OSError, ValueError, TypeError):
        pass

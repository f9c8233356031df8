"""The floor's results, cached between runs.

The floor (``"variant": "none"``: the task's model with no conditioning layer) is the
same for every comparison of a task at one tier and seed, so ``zoo compare`` trains it
once and keeps its row in the user's cache directory. The key covers everything that
decides the row: the task's name and the source of the module defining it, the tier,
the seed, the device, torch's version and the source of the training loop. Any change
gives a new key (an old entry is simply never read again).

Where: ``$ZOO_CACHE_DIR`` if set (empty: no cache), else ``$XDG_CACHE_HOME/attention-zoo``
or ``~/.cache/attention-zoo``, in ``compare-floors/``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from pathlib import Path
from typing import Any

__all__ = ["cache_dir", "floor_key", "load_floor", "store_floor"]


def cache_dir() -> Path | None:
    """The folder for cached floors, or ``None`` when caching is off (``ZOO_CACHE_DIR=``)."""
    from zoo.listing import cache_root

    root = cache_root()
    return None if root is None else root / "compare-floors"


def _source_digest(obj: Any) -> str:
    try:
        path = inspect.getsourcefile(obj)
        return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else "unknown"
    except (OSError, TypeError):
        return "unknown"


def floor_key(task: Any, tier: Any, seed: int, device: str) -> str:
    """The cache key of the floor's row for ``task`` at ``tier``, ``seed`` and ``device``."""
    import torch

    from zoo.compare import runner

    parts = {"task": task.name, "task_code": _source_digest(type(task)), "tier": dataclasses.asdict(tier),
             "seed": seed, "device": device, "torch": torch.__version__, "runner": _source_digest(runner)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def load_floor(key: str) -> dict | None:
    """The cached row, or ``None`` (no cache, no entry, or an unreadable one)."""
    folder = cache_dir()
    if folder is None:
        return None
    try:
        row = json.loads((folder / f"{key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return row if isinstance(row, dict) and row.get("variant") == "none" else None


def store_floor(key: str, row: dict) -> None:
    """Keep ``row``; a cache that cannot be written is skipped (it is only a cache)."""
    from zoo.io import atomic_write

    folder = cache_dir()
    if folder is None or row.get("value") is None:
        return
    try:
        with atomic_write(folder / f"{key}.json", "w") as handle:
            handle.write(json.dumps(row))
    except (OSError, ValueError):
        pass

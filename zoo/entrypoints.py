"""Which plugin entry points load, in which order, and the environment that steers it.

- ``ZOO_LOAD_PLUGINS``: a comma-separated list of entry-point or distribution names to
  load (empty or ``none``: none); unset: all.
- Load order is name precedence: the built-ins (distribution ``attention-zoo``) first,
  then third-party distributions sorted by name.
- ``ZOO_PLUGIN_SLOW_S``: seconds above which a plugin's import is reported as slow.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from importlib import metadata

__all__ = ["ENTRY_POINT_GROUP", "BUILTIN_DISTRIBUTION", "allowed", "precedence", "seconds_from_env"]

ENTRY_POINT_GROUP = "zoo"
BUILTIN_DISTRIBUTION = "attention-zoo"


def _norm(dist_name: str | None) -> str:
    return (dist_name or "").lower().replace("_", "-").replace(".", "-")


def seconds_from_env(env: Mapping[str, str], name: str, default: float) -> float:
    """A number of seconds from the environment; a value that is not one is reported (a
    warning naming the variable) and the default used: a diagnostic knob never stops the tool."""
    text = env.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0:  # NaN too
        warnings.warn(f"{name}={text!r} is not a number of seconds (>= 0); using {default}", stacklevel=4)
        return default
    return value


def precedence(ep: metadata.EntryPoint) -> tuple[int, str, str]:
    """Load order = name precedence: built-ins first, then distributions by name."""
    dist = getattr(ep, "dist", None)
    name = _norm(dist.name if dist else None)
    return (0 if name == BUILTIN_DISTRIBUTION else 1, name, ep.name)


def allowed(env_value: str | None, ep: metadata.EntryPoint) -> bool:
    if env_value is None:
        return True
    wanted = {w.strip() for w in env_value.split(",") if w.strip()}
    if not wanted or wanted == {"none"}:
        return False
    dist = getattr(ep, "dist", None)
    return ep.name in wanted or (dist is not None and dist.name in wanted)

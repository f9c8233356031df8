"""Exceptions raised by the zoo.

Every error a user can provoke is a subclass of a builtin (``LookupError``,
``ValueError``, ``RuntimeError``) so that code written against plain Python keeps
working, and every message says what was expected, what came, and how to fix it.
"""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable
from typing import Any

__all__ = ["UnknownVariantError", "UnknownVariantInFileError", "RegistrationError", "PluginError", "closest", "short_list", "short_repr"]

_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlong = 40


def short_repr(value: Any, limit: int = 120) -> str:
    """``repr(value)`` cut to about ``limit`` characters, never built in full.

    Error messages show user data through this: a nested structure whose lists
    share their items (YAML aliases, pickle memo references) has a tiny file but
    an astronomically long ``repr``; :mod:`reprlib` stops at a fixed depth and
    width, so the cost and the length stay bounded.
    """
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_list(items: Iterable[Any], limit: int = 12) -> str:
    """``a, b, c ... and N more``: at most ``limit`` items, each cut short, so a message
    about a huge mapping or registry stays one line."""
    items = list(items)
    shown = [i if isinstance(i, str) and len(i) <= 60 else short_repr(i, 60) for i in items[:limit]]
    return ", ".join(shown) + (f" ... and {len(items) - limit} more" if len(items) > limit else "")


def closest(word: str, candidates: Iterable[str], n: int = 3,
            preferred: Iterable[str] = ()) -> list[str]:
    """The names most similar to ``word`` (best first).

    Names in ``preferred`` (a registry's canonical names, as opposed to aliases)
    come before the others, so a misspelt name suggests the canonical name
    before an alias that happens to be spelt closer.
    """
    candidates = list(dict.fromkeys(candidates))
    hits = difflib.get_close_matches(word, candidates, n=max(1, len(candidates)), cutoff=0.5)
    if not hits:
        lowered = word.lower()
        hits = [c for c in candidates if lowered in c.lower() or c.lower() in lowered]
    first = set(preferred)
    hits.sort(key=lambda c: c not in first)  # stable: similarity order kept within each group
    return hits[:n]


class UnknownVariantError(LookupError):
    """A name that no registered variant (nor alias) has.

    ``.name`` is the name asked for, ``.suggestions`` the closest registered names.
    """

    def __init__(self, name: str, known: Iterable[str], canonical: Iterable[str] = ()):
        self.name = name
        known = sorted(known)
        self.suggestions = closest(name, known, preferred=canonical)
        if self.suggestions:
            hint = "did you mean " + " or ".join(repr(s) for s in self.suggestions) + "?"
        elif known:
            hint = "registered variants: " + short_list(known)
        else:
            hint = "no variants are registered (are plugins disabled by ZOO_LOAD_PLUGINS?)"
        super().__init__(f"unknown attention variant {short_repr(name)}: {hint} (see `zoo list`)")

    def __str__(self) -> str:  # LookupError would quote the message otherwise
        return self.args[0]


class UnknownVariantInFileError(UnknownVariantError, ValueError):
    """An unknown variant named by a file (a config file, a saved layer): a ``LookupError``
    like :class:`UnknownVariantError` and a ``ValueError`` like every other problem with the
    file. The message starts with the file's path; ``.name``, ``.suggestions`` and ``.path``
    are kept."""

    def __init__(self, path: Any, exc: UnknownVariantError) -> None:
        self.name, self.suggestions, self.path = exc.name, exc.suggestions, path
        Exception.__init__(self, f"{path}: {exc}")


class RegistrationError(ValueError):
    """A variant that cannot be registered: a clashing name or an invalid spec."""


class PluginError(RuntimeError):
    """A plugin that failed to load or register, raised in strict mode only."""

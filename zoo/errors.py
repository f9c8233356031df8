"""Exceptions raised by the zoo.

Every error a user can provoke is a subclass of a builtin (``LookupError``,
``ValueError``, ``RuntimeError``) so that code written against plain Python keeps
working, and every message says what was expected, what came, and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["UnknownVariantError", "RegistrationError", "PluginError", "closest"]


def closest(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The registered names most similar to ``word`` (best first)."""
    candidates = list(candidates)
    hits = difflib.get_close_matches(word, candidates, n=n, cutoff=0.5)
    if not hits:
        lowered = word.lower()
        hits = [c for c in candidates if lowered in c.lower() or c.lower() in lowered][:n]
    return hits


class UnknownVariantError(LookupError):
    """A name that no registered variant (nor alias) has.

    ``.name`` is the name asked for, ``.suggestions`` the closest registered names.
    """

    def __init__(self, name: str, known: Iterable[str]):
        self.name = name
        known = sorted(known)
        self.suggestions = closest(name, known)
        if self.suggestions:
            hint = "did you mean " + " or ".join(repr(s) for s in self.suggestions) + "?"
        elif known:
            hint = "registered variants: " + ", ".join(known)
        else:
            hint = "no variants are registered (are plugins disabled by ZOO_LOAD_PLUGINS?)"
        super().__init__(f"unknown attention variant {name!r}: {hint} (see `zoo list`)")

    def __str__(self) -> str:  # LookupError would quote the message otherwise
        return self.args[0]


class RegistrationError(ValueError):
    """A variant that cannot be registered: a clashing name or an invalid spec."""


class PluginError(RuntimeError):
    """A plugin that failed to load or register, raised in strict mode only."""

"""The one table of harness checks, filled by one decorator per check.

Each check is a function of one :class:`~zoo.harness.case.Case` (a variant's spec plus one
of its example configs) that raises :class:`~zoo.harness.case.CheckFailed` with a message
for the author. It declares itself where it is written, as scikit-learn's estimator
checks do::

    @harness_check("shape", "shape", "output has x's shape, dtype and device ...")
    def check_shape(case): ...

with its stable ``id``, its table column ``label``, what it proves, when it does not
apply (``applies(spec)`` returns the reason, from the capabilities, or ``None``), whether
it is ``slow`` and whether it runs by ``default``. The checks run in declaration order
(the families :mod:`~zoo.harness.numeric`, :mod:`~zoo.harness.symmetry` and
:mod:`~zoo.harness.lifecycle`, then the slow ones); :mod:`zoo.harness.ids` derives the
id lists from this table, :mod:`zoo.harness.checks` the runnable checks. Nothing is
kept in step by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["CheckInfo", "TABLE", "harness_check"]


def _always(spec: Any) -> None:
    return None


@dataclass(frozen=True)
class CheckInfo:
    """One check: its stable ``id``, its short ``label`` (a table column), a one-line
    ``description``, the function that runs it, when it ``applies``, whether it is
    ``slow`` (runs only with ``slow=True``) and whether it runs by ``default`` (an opt-in
    check runs only when selected by id or pattern)."""

    id: str
    label: str
    description: str
    func: Callable[..., str | None] | None = None
    applies: Callable[[Any], str | None] = _always
    slow: bool = False
    default: bool = True


TABLE: dict[str, CheckInfo] = {}
"""Every declared check by id, in declaration order."""


def harness_check(id: str, label: str, description: str, *, applies: Callable[[Any], str | None] | None = None,
                  slow: bool = False, default: bool = True) -> Callable:
    """Declare the decorated function as the harness check ``id`` (see the module docstring).

    Raises:
        ValueError: an id or label already declared by another check.
    """

    def declare(func: Callable) -> Callable:
        if id in TABLE:
            raise ValueError(f"harness check {id!r} is declared twice ({TABLE[id].func} and {func})")
        if label in {c.label for c in TABLE.values()}:
            raise ValueError(f"harness check {id!r}: label {label!r} is already another check's column")
        TABLE[id] = CheckInfo(id, label, description, func, applies or _always, slow, default)
        return func

    return declare

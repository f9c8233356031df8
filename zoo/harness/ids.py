"""The harness check ids, derived from the one table the checks declare themselves in
(:mod:`zoo.harness.table`): the order checks run in, the ids the selectors accept,
``zoo check --list-checks``, the table's column labels and the pytest plugin's slow marker.
"""

from __future__ import annotations

from zoo.harness import checks  # noqa: F401 - importing it declares every check
from zoo.harness.table import TABLE, CheckInfo

__all__ = ["CheckInfo", "CHECK_TABLE", "CHECK_IDS", "OPT_IN_CHECK_IDS", "SLOW_CHECK_IDS", "ALL_CHECK_IDS", "SHORT_NAMES", "info"]


CHECK_TABLE: tuple[CheckInfo, ...] = tuple(TABLE.values())
"""Every check, in the order they run (declared by :func:`zoo.harness.table.harness_check`)."""

CHECK_IDS: tuple[str, ...] = tuple(c.id for c in CHECK_TABLE if not c.slow and c.default)
"""The default checks, in the order they run."""
OPT_IN_CHECK_IDS: tuple[str, ...] = tuple(c.id for c in CHECK_TABLE if not c.slow and not c.default)
"""Checks that run only when selected (``checks=["nonfinite-input"]``, ``-k nonfinite-input``)."""
SLOW_CHECK_IDS: tuple[str, ...] = tuple(c.id for c in CHECK_TABLE if c.slow)
ALL_CHECK_IDS: tuple[str, ...] = tuple(c.id for c in CHECK_TABLE)
SHORT_NAMES: dict[str, str] = {c.id: c.label for c in CHECK_TABLE}
_BY_ID = {c.id: c for c in CHECK_TABLE}


def info(check_id: str) -> CheckInfo:
    """The table entry of ``check_id`` (``KeyError`` for an unknown id)."""
    return _BY_ID[check_id]

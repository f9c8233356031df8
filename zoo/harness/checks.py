"""The checks, bound to their ids: each a function of one :class:`~zoo.harness.case.Case`
(a variant's spec plus one of its example configs) that raises
:class:`~zoo.harness.case.CheckFailed` with a message for the author.

Each check declares itself, id, label, description and when it applies, with one
:func:`zoo.harness.table.harness_check` decorator where it is written: the families
:mod:`~zoo.harness.numeric` (values), :mod:`~zoo.harness.symmetry` (what must not matter)
and :mod:`~zoo.harness.lifecycle` (the layer as an object), and the slow checks below.
``applies(spec)`` returns the reason a check does not apply to a variant (its
capabilities decide, like scikit-learn's estimator tags) or ``None``.
"""

from __future__ import annotations

from collections.abc import Callable

# Importing the families declares their checks, in this order (the order checks run in).
from zoo.harness import numeric  # noqa: F401, I001
from zoo.harness import symmetry  # noqa: F401
from zoo.harness import lifecycle  # noqa: F401
from zoo.harness.case import (  # noqa: F401 - re-exported for authors and older imports
    DTYPES, EXACT, TOLERANCES, Case, CheckFailed, SkipCheck, _detached, _needs_masks, _needs_reference, _run,
    compare, max_diff,
)
from zoo.harness.table import TABLE, CheckInfo, harness_check
from zoo.spec import VariantSpec

__all__ = ["Check", "CheckFailed", "SkipCheck", "Case", "CHECKS", "TOLERANCES", "DTYPES", "checks_for"]


Check = CheckInfo
"""One harness check (the table's entry): ``id``, ``description``, ``func``, ``applies``, ..."""


@harness_check("compile", "compile", "torch.compile gives the eager output and gradients", slow=True)
def _compile(case: Case) -> str:
    from zoo.harness.slow import check_compile

    return check_compile(case)


@harness_check("ddp", "ddp", "a 2-process DistributedDataParallel step equals single-process training", slow=True)
def _ddp(case: Case) -> str:
    from zoo.harness.slow import check_ddp

    return check_ddp(case)


@harness_check("fsdp", "fsdp", "2 FSDP2 (fully_shard) steps over 2 processes equal single-process training",
               slow=True)
def _fsdp(case: Case) -> str:
    from zoo.harness.fsdp import check_fsdp

    return check_fsdp(case)


CHECKS: dict[str, Check] = dict(TABLE)
"""Every declared check by id, in the order they run (numeric, symmetry, lifecycle, slow)."""
DEFAULT_CHECK_IDS = tuple(c.id for c in CHECKS.values() if not c.slow and c.default)
SLOW_CHECK_IDS = tuple(c.id for c in CHECKS.values() if c.slow)


def check_law(law) -> Callable[[Case], str]:
    """A law as a check: it fails by raising ``AssertionError`` (:func:`zoo.testing.expect`
    raises :class:`zoo.testing.LawFailed`, one, and works under ``python -O``)."""
    def run(case: Case) -> str:
        try:
            law.check(case.spec, dict(case.fields), case.generator(4242))
        except AssertionError as exc:
            raise CheckFailed(f"law {law.name!r} ({law.description}) does not hold: {exc}") from exc
        return law.description

    run.__doc__ = law.description
    return run


def checks_for(spec: VariantSpec) -> list[Check]:
    """Every check for ``spec``: the built-in ones, then one ``law:<name>`` per law."""
    laws = [Check(f"law:{law.name}", f"law:{law.name}", law.description, check_law(law)) for law in spec.laws]
    return [*CHECKS.values(), *laws]

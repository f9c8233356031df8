"""The checks, bound to their ids: each a function of one :class:`~zoo.harness.case.Case`
(a variant's spec plus one of its example configs) that raises
:class:`~zoo.harness.case.CheckFailed` with a message for the author.

The ids, labels and descriptions come from the one table :data:`zoo.harness.ids.CHECK_TABLE`;
this module says which function runs each and when it applies: ``applies(spec)``
returns the reason a check does not apply to a variant (its capabilities decide, like
scikit-learn's estimator tags) or ``None``. The families live in :mod:`~zoo.harness.numeric`
(values), :mod:`~zoo.harness.symmetry` (what must not matter) and
:mod:`~zoo.harness.lifecycle` (the layer as an object).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from zoo.harness import ids
from zoo.harness.case import (  # noqa: F401 - re-exported for authors and older imports
    DTYPES, EXACT, TOLERANCES, Case, CheckFailed, SkipCheck, _detached, _needs_masks, _needs_reference, _run,
    compare, max_diff,
)
from zoo.harness.lifecycle import (check_bad_input, check_config_roundtrip, check_dropout, check_eval_determinism,
                                   check_nonfinite_input, check_state_dict)
from zoo.harness.numeric import check_mask, check_masked_rows, check_oracle_forward, check_oracle_grad, check_shape
from zoo.harness.symmetry import check_batch_independence, check_context_order, check_query_order
from zoo.spec import VariantSpec

__all__ = ["Check", "CheckFailed", "SkipCheck", "Case", "CHECKS", "TOLERANCES", "DTYPES", "checks_for"]


@dataclass(frozen=True)
class Check:
    """One harness check: a stable ``id``, what it proves, and how to run it."""

    id: str
    description: str
    func: Callable[[Case], str | None]
    applies: Callable[[VariantSpec], str | None] = lambda spec: None
    slow: bool = False
    default: bool = True


def _context_order_applies(spec: VariantSpec) -> str | None:
    if not spec.capabilities.context_order_invariant:
        return "capabilities.context_order_invariant is False"
    if not spec.capabilities.context_set_axes:
        return "capabilities.context_set_axes is empty"
    return None


def _query_order_applies(spec: VariantSpec) -> str | None:
    if not spec.capabilities.query_order_equivariant:
        return "capabilities.query_order_equivariant is False (the queries carry positions)"
    return None


def _dropout_applies(spec: VariantSpec) -> str | None:
    if spec.capabilities.dropout:
        return None
    why = " (inferred: the config has no 'dropout' field)" if "dropout" in spec.capabilities.inferred else ""
    return "capabilities.dropout is False" + why


def _compile(case: Case) -> str:
    from zoo.harness.slow import check_compile

    return check_compile(case)


def _ddp(case: Case) -> str:
    from zoo.harness.slow import check_ddp

    return check_ddp(case)


# id -> (function, applies); everything else about a check is in zoo.harness.ids.CHECK_TABLE.
_BINDINGS: dict[str, tuple[Callable[[Case], str | None], Callable[[VariantSpec], str | None] | None]] = {
    "shape": (check_shape, None),
    "oracle-forward": (check_oracle_forward, _needs_reference),
    "oracle-grad": (check_oracle_grad, _needs_reference),
    "mask": (check_mask, _needs_masks),
    "masked-rows": (check_masked_rows, _needs_masks),
    "batch-independence": (check_batch_independence, None),
    "context-order": (check_context_order, _context_order_applies),
    "query-order": (check_query_order, _query_order_applies),
    "eval-determinism": (check_eval_determinism, None),
    "dropout": (check_dropout, _dropout_applies),
    "state-dict": (check_state_dict, None),
    "config-roundtrip": (check_config_roundtrip, None),
    "bad-input": (check_bad_input, None),
    "nonfinite-input": (check_nonfinite_input, None),
    "compile": (_compile, None),
    "ddp": (_ddp, None),
}
if set(_BINDINGS) != set(ids.ALL_CHECK_IDS):  # a new row in the table needs its function here
    raise RuntimeError(f"check table and bindings differ: {sorted(set(_BINDINGS) ^ set(ids.ALL_CHECK_IDS))}")

CHECKS: dict[str, Check] = {
    row.id: Check(row.id, row.description, _BINDINGS[row.id][0], _BINDINGS[row.id][1] or (lambda spec: None),
                  slow=row.slow, default=row.default)
    for row in ids.CHECK_TABLE
}
DEFAULT_CHECK_IDS = ids.CHECK_IDS
SLOW_CHECK_IDS = ids.SLOW_CHECK_IDS


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
    laws = [Check(f"law:{law.name}", law.description, check_law(law)) for law in spec.laws]
    return [*CHECKS.values(), *laws]

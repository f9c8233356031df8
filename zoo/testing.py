"""The harness inside a plugin author's own pytest suite: one test per check.

    # test_my_variant.py
    from zoo.testing import parametrize_with_checks
    from my_package import SPEC

    @parametrize_with_checks([SPEC], expected_failures={"dropout": "no dropout yet"})
    def test_zoo_harness(variant, check):
        check(variant)

This generates ``test_zoo_harness[myvariant-shape]``, ``[myvariant-oracle-forward]``, ...
one per check id (laws included), like scikit-learn's ``parametrize_with_checks``. A
failing check fails its test with the harness's message; a check that does not apply
is skipped with the reason; an expected failure is a strict ``xfail`` (it fails the
suite once the check starts passing, so the entry gets removed). Slow checks are
marked ``zoo_slow`` and run only with ``pytest --zoo-slow`` (or ``ZOO_RUN_SLOW=1``);
both the marker and the option come from the ``zoo`` pytest plugin (entry point
``pytest11``), loaded automatically when attention-zoo is installed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["parametrize_with_checks", "HarnessCheck", "run_check", "expect", "LawFailed"]


class LawFailed(AssertionError):
    """A law does not hold (raised by :func:`expect`); the harness reports its message."""


def expect(condition: Any, message: str) -> None:
    """Fail a law (or any check of yours) with ``message`` unless ``condition`` is true.

    Use it instead of ``assert`` in :class:`zoo.Law` functions: ``python -O`` strips
    asserts, so a broken law written with them would pass. A NaN comparison is false,
    so ``expect(err < 1e-10, ...)`` fails on a NaN error too.

    Examples:
        ```python
        from zoo.testing import expect

        def my_law(spec, fields, generator):
            err = ...
            expect(err < 1e-10, f"differs from the written-out formula by {err:.2e}")
        ```

    Raises:
        LawFailed: ``condition`` is false (an ``AssertionError``, which the harness
            reports as the law's failure with ``message``).
    """
    if not condition:
        raise LawFailed(message)


class HarnessCheck:
    """One harness check as a callable for a test: ``check(variant)``.

    Runs :func:`zoo.check` with only this check id; a failure calls ``pytest.fail``
    with the harness's message (no traceback into the harness), a skip ``pytest.skip``.
    """

    def __init__(self, check_id: str, **options: Any) -> None:
        self.check_id = check_id
        self.options = options

    def __call__(self, variant: Any) -> None:
        run_check(variant, self.check_id, **self.options)

    def __repr__(self) -> str:
        return self.check_id


def run_check(variant: Any, check_id: str, **options: Any):
    """Run one check on ``variant`` (name or spec) the pytest way; returns the result."""
    import pytest

    from zoo.harness import check

    report = check(variant, checks=[check_id], **options)
    if check_id not in report:
        pytest.fail(f"check {check_id!r} did not run on {report.variant!r}", pytrace=False)
    result = report[check_id]
    if result.failed:
        pytest.fail(f"[{report.variant} / {check_id}] {result.message}", pytrace=False)
    if result.skipped:
        pytest.skip(f"{check_id} does not apply to {report.variant}: {result.message}")
    return result


def _key_matches(key: Any, variant: str, aliases: tuple[str, ...], check_id: str) -> bool:
    if isinstance(key, tuple) and len(key) == 2:
        return key[0] in (variant, *aliases) and key[1] == check_id
    return key == check_id


def parametrize_with_checks(
    variants: Iterable[Any],
    *,
    checks: Iterable[str] | str | None = None,
    slow: bool = False,
    expected_failures: Mapping[Any, str] | None = None,
    **options: Any,
):
    """A ``pytest.mark.parametrize`` over ``(variant, check)``: one test per harness check.

    Args:
        variants: registered names (or aliases) and/or :class:`zoo.VariantSpec` objects;
            a spec is checked as given, registered or not.
        checks: check ids or fnmatch patterns to include (default: all non-slow checks
            and every law).
        slow: also generate the slow checks (``compile``, ``ddp``); they are marked
            ``zoo_slow`` and skipped unless pytest runs with ``--zoo-slow``.
        expected_failures: ``{check_id: reason}`` for every variant, or
            ``{(variant, check_id): reason}`` for one; such tests become strict xfails.
            A key that matches no generated test raises ``ValueError``.
        **options: passed to :func:`zoo.check` (``dtypes``, ``device``, ``seed``, ...).

    Returns:
        A decorator for a test function taking the arguments ``variant`` (the
        :class:`~zoo.VariantSpec`) and ``check`` (call ``check(variant)``).
    """
    import pytest

    from zoo.harness import SLOW_CHECK_IDS, _resolve, planned_checks

    expected = dict(expected_failures or {})
    used: set[Any] = set()
    params = []
    for v in variants:
        spec = _resolve(v)
        for check_id in planned_checks(spec, checks=checks, slow=slow):
            marks = []
            if check_id in SLOW_CHECK_IDS:
                marks.append(pytest.mark.zoo_slow)
            for key, reason in expected.items():
                if _key_matches(key, spec.name, spec.aliases, check_id):
                    used.add(key)
                    marks.append(pytest.mark.xfail(reason=reason, strict=True))
            params.append(pytest.param(spec, HarnessCheck(check_id, **options), marks=marks,
                                       id=f"{spec.name}-{check_id}"))
    unused = [k for k in expected if k not in used]
    if unused:
        raise ValueError(f"expected_failures names checks that are not generated: {unused!r}; keys are "
                         f"check ids ('mask') or (variant, check id) pairs; see `zoo check --list-checks`")
    return pytest.mark.parametrize(("variant", "check"), params)

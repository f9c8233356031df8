"""The shared harness: every variant proven correct by the same checks.

    >>> import zoo
    >>> report = zoo.check("cross")
    >>> report.passed, [r.check for r in report.results][:3]
    (True, ['shape', 'oracle-forward', 'oracle-grad'])

:func:`check` runs each check (see :data:`CHECK_IDS`, the table :data:`zoo.harness.ids.CHECK_TABLE`
and ``zoo check --list-checks``) on
every example config of the spec and returns a :class:`CheckReport`. Capabilities decide
which checks apply (the others are "skipped" with the reason). Slow checks
(``compile``, ``ddp``) run only with ``slow=True``.
"""

from __future__ import annotations

import fnmatch
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from zoo.harness.ids import ALL_CHECK_IDS, CHECK_IDS, OPT_IN_CHECK_IDS, SLOW_CHECK_IDS
from zoo.harness.report import CheckReport, CheckResult, render_failures, render_table
from zoo.spec import VariantSpec

__all__ = [
    "check",
    "check_many",
    "CheckReport",
    "CheckResult",
    "CHECK_IDS",
    "SLOW_CHECK_IDS",
    "OPT_IN_CHECK_IDS",
    "describe_checks",
    "planned_checks",
    "render_table",
    "render_failures",
]

DTYPE_NAMES = ("float32", "float64", "bfloat16")


def _resolve(name_or_spec: Any) -> VariantSpec:
    if isinstance(name_or_spec, VariantSpec):
        return name_or_spec
    if isinstance(name_or_spec, str):
        from zoo.registry import get_variant

        return get_variant(name_or_spec)
    raise TypeError(f"zoo.check expects a variant name or a zoo.VariantSpec, got {type(name_or_spec).__name__}")


def _validate_selectors(checks: Iterable[str] | str | None) -> list[str] | None:
    if checks is None:
        return None
    if isinstance(checks, str):
        checks = [c for c in checks.split(",")]
    selectors = [c.strip() for c in checks if c and c.strip()]
    known = list(ALL_CHECK_IDS)
    for sel in selectors:
        if sel.startswith("law:") or any(fnmatch.fnmatchcase(k, sel) for k in known):
            continue
        from zoo.errors import closest

        hint = closest(sel, known, n=1)
        did = f"did you mean {hint[0]!r}? " if hint else ""
        raise ValueError(f"unknown check {sel!r}: {did}valid ids are {', '.join(known)}, "
                         f"'law:<name>' and fnmatch patterns such as 'oracle-*' or 'law:*'")
    return selectors


def _validate_dtypes(dtypes: Iterable[str] | str | None) -> tuple[str, ...]:
    if dtypes is None:
        return DTYPE_NAMES
    if isinstance(dtypes, str):
        dtypes = dtypes.split(",")
    out = []
    for d in dtypes:
        d = str(d).strip().replace("torch.", "")
        d = {"bf16": "bfloat16", "fp32": "float32", "fp64": "float64", "float": "float32",
             "double": "float64"}.get(d, d)
        if d not in DTYPE_NAMES:
            raise ValueError(f"unsupported dtype {d!r} for the harness: choose from {', '.join(DTYPE_NAMES)}")
        out.append(d)
    if not out:
        raise ValueError("dtypes is empty: give at least one of " + ", ".join(DTYPE_NAMES))
    return tuple(dict.fromkeys(out))


def _selected(chk: Any, selectors: list[str] | None, slow: bool) -> bool:
    if selectors is None:
        return chk.default and (slow or not chk.slow)
    return any(fnmatch.fnmatchcase(chk.id, s) for s in selectors)


def planned_checks(name_or_spec: Any, *, checks: Iterable[str] | str | None = None,
                   slow: bool = False) -> list[str]:
    """The check ids :func:`check` would run on a variant (with these options)."""
    from zoo.harness.checks import checks_for

    spec = _resolve(name_or_spec)
    selectors = _validate_selectors(checks)
    return [c.id for c in checks_for(spec) if _selected(c, selectors, slow)]


def describe_checks(spec: VariantSpec | None = None) -> list[tuple[str, str, bool]]:
    """``(id, description, slow)`` of every check (plus ``spec``'s laws when given)."""
    from zoo.harness.checks import CHECKS, checks_for

    items = checks_for(spec) if spec is not None else list(CHECKS.values())
    return [(c.id, c.description, c.slow) for c in items]


def check(
    name_or_spec: Any,
    *,
    checks: Iterable[str] | str | None = None,
    slow: bool = False,
    dtypes: Iterable[str] | str | None = None,
    device: str = "cpu",
    seed: int = 0,
    examples: Sequence[dict] | None = None,
    progress: Callable[[str, str, CheckResult | None], None] | None = None,
) -> CheckReport:
    """Run the shared harness on one variant.

    Args:
        name_or_spec: a registered name or alias, or a :class:`zoo.VariantSpec` (checked
            exactly as given, registered or not: layers are built from its examples).
        checks: ids or fnmatch patterns to run (``["oracle-*", "law:*"]``, or a
            comma-separated string); default: every non-slow check and every law.
        slow: also run the slow checks (``compile``, ``ddp``) when ``checks`` is not given.
        dtypes: dtypes for the shape, oracle and masked-row checks; default
            ``("float32", "float64", "bfloat16")``.
        device: where layers and inputs live (oracles run there in float64).
        seed: seeds parameter perturbation and inputs (the harness never touches the
            global RNG state).
        examples: configs to check instead of ``spec.example_configs()``.
        progress: ``progress(variant, check_id, result)`` called before (result None)
            and after each check.

    Returns:
        A :class:`CheckReport`: ``.passed``, ``.results`` (one per check, status
        ``"passed"``, ``"failed"`` or ``"skipped"`` and a message).

    Raises:
        zoo.UnknownVariantError: an unknown name.
        ValueError: an unknown check id or dtype.
    """
    import torch  # noqa: F401 - the checks need it; import errors surface here

    from zoo.harness.checks import Case, CheckFailed, SkipCheck, checks_for

    from zoo.harness.capabilities import resolve_capabilities

    spec = _resolve(name_or_spec)
    source = spec.source  # the registry's record for this spec, by name (the copy below has none)
    selectors = _validate_selectors(checks)
    dtype_names = _validate_dtypes(dtypes)
    spec = spec.replace(capabilities=resolve_capabilities(spec))  # what was not declared, observed
    configs = tuple(examples) if examples is not None else spec.example_configs()
    cases = [Case(spec, fields, i, device=device, seed=seed, dtypes=dtype_names) for i, fields in enumerate(configs)]
    report = CheckReport(variant=spec.name, source=source)
    start = time.perf_counter()
    for chk in checks_for(spec):
        if not _selected(chk, selectors, slow):
            continue
        if progress:
            progress(spec.name, chk.id, None)
        t0 = time.perf_counter()
        reason = chk.applies(spec)
        if reason:
            result = CheckResult(chk.id, "skipped", reason, spec.name)
        else:
            result = _run_check(chk, cases, spec.name, CheckFailed, SkipCheck)
        result.seconds = time.perf_counter() - t0
        report.results.append(result)
        if progress:
            progress(spec.name, chk.id, result)
    report.seconds = time.perf_counter() - start
    return report


def _run_check(chk, cases, variant, CheckFailed, SkipCheck) -> CheckResult:
    import torch

    passed: list[str] = []
    skipped: list[str] = []
    multi = len(cases) > 1
    for case in cases:
        prefix = f"{case.label}: " if multi else ""
        try:
            with torch.random.fork_rng(devices=[]):  # laws may draw from the global RNG
                torch.manual_seed(case.seed)
                note = chk.func(case)
        except SkipCheck as exc:
            skipped.append(f"{prefix}{exc}")
            continue
        except CheckFailed as exc:
            return CheckResult(chk.id, "failed", f"{case.label}: {exc}", variant)
        except Exception as exc:  # noqa: BLE001 - any crash is a failure with its location
            tb = traceback.extract_tb(exc.__traceback__)
            where = f" (at {tb[-1].filename}:{tb[-1].lineno} in {tb[-1].name})" if tb else ""
            return CheckResult(chk.id, "failed", f"{case.label}: raised {type(exc).__name__}: {exc}{where}",
                               variant)
        passed.append(f"{prefix}{note}" if note else prefix.rstrip(": "))
    if not passed:
        return CheckResult(chk.id, "skipped", "; ".join(dict.fromkeys(skipped)) or "no examples", variant)
    return CheckResult(chk.id, "passed", "; ".join(p for p in passed if p), variant)


def check_many(names_or_specs: Iterable[Any], **options: Any) -> list[CheckReport]:
    """:func:`check` on each variant in turn (same options)."""
    return [check(n, **options) for n in names_or_specs]

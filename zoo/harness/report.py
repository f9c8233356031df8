"""What the harness returns: one :class:`CheckResult` per check, gathered in a
:class:`CheckReport` per variant, and the text table ``zoo check`` prints.

Nothing here imports torch: reports are plain data (``to_dict()`` is JSON-able;
the docs catalog reads it).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zoo.harness.ids import SHORT_NAMES

__all__ = ["CheckResult", "CheckReport", "render_table", "render_failures", "SHORT_NAMES"]

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"



@dataclass
class CheckResult:
    """The outcome of one check on one variant (over all its examples).

    Attributes:
        check: the stable check id (``"oracle-forward"``, ``"law:causal"``, ...).
        status: ``"passed"``, ``"failed"`` or ``"skipped"``.
        message: what went wrong and where (failed), why it does not apply
            (skipped), or a short summary (passed).
        variant: the variant's name.
        seconds: wall time spent on this check.
    """

    check: str
    status: str
    message: str = ""
    variant: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    @property
    def skipped(self) -> bool:
        return self.status == SKIPPED

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "status": self.status,
            "message": self.message,
            "variant": self.variant,
            "seconds": round(self.seconds, 4),
        }


@dataclass
class CheckReport:
    """Every check run on one variant.

    ``passed`` is True when no check failed (skipped checks do not fail a variant).
    """

    variant: str
    results: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0
    source: str = ""

    @property
    def passed(self) -> bool:
        return not any(r.failed for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.failed]

    def __getitem__(self, check_id: str) -> CheckResult:
        for r in self.results:
            if r.check == check_id:
                return r
        raise KeyError(f"no result for check {check_id!r}; ran: {', '.join(r.check for r in self.results)}")

    def __contains__(self, check_id: object) -> bool:
        return any(r.check == check_id for r in self.results)

    def __bool__(self) -> bool:
        return self.passed

    def counts(self) -> dict[str, int]:
        out = {PASSED: 0, FAILED: 0, SKIPPED: 0}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    def summary(self) -> str:
        c = self.counts()
        verdict = "passed" if self.passed else "FAILED"
        return (f"{self.variant}: {verdict} ({c[PASSED]} passed, {c[FAILED]} failed, "
                f"{c[SKIPPED]} skipped; {self.seconds:.1f} s)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "passed": self.passed,
            "seconds": round(self.seconds, 3),
            "source": self.source,
            "counts": self.counts(),
            "results": [r.to_dict() for r in self.results],
        }

    def table(self) -> str:
        """This report alone as the ``zoo check`` table plus its failure messages."""
        return render_table([self])

    def __str__(self) -> str:
        return self.table()


def _cell(results: Sequence[CheckResult]) -> str:
    if not results:
        return ""
    failed = sum(r.failed for r in results)
    passed = sum(r.passed for r in results)
    if len(results) == 1:
        return {PASSED: "ok", FAILED: "FAIL", SKIPPED: "-"}[results[0].status]
    if failed:
        return f"FAIL {failed}/{len(results)}"
    if passed:
        return f"ok {passed}/{len(results)}"
    return "-"


def render_table(reports: Sequence[CheckReport], *, legend: bool = True, failures: bool = True) -> str:
    """Rows = variants, columns = checks (``ok``, ``FAIL``, ``-`` = skipped); every
    ``law:*`` result of a variant is folded into one ``laws`` column. Below the table:
    a legend of the column labels and every failure message."""
    from zoo.text import format_table

    columns: list[str] = []
    has_laws = False
    for rep in reports:
        for r in rep.results:
            if r.check.startswith("law:"):
                has_laws = True
            elif r.check not in columns:
                columns.append(r.check)
    headers = ["variant", *(SHORT_NAMES.get(c, c) for c in columns)]
    if has_laws:
        headers.append("laws")
    headers.append("time")
    rows = []
    for rep in reports:
        row = [rep.variant]
        for c in columns:
            row.append(_cell([r for r in rep.results if r.check == c]))
        if has_laws:
            row.append(_cell([r for r in rep.results if r.check.startswith("law:")]) or "")
        row.append(f"{rep.seconds:.1f}s")
        rows.append(row)
    out = [format_table(headers, rows, wrap_last=False)]
    if legend:
        parts = [f"{SHORT_NAMES[c]}={c}" for c in columns if SHORT_NAMES.get(c, c) != c]
        if has_laws:
            parts.append("laws=law:* (variant-specific)")
        parts.append("ok=passed FAIL=failed -=skipped")
        out.append("\n".join(textwrap.wrap("legend: " + ", ".join(parts), 100, subsequent_indent="  ")))
    n_fail = sum(len(rep.failures) for rep in reports)
    n_var = sum(not rep.passed for rep in reports)
    if failures and n_fail:
        out.append("")
        out.append(render_failures(reports))
    total = sum(rep.seconds for rep in reports)
    verdict = (f"{n_fail} check(s) failed in {n_var} of {len(reports)} variant(s)" if n_fail
               else f"all {len(reports)} variant(s) passed")
    out.append(f"\n{verdict} ({total:.1f} s)")
    return "\n".join(out)


def render_failures(reports: Sequence[CheckReport]) -> str:
    """``variant / check`` and its message, for every failed check."""
    lines = ["failures:"]
    for rep in reports:
        for r in rep.failures:
            lines.append(f"  {rep.variant} / {r.check}:")
            for para in r.message.splitlines() or [""]:
                lines.extend(textwrap.wrap(para, 96, initial_indent="      ", subsequent_indent="        ")
                             or [""])
    return "\n".join(lines)

"""``zoo check NAME... | --all``: run the shared harness and print a table.

Rows are variants, columns check ids (``ok``, ``FAIL``, ``-`` for skipped), then every
failure message. Progress goes to stderr: a live line on a terminal, plain lines
otherwise. Exit status 0 when everything passed, 1 when any check failed; an
unknown name raises :class:`zoo.UnknownVariantError` (``zoo`` maps it to status 2).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Run the shared harness on variants: shapes, the float64 oracle (forward and "
                          "gradients), masks, batch independence, order laws, dropout, state dict and "
                          "config round trips, and each variant's own laws.")
    parser.add_argument("names", nargs="*", metavar="NAME", help="variant names or aliases")
    parser.add_argument("--all", action="store_true", help="check every registered variant")
    parser.add_argument("-k", "--checks", action="append", default=None, metavar="IDS",
                        help="only these check ids or fnmatch patterns (comma-separated, repeatable), "
                             "e.g. -k oracle-*,mask or -k 'law:*'")
    parser.add_argument("--slow", action="store_true",
                        help="also run the slow checks: compile (torch.compile), ddp and fsdp (2-process gloo)")
    parser.add_argument("--dtype", action="append", default=None, metavar="DTYPE",
                        help="dtypes for the shape/oracle checks (float32, float64, bfloat16; repeatable); "
                             "default all three")
    parser.add_argument("--device", default="cpu", help="device for layers and inputs (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed for parameters and inputs (default 0)")
    parser.add_argument("--json", metavar="PATH", help="also write the reports as JSON to PATH ('-': stdout, the table then goes to stderr)")
    parser.add_argument("--list-checks", action="store_true", help="list the check ids and exit")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="after the table, every result's message (what passed, why skipped)")


class _Progress:
    """A live line on a terminal, one line per finished variant otherwise."""

    def __init__(self, total: int, stream=None, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self.total = total
        self.done = 0
        self.failed = 0

    def __call__(self, variant: str, check_id: str, result) -> None:
        if not (self.enabled and self.tty):
            return
        if result is None:
            line = f"[{self.done + 1}/{self.total}] {variant}: {check_id} ..."
            self.stream.write("\r\033[K" + line)
            self.stream.flush()
        elif result.failed:
            self.failed += 1

    def variant_done(self, report) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()
            return
        self.stream.write(f"checked {report.summary()}\n")
        self.stream.flush()


def _list_checks() -> int:
    from zoo.text import format_table
    from zoo.harness import describe_checks

    from zoo.harness.ids import OPT_IN_CHECK_IDS

    rows = [(cid, "slow" if slow else "opt-in (-k)" if cid in OPT_IN_CHECK_IDS else "default", desc)
            for cid, desc, slow in describe_checks()]
    rows.append(("law:<name>", "default", "each law a variant's spec declares (see `zoo show NAME`)"))
    print(format_table(("check", "runs", "what it proves"), rows))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.list_checks:
        return _list_checks()
    from zoo.usage import usage_device, usage_output_path, usage_seed
    from zoo.harness import _validate_dtypes, _validate_selectors, check, render_table
    from zoo.registry import default_registry

    problem = (usage_output_path("--json", args.json) or usage_seed("--seed", args.seed)
               or usage_device("--device", args.device))
    if problem:
        print(f"zoo check: {problem}", file=sys.stderr)
        return 2
    registry = default_registry()
    if args.all and args.names:
        print("zoo check: give variant names or --all, not both", file=sys.stderr)
        return 2
    if args.all:
        names = registry.names()
        if not names:
            print("zoo check: no variants are registered (see `zoo plugins`)", file=sys.stderr)
            return 1
    elif args.names:
        names = list(dict.fromkeys(registry.get(n).name for n in args.names))  # unknown -> exit 2
    else:
        print("zoo check: name one or more variants, or use --all (see `zoo list`)", file=sys.stderr)
        return 2
    selectors = None
    if args.checks:
        selectors = [s for chunk in args.checks for s in chunk.split(",") if s.strip()]
    try:
        _validate_selectors(selectors)
        dtypes = _validate_dtypes(args.dtype)
    except ValueError as exc:
        print(f"zoo check: {exc}", file=sys.stderr)
        return 2
    progress = _Progress(len(names), enabled=not args.quiet)
    reports = []
    start = time.perf_counter()
    for name in names:
        report = check(registry.get(name), checks=selectors, slow=args.slow, dtypes=dtypes,
                       device=args.device, seed=args.seed, progress=progress)
        reports.append(report)
        progress.variant_done(report)
    wall = time.perf_counter() - start
    out = sys.stderr if args.json == "-" else sys.stdout  # stdout carries only the JSON then
    print(render_table(reports), file=out)
    if args.verbose:
        print("\nresults:", file=out)
        for rep in reports:
            for r in rep.results:
                print(f"  {rep.variant} / {r.check}: {r.status} ({r.seconds:.2f} s) {r.message}", file=out)
    if args.all:
        broken = [p.label for p in registry.plugins() if p.status == "failed"]
        if broken:
            print(f"\nzoo check: {len(broken)} plugin(s) failed to load and were not checked: "
                  f"{', '.join(broken)} (see `zoo plugins`)", file=sys.stderr)
    if args.json:
        payload = {"passed": all(r.passed for r in reports), "seconds": round(wall, 3),
                   "reports": [r.to_dict() for r in reports]}
        text = json.dumps(payload, indent=2)
        if args.json == "-":
            from zoo.usage import json_stdout

            stream = json_stdout()  # the real stdout: prints during the run went to stderr
            stream.write(text + "\n")
            stream.flush()
        else:
            Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0 if all(r.passed for r in reports) else 1

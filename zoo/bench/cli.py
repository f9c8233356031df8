"""``zoo bench``'s command line (:func:`add_arguments`, :func:`run`): the convention of every
sub-command, registered through ``zoo_register_commands`` by :mod:`zoo.commands`. Cheap to
import (``zoo --help`` imports it): torch is imported inside :func:`run`."""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Time every variant (forward, forward+backward) and its peak memory against the "
        "hand-written baseline its spec gives (bare scaled_dot_product_attention for attention) "
        "with the same weights, interleaved in one process; print medians and ratios and write "
        "them as JSON."
    )
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="variants to benchmark (default: every registered variant; one without "
                             "bench information in its spec is timed with no ratio)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: the 'quick' workloads, float32, 6 rounds, verdicts only where a 95%% "
                             "interval over paired rounds settles them (about a minute on 2 busy cores)")
    parser.add_argument("--size", choices=("full", "quick", "tiny"), default="full",
                        help="shape set: full (the issue's shapes), quick (= --quick), tiny (tests)")
    parser.add_argument("--dtype", default=None,
                        help="comma-separated dtypes (default: float32,bfloat16; float32 with --quick)")
    parser.add_argument("--shapes", default=None, metavar="NAMES",
                        help="comma-separated workload names from the variants' bench specs, e.g. sd,long "
                             "(default: every workload of each variant)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="interleaved rounds per measurement (default: 21, 6 with --quick)")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help="cheap measurements take more rounds (up to 4x --repeat) to fill about this "
                             "many seconds (default: 4, 0.25 with --quick)")
    parser.add_argument("--json", metavar="PATH|-", default=None,
                        help="write the results here ('-': the JSON alone on stdout; default: a whole run "
                             "from the repository writes benchmarks/results/cpu.json, a partial one nothing)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    system = parser.add_mutually_exclusive_group()
    system.add_argument("--system", action="store_true",
                        help="run the system checks even when variants are named (they measure the zoo as a "
                             "whole, not the named variants)")
    system.add_argument("--no-system", action="store_true",
                        help="skip the system checks (dispatch, import time, memory scaling, GFLOP/s); "
                             "a run that names variants skips them unless --system")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress display on stderr")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")


def _known_workloads(names: list[str]) -> list[str]:
    """The workload names the selected variants' specs give (all registered by default)."""
    import zoo
    from zoo.bench.cases import bench_of

    specs = [zoo.get_variant(n) for n in (names or zoo.list_variants())]
    return sorted({s.name for spec in specs for s in bench_of(spec).shapes})


def _usage_problem(args: argparse.Namespace) -> str | None:
    """A one-line reason why these arguments cannot run (checked before any work)."""
    from zoo.usage import usage_device, usage_output_path

    for option, value in (("--repeat", args.repeat), ("--threads", args.threads)):
        if value is not None and value < 1:
            return f"{option} must be at least 1, got {value}"
    if args.budget is not None and not args.budget >= 0:
        return f"--budget must be a number of seconds >= 0, got {args.budget}"
    if args.shapes is not None:
        shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
        known = _known_workloads(args.names)
        if not shapes:
            return f"--shapes is empty; use {', '.join(known)} (comma-separated)"
        for shape in shapes:
            if shape not in known:
                return (f"--shapes: unknown workload {shape!r}; the selected variants' specs give "
                        f"{', '.join(known)} (comma-separated)")
    for dtype in (d.strip() for d in (args.dtype or "float32").split(",")):
        if dtype not in ("float32", "bfloat16", "float16", "float64"):
            return f"--dtype: unknown dtype {dtype!r}; use float32, bfloat16, float16 or float64"
    return usage_output_path("--json", args.json) or usage_device("--device", args.device)


def run(args: argparse.Namespace) -> int:
    from zoo.bench.runner import main
    from zoo.usage import json_stdout

    problem = _usage_problem(args)
    if problem:
        import sys

        print(f"zoo bench: {problem}", file=sys.stderr)
        return 2
    return main(args, json_out=json_stdout())

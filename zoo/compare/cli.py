"""``zoo compare NAME... [--task TASK]... [--quick] [--seed N] [--json PATH|-]``.

Trains each named variant (and the floor, ``none``) on each task under one budget and
prints a task x variant table; progress goes to stderr. ``--json -`` prints the JSON
alone on stdout (the table then goes to stderr); ``--png PATH`` draws the matrix.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Train each variant on small tasks that separate conditioning mechanisms (recall, "
                          "global, aligned, memory, retrieval, and any task a plugin registers) under the same "
                          "budget, with the floor 'none' (no conditioning layer) for reference.")
    parser.add_argument("names", nargs="*", metavar="NAME", help="variant names or aliases (default: all registered)")
    parser.add_argument("--task", action="append", default=None, metavar="TASK",
                        help="only this task (repeatable; default every registered task)")
    parser.add_argument("--quick", action="store_true", help="the small tier: about a minute for four variants on 2 CPU cores")
    parser.add_argument("--seed", type=int, default=0, help="first seed (the tier runs 2 or 3 consecutive seeds)")
    parser.add_argument("--device", default="cpu", help="torch device for training (default cpu)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads for the run (default 1: the models are tiny, and more threads "
                             "on a busy machine make every step wait for a core; the JSON records the count)")
    parser.add_argument("--json", metavar="PATH", help="write the zoo-compare/1 JSON to PATH ('-': stdout, alone)")
    parser.add_argument("--png", metavar="PATH", help="draw the task x variant matrix to PATH (matplotlib)")
    parser.add_argument("--markdown", metavar="PATH", help="write a Markdown page of the results to PATH")
    parser.add_argument("--list-tasks", action="store_true", help="list the registered tasks and exit")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")


class _Progress:
    def __init__(self, stream, enabled: bool) -> None:
        self.stream, self.enabled = stream, enabled
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.last = ""

    def __call__(self, done: int, total: int, message: str) -> None:
        if not self.enabled:
            return
        line = f"[{done}/{total}] {message}"
        if self.tty:
            self.stream.write("\r\033[K" + (line if message != "done" else ""))
        elif message.split(" · seed")[0] != self.last:  # one plain line per cell in a log
            self.stream.write(line.split(" · seed")[0] + "\n")
            self.last = message.split(" · seed")[0]
        self.stream.flush()


def run(args: argparse.Namespace) -> int:
    from zoo.text import format_table
    from zoo.usage import json_stdout, usage_device, usage_output_path, usage_seed
    from zoo.compare import compare, get_task, list_tasks, task_problems
    from zoo.compare.report import draw, markdown, table
    from zoo.registry import default_registry

    problem = (usage_output_path("--json", args.json) or usage_output_path("--png", args.png, suffixes=(".png",))
               or usage_output_path("--markdown", args.markdown, suffixes=(".md",))
               or usage_seed("--seed", args.seed) or usage_device("--device", args.device)
               or (f"--threads {args.threads}: give a whole number of threads, 1 or more" if args.threads < 1 else None))
    if problem:
        print(f"zoo compare: {problem}", file=sys.stderr)
        return 2

    for problem in task_problems():
        print(f"zoo compare: a task was refused: {problem}", file=sys.stderr)
    if args.list_tasks:
        rows = [(n, get_task(n).metric, get_task(n).summary) for n in list_tasks()]
        print(format_table(("task", "metric", "summary"), rows))
        return 0
    try:
        tasks = [get_task(t).name for t in (args.task or list_tasks())]
    except ValueError as exc:
        print(f"zoo compare: {exc}", file=sys.stderr)
        return 2
    if not tasks:
        print("zoo compare: no task is registered (see `zoo plugins`)", file=sys.stderr)
        return 1
    reg = default_registry()
    names = [reg.get(n).name for n in args.names] if args.names else reg.names()  # unknown -> exit 2
    to_stdout = args.json == "-"
    progress = _Progress(sys.stderr, enabled=not args.quiet)
    import torch

    torch.set_num_threads(args.threads)
    doc = compare(names, tasks, quick=args.quick, seed=args.seed, device=args.device, progress=progress)
    text = json.dumps(doc, indent=2)
    if to_stdout:  # the real stdout: anything printed during the run went to stderr
        stream = json_stdout()
        stream.write(text + "\n")
        stream.flush()
    elif args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    print(table(doc), file=sys.stderr if to_stdout else sys.stdout)
    if args.png:
        draw(doc, args.png)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as fh:
            fh.write(markdown(doc))
    broken = sorted({r["task"] for r in doc["results"] if r.get("task_error")})
    if broken:
        print(f"zoo compare: these tasks could not be built: {', '.join(broken)} (see the reasons)", file=sys.stderr)
    failed = sorted({f"{r['variant']} on {r['task']}" for r in doc["results"] if r.get("error")})
    if failed:
        print(f"zoo compare: these runs failed: {', '.join(failed)} (see the reasons); the other results stand",
              file=sys.stderr)
    return 1 if broken or failed else 0

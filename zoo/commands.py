"""The zoo's own sub-commands (``check``, ``bench``, ``compare``), registered through the
``zoo_register_commands`` hook like any plugin's.

One convention for every sub-command, built-in or not: a module (or object) with
``add_arguments(parser)`` and ``run(args) -> int``, added with :func:`add_command`. The
command line registers this module as the plugin ``zoo``
(:meth:`zoo.loader.PluginLoader.use_core_plugin`), whose hooks are called before any
entry point's, so the built-in commands come first in ``zoo --help``. ``list``, ``show``, ``schema`` and
``plugins`` read the registry itself and stay in :mod:`zoo.cli`.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from zoo.hookspecs import hookimpl

__all__ = ["BUILTIN_COMMANDS", "add_command", "zoo_register_commands"]

BUILTIN_COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("check", "zoo.harness.cli", "run the shared harness on variants (the main job)"),
    ("bench", "zoo.bench.cli", "benchmark variants against their specs' hand-written baselines"),
    ("compare", "zoo.compare.cli", "train variants on tasks that show what each can learn from its context"),
)
"""``(name, module, help)`` of each built-in sub-command; the module follows the convention."""


def add_command(subparsers: argparse._SubParsersAction, name: str, help: str, command: Any) -> argparse.ArgumentParser:
    """Add sub-command ``name``: ``command.add_arguments(parser)`` fills its parser and
    ``command.run(args)`` runs it (its return value is the exit status)."""
    parser = subparsers.add_parser(name, help=help)
    command.add_arguments(parser)
    parser.set_defaults(func=command.run)
    return parser


@hookimpl
def zoo_register_commands(subparsers: argparse._SubParsersAction) -> None:
    for name, module, help_ in BUILTIN_COMMANDS:
        add_command(subparsers, name, help_, importlib.import_module(module))

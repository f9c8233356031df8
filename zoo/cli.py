"""The ``zoo`` command line: list, show, schema, plugins, check, bench (+ plugin commands)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import textwrap
import time
import typing
from collections.abc import Sequence
from typing import Any

import zoo.registry as registry_module
from zoo.commands import BUILTIN_COMMANDS
from zoo.errors import PluginError, UnknownVariantError
from zoo.listing import Listing, cache_root, build_listing, listing_key, load_listing, store_listing
from zoo.registry import default_registry
from zoo.text import config_rows, format_table, terminal_width, type_name  # noqa: F401 (re-exported)



def _width() -> int:
    return terminal_width()


# The command-line value checks and the `--json -` stream live in zoo.usage (plugin commands use
# them too); re-exported here for code that imported them from zoo.cli.
from zoo.usage import _JSON_STREAM, json_stdout, usage_device, usage_output_path, usage_seed  # noqa: E402,F401


def _check_plugin_env() -> None:
    """Explain ``ZOO_LOAD_PLUGINS`` names that match no installed plugin (on stderr)."""
    from importlib import metadata

    from zoo.errors import closest
    from zoo.entrypoints import ENTRY_POINT_GROUP

    value = os.environ.get("ZOO_LOAD_PLUGINS")
    if value is None:
        return
    wanted = [w.strip() for w in value.split(",") if w.strip()]
    if not wanted or wanted == ["none"]:
        return
    available: dict[str, str] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        available.setdefault(ep.name, f"{ep.name} ({dist.name})" if dist else ep.name)
        if dist is not None:
            available.setdefault(dist.name, f"{ep.name} ({dist.name})")
    for name in wanted:
        if name in available:
            continue
        hint = closest(name, available, n=1)
        did = f"did you mean {hint[0]!r}? " if hint else ""
        listing = ", ".join(sorted(set(available.values()))) or "none"
        print(f"zoo: ZOO_LOAD_PLUGINS names {name!r}, which matches no installed plugin "
              f"(entry-point or distribution name); {did}installed: {listing}", file=sys.stderr)


def _printable_streams() -> None:
    """Never fail on a character the terminal's encoding lacks (PYTHONIOENCODING=ascii)."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if isinstance(stream, io.TextIOWrapper) and encoding not in ("utf8", "utf16", "utf32"):
            with contextlib.suppress(Exception):
                stream.reconfigure(errors="replace")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2) instead of the usage block."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _unknown(exc: UnknownVariantError) -> int:
    print(f"zoo: {exc}", file=sys.stderr)
    return 2


def cmd_list(args: argparse.Namespace, listing: Listing) -> int:
    pattern = args.pattern if any(c in args.pattern for c in "*?[") else f"*{args.pattern}*"
    names = listing.names(pattern)
    if not names:
        if args.pattern == "*":
            print("no variant is registered (see `zoo plugins`; ZOO_LOAD_PLUGINS chooses which load)", file=sys.stderr)
            return 0
        print(f"no registered variant matches {args.pattern!r} (see `zoo list`)", file=sys.stderr)
        return 1
    rows = [(n, listing.variants[n]["plugin"] or "-", listing.variants[n]["summary"]) for n in names]
    print(format_table(("variant", "plugin", "summary"), rows))
    failed = [p for p in listing.plugins if p["status"] == "failed" or p["problems"]]
    if failed:
        print(f"\n{len(failed)} plugin(s) had problems; see `zoo plugins`.", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace, listing: Listing) -> int:
    try:
        v = listing.get(args.name)
    except UnknownVariantError as exc:
        return _unknown(exc)
    name = listing.aliases.get(args.name, args.name)
    out = [f"{name} — {v['summary']}", ""]
    facts = [
        ("aliases", ", ".join(v["aliases"]) or "-"),
        ("paper", v["paper"] or "-"),
        ("source", v["source"]),
        ("layer", v["layer"]),
        ("context", v["context"] or "-"),
        ("complexity", v["complexity"] or "-"),
        ("capabilities", v["capabilities"]),
        ("laws", ", ".join(v["laws"]) or "-"),
    ]
    key_w = max(len(k) for k, _ in facts)
    for k, value in facts:
        lines = textwrap.wrap(value, _width() - key_w - 4) or ["-"]
        out.append(f"  {k.ljust(key_w)}  {lines[0]}")
        out.extend(" " * (key_w + 4) + rest for rest in lines[1:])
    out += ["", "config fields:", textwrap.indent(format_table(("field", "type", "default", "description"), v["fields"]), "  ")]
    print("\n".join(out))
    return 0


def cmd_schema(args: argparse.Namespace, listing: Listing) -> int:
    try:
        v = listing.get(args.name)
    except UnknownVariantError as exc:
        return _unknown(exc)
    print(json.dumps(v["schema"], indent=2))
    return 0


def cmd_plugins(args: argparse.Namespace, listing: Listing) -> int:
    infos = listing.plugins
    if not infos:
        print("no plugins loaded (ZOO_LOAD_PLUGINS may disable them)")
        return 0
    rows = []
    for p in infos:
        detail = p["error"] if p["status"] == "failed" else ", ".join(p["variants"]) or "(no variants)"
        if p["problems"]:
            detail += " | " + "; ".join(p["problems"])
        rows.append((p["name"], p["distribution"] or "-", p["version"] or "-", p["status"],
                     f"{p['seconds'] * 1000:.0f} ms", detail))
    print(format_table(("plugin", "distribution", "version", "status", "import", "variants / error"), rows))
    torch_s = listing.torch_import_seconds
    if torch_s is not None:
        print(f"\n(import times exclude torch's own import, {torch_s * 1000:.0f} ms, done before any plugin)")
    elif infos:
        print("\n(import times exclude torch, which was imported before any plugin)")
    if listing.cached_at is not None:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(listing.cached_at))
        print(f"(as measured when the plugins were last loaded, {when}; this answer came from the cache: "
              f"ZOO_CACHE_DIR= loads them again)")
    return 1 if args.strict and any(p["status"] == "failed" or p["problems"] for p in infos) else 0


LIGHT_COMMANDS = ("list", "show", "schema", "plugins")
"""The commands answered from the listing (:mod:`zoo.listing`), cached or live."""


def _add_light_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered variants")
    p.add_argument("pattern", nargs="?", default="*",
                   help="a substring ('cr' finds every name containing it) or an fnmatch pattern ('c*')")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="describe a variant: summary, paper, config fields, source")
    p.add_argument("name")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("schema", help="print the JSON Schema of a variant's config")
    p.add_argument("name")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("plugins", help="list loaded and failed plugins")
    p.add_argument("--strict", action="store_true", help="exit 1 if any plugin failed")
    p.set_defaults(func=cmd_plugins)


def _parser_and_subparsers() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = _Parser(prog="zoo", description="attention-zoo: attention variants as interchangeable, checked parts.")
    parser.add_argument("--version", action="version", version=f"attention-zoo {__import__('zoo').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_light_commands(sub)
    return parser, sub


def _commands_of(parser: argparse.ArgumentParser) -> list[list[str]]:
    """``[name, help]`` of every sub-command, in ``zoo --help`` order."""
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        if isinstance(action, argparse._SubParsersAction):
            return [[a.dest, a.help or ""] for a in action._choices_actions]
    return []


def _light_parser(commands: list[list[str]] | None) -> argparse.ArgumentParser:
    """The parser for the light commands and ``--help``: the other sub-commands appear with
    their help (from the cache) but are never run through it. ``None``: not known yet."""
    parser, sub = _parser_and_subparsers()
    if commands is None:
        commands = [[name, help_] for name, _, help_ in BUILTIN_COMMANDS]
        parser.epilog = ("Plugins may add commands; they are listed here once the plugins have been loaded "
                         "(any command but --help and --version loads them, e.g. `zoo list`).")
    for name, help_ in commands:
        if name not in LIGHT_COMMANDS:
            sub.add_parser(name, help=help_)
    return parser


def _light_answer(argv: list[str]) -> int | None:
    """Answer ``--version``, ``--help`` and the light commands without loading any plugin
    (no torch): from the cached listing. ``None``: not answerable so (run the full way)."""
    command = next((a for a in argv if not a.startswith("-")), None)
    before = argv[: argv.index(command)] if command else argv
    if any(a not in ("-h", "--help", "--version") for a in before):
        return None  # an unknown option: argparse's own message, the full way
    if command is not None and command not in LIGHT_COMMANDS:
        return None
    if command is None and before[:1] == ["--version"]:
        parser, _ = _parser_and_subparsers()
        parser.parse_args(argv)  # prints the version, exits 0
    listing = load_listing(listing_key())
    if listing is None and (command is not None or cache_root() is None):
        return None  # a miss (or no cache at all, ZOO_CACHE_DIR=): load the plugins
    _check_plugin_env()
    parser = _light_parser(listing.commands if listing else None)
    args = parser.parse_args(argv)
    if command is None:
        parser.print_help()
        return 0
    return int(args.func(args, listing) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser, sub = _parser_and_subparsers()
    from zoo import commands

    registry = default_registry()
    registry.use_core_plugin(commands)  # the zoo's own check, bench and compare, through the same hook
    registry.call_commands_hook(sub)  # the zoo's commands first, then the plugins' commands
    return parser


class _PipeSafeStdout:
    """``sys.stdout`` that survives a reader closing the pipe (``zoo check | head -0``):
    later output goes to /dev/null, and the command still returns its own status."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def _closed_pipe(self) -> None:
        import os

        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())  # so the flush at exit cannot fail either
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._closed_pipe()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._closed_pipe()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``zoo`` command line; returns the exit status (whatever became of stdout)."""
    _printable_streams()
    real_stdout = sys.stdout
    safe = sys.stdout = _PipeSafeStdout(real_stdout)
    try:
        status = _main(argv)
        safe.flush()
        return status
    except BrokenPipeError:  # written past the wrapper (e.g. to stdout.buffer): unknown status
        safe._closed_pipe()
        return 1  # the output could not be written: never report success
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's status for SIGINT, no traceback
        print("zoo: interrupted", file=sys.stderr)
        return 130
    finally:
        sys.stdout = real_stdout


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    fresh = registry_module._default is None  # no registry in this process yet: the installed plugins decide
    if fresh:
        answered = _light_answer(argv)  # argparse's SystemExit (--version, usage errors) as before
        if answered is not None:
            return answered
        key = listing_key()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # a plugin printing at import: never on stdout
            parser = build_parser()
    except PluginError as exc:  # strict mode (ZOO_STRICT_PLUGINS=1)
        print(f"zoo: {exc}", file=sys.stderr)
        return 1
    _check_plugin_env()
    args = parser.parse_args(argv)
    listing = None
    if not getattr(args, "func", None) or args.command in LIGHT_COMMANDS:
        listing = build_listing(default_registry(), _commands_of(parser))
        if fresh:
            store_listing(key, listing)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    json_mode = getattr(args, "json", None) == "-"
    _JSON_STREAM.append(sys.stdout)
    try:
        with contextlib.redirect_stdout(sys.stderr) if json_mode else contextlib.nullcontext():
            if listing is not None:
                return int(args.func(args, listing) or 0)
            return int(args.func(args) or 0)
    except UnknownVariantError as exc:
        return _unknown(exc)
    except PluginError as exc:
        print(f"zoo: {exc}", file=sys.stderr)
        return 1
    finally:
        _JSON_STREAM.pop()

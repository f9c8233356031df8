"""Plain-text tables and type names for terminals and logs, shared by the CLI and the
libraries (harness and bench reports); imports nothing from the CLI."""

from __future__ import annotations

import shutil
import textwrap
import types
import typing
from collections.abc import Sequence
from typing import Any

__all__ = ["format_table", "terminal_width", "type_name", "config_rows"]


def terminal_width() -> int:
    """The terminal's width, clamped to 60..140 (100 when not a terminal)."""
    return max(60, min(shutil.get_terminal_size((100, 24)).columns, 140))


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, wrap_last: bool = True,
                 width: int | None = None) -> str:
    """A plain-text table that reads well in a terminal (and in a log).

    Args:
        headers: column titles.
        rows: the cells (anything with ``str``).
        wrap_last: wrap the last column to fit ``width``.
        width: the width to fit (default: the terminal's, see :func:`terminal_width`).
    """
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    if wrap_last and headers:
        used = sum(widths[:-1]) + 2 * (len(headers) - 1)
        widths[-1] = max(20, min(widths[-1], (width or terminal_width()) - used))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        last = textwrap.wrap(row[-1], widths[-1]) or [""] if wrap_last else [row[-1]]
        first = row[:-1] + [last[0]]
        lines.append("  ".join(c.ljust(w) for c, w in zip(first, widths)).rstrip())
        pad = sum(widths[:-1]) + 2 * (len(headers) - 1)
        lines.extend(" " * pad + extra for extra in last[1:])
    return "\n".join(lines)


def type_name(annotation: Any) -> str:
    """``int | None`` style names for config field annotations."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(annotation, "__name__", str(annotation))


def config_rows(config: type) -> list[tuple[str, str, str, str]]:
    """(field, type, default, description) for every field but ``variant``."""
    rows = []
    for name, f in config.model_fields.items():
        if name == "variant":
            continue
        default = "required" if f.is_required() else repr(f.get_default(call_default_factory=True))
        rows.append((name, type_name(f.annotation), default, f.description or ""))
    return rows

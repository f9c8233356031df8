"""Markdown pieces of the catalog: cells, tables, config tables, hook signatures, paths."""

from __future__ import annotations

import html
import inspect
import re
from collections.abc import Iterable, Sequence
from typing import Any

from zoo.text import type_name as _type_name

__all__ = ["CATALOG_DIR", "NOT_MEASURED", "page_path", "image_name", "cell", "code", "table", "shape_md",
           "config_table", "hook_signature"]

CATALOG_DIR = "catalog"
NOT_MEASURED = "not measured"


def page_path(name: str) -> str:
    """Where a variant's page lives in the docs: ``catalog/<name>.md``."""
    return f"{CATALOG_DIR}/{name}.md"


def image_name(name: str) -> str:
    return f"{name}-pattern.png"


# ---------------------------------------------------------------------------
# small markdown helpers
# ---------------------------------------------------------------------------


def cell(value: Any) -> str:
    """A markdown table cell: one line, pipes escaped, HTML escaped."""
    text = " ".join(str(value).split())
    return html.escape(text, quote=False).replace("|", "\\|")


def code(value: Any) -> str:
    # pipes inside a code span do not split a table cell (and a backslash would show)
    text = " ".join(str(value).split()).replace("`", "'")
    return f"`{text}`" if text else ""


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


_OPS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "multiple_of": "multiple of",
        "min_length": "min length", "max_length": "max length"}


def _constraint(meta: Any) -> str:
    for attr, op in _OPS.items():
        if hasattr(meta, attr) and getattr(meta, attr) is not None:
            return f"{op} {getattr(meta, attr)}"
    return str(meta)


def config_table(config: type) -> list[tuple[str, str, str, str]]:
    """``(field, type, default, description)`` for every config field but ``variant``."""
    rows = []
    for name, f in config.model_fields.items():
        if name == "variant":
            continue
        default = "required" if f.is_required() else repr(f.get_default(call_default_factory=True))
        constraints = [_constraint(m) for m in f.metadata]
        description = f.description or ""
        if constraints:
            description = (description + " " if description else "") + "(" + ", ".join(constraints) + ")"
        rows.append((name, _type_name(f.annotation), default, description))
    return rows


def hook_signature(func: Any) -> str:
    """A hook's signature as written in its source, e.g.
    ``zoo_register_variants(register: Callable[[VariantSpec], None]) -> None``."""
    sig = inspect.signature(func)

    def ann(a: Any) -> str:
        return a if isinstance(a, str) else inspect.formatannotation(a)

    params = []
    for p in sig.parameters.values():
        text = p.name
        if p.annotation is not inspect.Parameter.empty:
            text += f": {ann(p.annotation)}"
        params.append(text)
    ret = "" if sig.return_annotation is inspect.Signature.empty else f" -> {ann(sig.return_annotation)}"
    return f"{func.__name__}({', '.join(params)}){ret}"




_SHAPE = re.compile(r"\([^()]*\)")


def _prose(text: str) -> str:
    """``cell`` that keeps one space at either end (it sits between code spans)."""
    inner = cell(text)
    if not inner:
        return " " if text.strip() == "" and text else ""
    return (" " if text[:1].isspace() else "") + inner + (" " if text[-1:].isspace() else "")


def shape_md(text: str | None, *, none_ok: bool = False) -> str:
    """A shape description as markdown: the tuples (``(B, M, Dc)``) as code, the words
    between them as text; ``none_ok`` adds "or ``None`` (self-attention)" unless the
    text already says what ``None`` means."""
    if not text:
        out = "see the layer's docstring"
    else:
        parts, last = [], 0
        for m in _SHAPE.finditer(text):
            start = m.start()
            if not m.group(0).lstrip("(").strip()[:1].isupper():  # "(masked mean over M)": prose
                continue
            parts.append(_prose(text[last:start]))
            parts.append(code(m.group(0)))
            last = m.end()
        parts.append(_prose(text[last:]))
        out = "".join(parts).strip()
        out = re.sub(r"\bNone\b", "`None`", out)
    if none_ok and "None" not in (text or ""):
        out += " or `None` (self-attention)"
    return out

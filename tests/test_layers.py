"""docs/architecture.md's diagram matches the import graph: every module it names exists,
the spec layer imports no core service at import time, and the core imports no plugin."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from test_standalone import import_closure

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
LAYERS = {"plugins": (0, 149), "core": (150, 299), "spec": (300, 450)}  # the diagram's y bands


def diagram_modules() -> dict[str, set[str]]:
    """``zoo.*`` modules named in each layer's boxes of the inline SVG."""
    svg = re.search(r"<svg[^>]*zoo-layers.*?</svg>", PAGE, re.S).group(0)
    found: dict[str, set[str]] = {k: set() for k in LAYERS}
    for y, text in re.findall(r'<text[^>]*\by="(\d+)"[^>]*>([^<]*)</text>', svg):
        layer = next(k for k, (lo, hi) in LAYERS.items() if lo <= int(y) <= hi)
        found[layer] |= set(re.findall(r"(?<![@\w.])zoo\.[a-z_]+(?:\.[a-z_]+)*", text))  # not @zoo.variant
    return found


def _exists(module: str) -> bool:
    rel = Path(*module.split("."))
    return (ROOT / f"{rel}.py").exists() or (ROOT / rel / "__init__.py").exists()


def test_every_module_the_diagram_names_exists():
    named = set().union(*diagram_modules().values())
    assert len(named) >= 15, named
    assert not [m for m in named if not _exists(m)]


@pytest.mark.parametrize("module", sorted(diagram_modules()["spec"]))
def test_the_spec_layer_imports_no_core_service(module):
    services = diagram_modules()["core"]
    reached = {m for m in import_closure(module) if any(m == s or m.startswith(s + ".") for s in services)}
    assert not reached, f"{module} imports core services at import time: {sorted(reached)}"


def test_no_core_module_imports_a_plugin():
    offenders = []
    for path in sorted((ROOT / "zoo").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno}" for n in names
                          if n.startswith("attention_zoo_plugins")]
    assert not offenders, offenders

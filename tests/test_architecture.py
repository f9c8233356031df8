"""The core's shape, as docs/architecture.md draws it: it names no variant, no module is
too long to read in one sitting, and no library module reaches up into the CLI."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import zoo
from zoo.registry import default_registry

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "zoo"
MAX_LINES = 500
# the command line and the sub-commands' argument parsing and usage checks
CLI_MODULES = {"zoo/cli.py", "zoo/__main__.py", "zoo/harness/cli.py", "zoo/bench/__init__.py", "zoo/compare/cli.py"}
# A word that is also a variant's name but means something else where it stands, with the
# reason; anything else in a string literal of zoo/ that equals a built-in's name fails.
OTHER_MEANING = {
    ("zoo/swapping.py", "cross"): "zoo.swap(where='cross'): the position of an attention module, not a variant",
    ("zoo/oracle.py", "linear"): "the oracle's linear() (x W^T + b), not the linear-attention variant",
    ("zoo/bench/report.py", "linear"): "memory growing linearly (the scaling check), not the variant",
}


def _core_modules() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def _builtin_names() -> set[str]:
    """Names and aliases of the variants the core's own distribution ships (plugins/),
    less the aliases that are the field's ordinary words ("cross-attention"): prose may
    use those."""
    names = set()
    for name in zoo.list_variants():
        spec = zoo.get_variant(name)
        if default_registry().provenance(name)["distribution"] == "attention-zoo":
            names |= {spec.name, *(a for a in spec.aliases if not a.endswith("attention"))}
    return names


def _string_literals(tree: ast.AST) -> list[ast.Constant]:
    """Every ``str`` constant that is not documentation: docstrings and bare string
    statements (attribute docstrings) are prose and may discuss any idea by name."""
    prose = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    found = [n for n in ast.walk(tree)
             if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in prose]
    return sorted(found, key=lambda n: (n.lineno, n.col_offset))


def literals_naming(names: set[str], path: Path) -> list[str]:
    words = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, sorted(names, key=len, reverse=True))) + r")(?![\w-])")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    where = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name
    hits = []
    for n in _string_literals(tree):
        found = {m.group(1) for m in words.finditer(n.value)} - {w for f, w in OTHER_MEANING if f == where}
        if found:
            hits.append(f"{where}:{n.lineno}: {n.value!r:.80}")
    return hits


def test_the_builtin_variants_are_known():
    """The check below means something only if the built-ins are registered here."""
    assert len(_builtin_names()) >= 5


def test_no_string_literal_in_the_core_names_a_builtin_variant():
    names = _builtin_names()
    hits = [hit for path in _core_modules() for hit in literals_naming(names, path)]
    assert not hits, "the core names built-in variants (take it from the spec or a hook):\n" + "\n".join(hits)


def test_the_name_check_sees_a_literal(tmp_path):
    """The detector itself: a name in a string is found, in a docstring it is not."""
    bad = tmp_path / "bad.py"
    bad.write_text('"""About cross-attention and cross."""\nBASELINES = {"cross": 1}\nx = "retro-cca"\n')
    hits = literals_naming({"cross", "retro-cca"}, bad)
    assert len(hits) == 2 and ":2:" in hits[0] and ":3:" in hits[1]


@pytest.mark.parametrize("path", _core_modules() + sorted((ROOT / "plugins").rglob("*.py")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_core_module_is_over_500_lines(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (> {MAX_LINES}): split it by concern"


def test_no_library_module_imports_the_cli():
    offenders = []
    for path in _core_modules():
        rel = str(path.relative_to(ROOT))
        if rel in CLI_MODULES:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            mods = []
            if isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            offenders += [f"{rel}:{node.lineno}" for m in mods if m == "zoo.cli"]
    assert not offenders, "library modules import the CLI (use zoo.text): " + ", ".join(offenders)


def test_provenance_is_the_registrys_not_the_authors(registry):
    """An author cannot write where a spec came from; the registry records it."""
    from attention_zoo_plugins import cross

    with pytest.raises(TypeError, match="plugin"):
        zoo.VariantSpec(name="x", module=object, config=object, summary="s", plugin="forged")
    registry.load_plugin(cross, name="cross", distribution="attention-zoo")
    assert registry.provenance("cross") == {"plugin": "cross", "distribution": "attention-zoo"}
    spec = zoo.get_variant("cross")
    assert (spec.plugin, spec.distribution) == ("cross", "attention-zoo")
    assert "attention-zoo" in spec.source
    copy = spec.replace(name="cross-copy", plugin="ignored")  # a copy is not registered: no provenance
    assert copy.plugin is None and copy.source == "in-process registration (zoo.register)"

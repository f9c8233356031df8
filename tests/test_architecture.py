"""The core's shape, as docs/architecture.md draws it: it names no variant, no module is
too long to read in one sitting, no library module reaches up into the CLI, and no plugin
imports another."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

import zoo
from zoo.registry import default_registry

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "zoo"
MAX_LINES = 500
# the command line and the sub-commands' argument parsing and usage checks
CLI_MODULES = {"zoo/cli.py", "zoo/__main__.py", "zoo/commands.py", "zoo/harness/cli.py", "zoo/bench/cli.py", "zoo/compare/cli.py"}
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


# -- the import graph: every import, wherever it stands (functions too), resolved --------

# What the core may import besides the standard library and itself: its dependencies, and
# the optional libraries of the few modules that use them (imported only when used).
CORE_DEPENDENCIES = {"torch", "pluggy", "pydantic", "pydantic_core", "yaml", "numpy", "tomli"}
OPTIONAL_IN = {
    "zoo/catalog/pictures.py": {"matplotlib"},   # the catalog's pictures ([docs])
    "zoo/compare/report.py": {"matplotlib"},     # zoo compare --png
    "zoo/pytest_plugin.py": {"pytest"},          # the pytest plugin itself
    "zoo/testing.py": {"pytest"},                # helpers for authors' pytest suites
}
PACKAGES = {"zoo": CORE, "attention_zoo_plugins": ROOT / "plugins"}


def module_name(path: Path) -> str:
    """The dotted name ``path`` is imported as (``plugins/`` installs as ``attention_zoo_plugins``)."""
    for package, folder in PACKAGES.items():
        if path.is_relative_to(folder):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise ValueError(f"{path} is in no package of this repository")


def _is_module(dotted: str) -> bool:
    package, _, rest = dotted.partition(".")
    folder = PACKAGES.get(package)
    if folder is None:
        return False
    target = folder.joinpath(*rest.split(".")) if rest else folder
    return target.with_suffix(".py").is_file() or (target / "__init__.py").is_file()


def imports_of(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """``(line, module)`` for every import in ``path``: module level or inside functions,
    relative ones resolved, and ``from package import name`` counted as an import of the
    module ``package.name`` where that is a module (of ``package`` itself otherwise)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            modules = [f"{base}.{a.name}" for a in node.names if _is_module(f"{base}.{a.name}")]
            found += [(node.lineno, m) for m in modules]
            if len(modules) < len(node.names):  # names defined in ``base`` itself
                found.append((node.lineno, base))
    return [(line, mod) for line, mod in found if mod and mod != "__future__"]


def plugin_units() -> dict[str, str]:
    """The built-in plugins: entry-point name -> module (a unit is that module or package)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return dict(project["entry-points"]["zoo"])


def _unit_of(module: str) -> str | None:
    return next((name for name, root in plugin_units().items()
                 if module == root or module.startswith(root + ".")), None)


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def import_rule_violations(path: Path) -> list[str]:
    """What ``path`` imports that the architecture forbids (docs/architecture.md):

    - the core (``zoo/``) imports no built-in plugin module;
    - no plugin module imports another plugin (another variant, the tasks, the adapters):
      what they share lives in the toolkit (``zoo.nn``, ``zoo.oracle``), and what a plugin
      needs of another it reaches through the registry;
    - no library module imports a command-line module;
    - the core imports only the standard library, its dependencies, and the optional
      libraries named for the module in ``OPTIONAL_IN``.
    """
    rel = _rel(path)
    cli = {module_name(ROOT / m) for m in CLI_MODULES}
    bad = []
    for line, mod in imports_of(path):
        top = mod.split(".")[0]
        if mod.startswith("attention_zoo_plugins") and module_name(path).startswith("zoo"):
            bad.append(f"{rel}:{line}: imports the built-in plugin {mod} (reach variants through the registry)")
        elif (mod.startswith("attention_zoo_plugins") and _unit_of(mod) is not None
              and _unit_of(mod) != _unit_of(module_name(path))):
            bad.append(f"{rel}:{line}: imports another plugin's module {mod} (plugin {_unit_of(mod)!r}; share "
                       f"through zoo.nn / zoo.oracle, reach it through the registry)")
        elif mod in cli and rel not in CLI_MODULES:
            bad.append(f"{rel}:{line}: imports the command-line module {mod} (use zoo.text)")
        elif (module_name(path).startswith("zoo") and top not in sys.stdlib_module_names and top not in PACKAGES
              and top not in CORE_DEPENDENCIES | OPTIONAL_IN.get(rel, set())):
            bad.append(f"{rel}:{line}: imports {top}, which is not a core dependency (an extra's library "
                       f"belongs in a plugin, or in OPTIONAL_IN with its reason)")
    return bad


def test_the_import_graph_keeps_the_architecture():
    bad = [v for path in _core_modules() for v in import_rule_violations(path)]
    assert not bad, "\n".join(bad)


def test_no_plugin_module_imports_another_plugin():
    bad = [v for path in sorted((ROOT / "plugins").rglob("*.py")) for v in import_rule_violations(path)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("target, line", [
    ("plugins/variants/gqa.py", "def law():\n    from attention_zoo_plugins.variants.cross import CrossAttention\n"),
    ("plugins/variants/selfdoc.py", "from .cross import bare_sdpa\n"),
    ("plugins/tasks/retrieval.py", "from attention_zoo_plugins import retro\n"),
])
def test_a_planted_import_of_another_plugin_is_seen(tmp_path, monkeypatch, target, line):
    copy = tmp_path / "plugins" / Path(target).relative_to("plugins")
    copy.parent.mkdir(parents=True)
    copy.write_text((ROOT / target).read_text(encoding="utf-8") + "\n\n" + line, encoding="utf-8")
    assert not import_rule_violations(ROOT / target)  # the original keeps the rules
    for real in (ROOT / "plugins").rglob("*.py"):  # the copy's package must know the real modules
        twin = tmp_path / real.relative_to(ROOT)
        if not twin.exists():
            twin.parent.mkdir(parents=True, exist_ok=True)
            twin.touch()
    monkeypatch.setitem(PACKAGES, "attention_zoo_plugins", tmp_path / "plugins")
    assert any("another plugin's module" in v for v in import_rule_violations(copy)), import_rule_violations(copy)


@pytest.mark.parametrize("target, line, rule", [
    ("zoo/harness/numeric.py", "from attention_zoo_plugins.variants.cross import CrossAttention", "built-in plugin"),
    ("zoo/io.py", "from zoo import cli", "command-line module zoo.cli"),
    ("zoo/harness/report.py", "from zoo.harness.cli import run", "command-line module zoo.harness.cli"),
    ("zoo/harness/report.py", "from .cli import run", "command-line module zoo.harness.cli"),
    ("zoo/functional.py", "def _later():\n    import diffusers\n", "imports diffusers"),
])
def test_each_planted_import_breaks_the_rules(tmp_path, monkeypatch, target, line, rule):
    """The rules above see imports however they are written: a copy of the module with one
    planted import (absolute, relative, ``from zoo import x``, inside a function) fails."""
    copy = tmp_path / "zoo" / Path(target).relative_to("zoo")
    copy.parent.mkdir(parents=True)
    copy.write_text((ROOT / target).read_text(encoding="utf-8") + "\n\n" + line + "\n", encoding="utf-8")
    assert not import_rule_violations(ROOT / target)  # the original keeps the rules
    monkeypatch.setitem(PACKAGES, "zoo", tmp_path / "zoo")
    for cli in CLI_MODULES:  # the copy's package must know the real modules it may name
        (tmp_path / cli).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / cli).touch()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    bad = import_rule_violations(copy)
    assert any(rule in v for v in bad), bad


def test_provenance_is_the_registrys_not_the_authors(registry):
    """An author cannot write where a spec came from; the registry records it."""
    from attention_zoo_plugins.variants import cross

    with pytest.raises(TypeError, match="plugin"):
        zoo.VariantSpec(name="x", module=object, config=object, summary="s", plugin="forged")
    registry.load_plugin(cross, name="cross", distribution="attention-zoo")
    assert registry.provenance("cross") == {"plugin": "cross", "distribution": "attention-zoo"}
    spec = zoo.get_variant("cross")
    assert (spec.plugin, spec.distribution) == ("cross", "attention-zoo")
    assert "attention-zoo" in spec.source
    copy = spec.replace(name="cross-copy", plugin="ignored")  # a copy is not registered: no provenance
    assert copy.plugin is None and copy.source == "in-process registration (zoo.register)"

"""Plugins stand alone: RETRO's FAISS is an extra that nothing else loads, the built-ins sit
in folders named for what they are, and the toolkit a plugin imports pulls in no registry.
(That no plugin imports another is tests/test_architecture.py's import rule.)"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"
PACKAGE = "attention_zoo_plugins"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def plugin_units() -> dict[str, str]:
    """Entry-point name -> module, for the built-in plugins (a unit is that module or package)."""
    return dict(PYPROJECT["project"]["entry-points"]["zoo"].items())


def test_builtins_sit_in_folders_named_for_what_they_are():
    """Variants under variants/ (RETRO: its own package), adapters under adapters/, tasks under tasks/."""
    for name, module in plugin_units().items():
        kind = module.split(".")[1]
        if name.endswith("-adapter"):
            assert kind == "adapters", (name, module)
        elif name == "tasks":
            assert kind == "tasks", (name, module)
        else:
            assert kind in ("variants", "retro"), (name, module)
    assert not [p.name for p in PLUGINS.glob("*.py") if p.name != "__init__.py"], "a loose module in plugins/"


def test_faiss_is_retros_extra_not_a_core_dependency():
    project = PYPROJECT["project"]
    assert not [d for d in project["dependencies"] if d.startswith("faiss")]
    extras = project["optional-dependencies"]
    assert [d for d in extras["retro"] if d.startswith("faiss-cpu")]
    assert "attention-zoo[retro]" in extras["dev"]


# A process in which `import faiss` fails, as on an install without the extra [retro].
_NO_FAISS = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "faiss" or name.startswith("faiss."):
            raise ImportError("No module named 'faiss' (blocked by the test)")
sys.meta_path.insert(0, _Block())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _NO_FAISS + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_without_faiss_every_variant_lists_builds_and_runs():
    res = _run("""
        import torch, zoo
        for name in zoo.list_variants():
            spec = zoo.get_variant(name)
            fields = spec.example_configs()[0]
            layer = zoo.create(spec, **fields)
            inputs = spec.make_inputs(layer, batch=1, query_len=8, context_len=8,
                                      generator=torch.Generator().manual_seed(0), dtype=torch.float32)
            layer(**inputs)
        assert {"cross", "retro", "film", "gqa"} <= set(zoo.list_variants()), zoo.list_variants()
        assert "faiss" not in sys.modules, sorted(m for m in sys.modules if "faiss" in m)
        print("ok")
        """)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_without_faiss_the_database_names_the_extra():
    res = _run("""
        import numpy as np
        import attention_zoo_plugins.retro as retro
        try:
            retro.RetroDatabase.build([np.arange(64)], chunk_size=8, embedder=retro.HashingEmbedder(dim=16),
                                      progress=False)
        except ImportError as exc:
            print(exc)
        """)
    assert res.returncode == 0, res.stderr
    assert 'pip install "attention-zoo[retro]"' in res.stdout, res.stdout + res.stderr


def _module_level_zoo_imports(module: str) -> set[str]:
    """The ``zoo.*`` modules ``module`` imports at import time (not inside functions)."""
    rel = Path(*module.split("."))
    path = ROOT / (f"{rel}.py" if (ROOT / f"{rel}.py").exists() else rel / "__init__.py")
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("zoo") and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names
                      if (ROOT / Path(*node.module.split(".")) / f"{a.name}.py").exists()}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("zoo")}
    return found - {"zoo"}


def import_closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        mod = todo.pop()
        if mod not in seen:
            seen.add(mod)
            todo += sorted(_module_level_zoo_imports(mod))
    return seen


@pytest.mark.parametrize("toolkit", ["zoo.nn", "zoo.oracle", "zoo.declare", "zoo.variant_config"])
def test_the_toolkit_does_not_pull_in_the_registry(toolkit):
    """``VariantConfig`` lives apart from the factory: what a variant author imports to write
    a layer never imports the registry, the config factory or the plugin loader."""
    assert not import_closure(toolkit) & {"zoo.registry", "zoo.config", "zoo.loader"}, import_closure(toolkit)


def test_the_import_closure_follows_imports():
    assert {"zoo.registry", "zoo.loader", "zoo.spec"} <= import_closure("zoo.config")

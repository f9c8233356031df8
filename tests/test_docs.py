"""The documentation cannot rot: its code runs, its hooks and variants are all documented,
and ``mkdocs build --strict`` passes with a site that needs no network.

A ```python block is skipped when the line just before it is ``<!-- docs: no-test -->``;
blocks of one page run in order in one namespace, from the repository root.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import zoo
from zoo import catalog, hookspecs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SKIP_MARK = "<!-- docs: no-test -->"
INLINED = re.compile(r'[ \t]*```\w+ title="(?P<path>[^"]+)"')  # a file copied into a page
FENCE = re.compile(r"^(?P<indent>[ \t]*)```python[^\n]*\n(?P<code>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)


def _doc_files() -> list[Path]:
    files = sorted(p for p in DOCS.rglob("*.md") if "catalog" not in p.relative_to(DOCS).parts)
    readme = ROOT / "README.md"
    return files + ([readme] if readme.exists() else [])


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line, code)`` of every runnable ```python block of a markdown text."""
    blocks = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip().splitlines()
        if before and before[-1].strip() == SKIP_MARK:
            continue
        code = m.group("code")
        if "--8<--" in code or INLINED.match(m.group(0)):  # a copy of a file: tested where it lives
            continue
        indent = m.group("indent")
        code = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in code.splitlines())
        blocks.append((text[: m.start()].count("\n") + 2, code))
    return blocks


DOC_FILES = [p for p in _doc_files() if python_blocks(p.read_text(encoding="utf-8"))]


def test_block_extraction():
    text = f"x\n```python\na = 1\n```\n{SKIP_MARK}\n```python\nraise SystemExit\n```\n  ```python\n  b = 2\n  ```\n"
    assert python_blocks(text) == [(3, "a = 1"), (10, "b = 2")]


def test_there_are_examples_to_run():
    names = {p.name for p in DOC_FILES}
    assert {"getting-started.md", "configs.md", "worked-example.md", "choosing.md"} <= names


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_examples_run(path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    namespace: dict = {"__name__": "__docs__"}
    for line, code in python_blocks(path.read_text(encoding="utf-8")):
        try:
            exec(compile(code, f"{path.relative_to(ROOT)}:{line}", "exec"), namespace)
        except Exception as exc:
            pytest.fail(f"{path.relative_to(ROOT)}, block at line {line}: {type(exc).__name__}: {exc}")
    capsys.readouterr()


# -- the seam is documented and tested ---------------------------------------------------


HOOK_PAGE = DOCS / "reference" / "hooks.md"


@pytest.mark.parametrize("name", sorted(hookspecs.HOOKS))
def test_every_hook_is_documented_with_its_exact_signature(name):
    signature = catalog.hook_signature(hookspecs.HOOKS[name])
    text = HOOK_PAGE.read_text(encoding="utf-8")
    assert f"## `{name}`" in text, f"{name} has no section in {HOOK_PAGE.relative_to(ROOT)}"
    assert signature in text, f"the exact signature {signature!r} is not in {HOOK_PAGE.relative_to(ROOT)}"
    assert f"::: zoo.hookspecs.{name}" in text, "its docstring is rendered by mkdocstrings"


def test_hooks_registry_lists_every_hookspec():
    """HOOKS (which the docs test walks) is every function pluggy sees as a hookspec."""
    marked = {n for n in dir(hookspecs) if n.startswith("zoo_") and callable(getattr(hookspecs, n))}
    assert marked == set(hookspecs.HOOKS)


def _hook_impls_in_tests() -> dict[str, list[str]]:
    """Hook name -> ``file:line`` of every function in tests/ that *implements* it: a
    ``def <hook>`` decorated with ``hookimpl`` (a test plugin); names in strings,
    comments or docstrings do not count."""
    import ast

    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name in hookspecs.HOOKS:
                decorators = [ast.unparse(d) for d in node.decorator_list]
                if any(d.split(".")[-1].split("(")[0] == "hookimpl" for d in decorators):
                    found.setdefault(node.name, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


@pytest.mark.parametrize("name", sorted(hookspecs.HOOKS))
def test_every_hook_has_a_test_plugin(name):
    """Every hook is implemented by a plugin the tests load (a ``@hookimpl`` in tests/)."""
    impls = _hook_impls_in_tests()
    assert impls.get(name), f"no @hookimpl of {name} in tests/: no test plugin exercises this hook"


def test_every_nav_page_exists():
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=Loader)

    def pages(nav):
        for item in nav:
            if isinstance(item, str):
                yield item
            elif isinstance(item, dict):
                for value in item.values():
                    yield from (pages(value) if isinstance(value, list) else [value])

    missing = [p for p in pages(config["nav"]) if not p.startswith("catalog/") and not (DOCS / p).exists()]
    assert not missing


# -- the whole site -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory, harness_summaries):
    """The site, built once per module; the harness results come from the session's one run."""
    import json

    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings_handlers.python")
    pytest.importorskip("latex2mathml")
    out = tmp_path_factory.mktemp("site")
    done = out.parent / "harness.json"
    done.write_text(json.dumps({n: h.to_dict() for n, h in harness_summaries.items()}), encoding="utf-8")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", ZOO_DOCS_HARNESS=str(done))
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return out


@pytest.mark.slow
@pytest.mark.docs
def test_mkdocs_build_strict_passes(site):
    assert (site / "index.html").exists()


@pytest.mark.slow
@pytest.mark.docs
def test_every_registered_variant_has_a_built_page(site):
    index = (site / "catalog" / "index.html").read_text(encoding="utf-8")
    for name in zoo.list_variants():
        page = site / "catalog" / f"{name}.html"
        assert page.exists(), f"no catalog page for {name}"
        html = page.read_text(encoding="utf-8")
        for part in ("Equation", "Shapes", "Config", "Example", "Harness", "Speed", "Attention pattern"):
            assert f">{part}<" in html or f">{part}\n" in html or f">{part}<a" in html, f"{name}: {part}"
        assert "<math" in html, f"{name}: the equation is not MathML"
        assert "Harness result not available" not in html, f"{name}: no harness result in the built page"
        assert (site / "catalog" / f"{name}-pattern.png").exists(), f"{name}: no picture"
        assert f'href="{name}.html"' in index


@pytest.mark.slow
@pytest.mark.docs
def test_site_needs_no_network(site):
    """Math is MathML (no script), search is local, no fonts or scripts from elsewhere."""
    assert (site / "search" / "search_index.json").exists()
    worked = (site / "guides" / "worked-example.html").read_text(encoding="utf-8")
    assert "<math" in worked and 'class="arithmatex"' not in worked
    assert "mountains" in worked and "| **sky** |" not in worked, "the worked example's tables rendered"
    remote = re.compile(r'<(?:script|link|img)[^>]+(?:src|href)="(?:https?:)?//', re.I)
    for page in site.rglob("*.html"):
        hits = remote.findall(page.read_text(encoding="utf-8"))
        assert not hits, f"{page.relative_to(site)} loads something over the network: {hits[:3]}"


@pytest.mark.slow
@pytest.mark.docs
def test_plugin_guide_shows_the_real_example(site):
    html = (site / "guides" / "writing-a-plugin.html").read_text(encoding="utf-8")
    assert "zoo_register_variants" in html and "parametrize_with_checks" in html
    assert "gated-cross" in html and "--8&lt;--" not in html and "--8<--" not in html


@pytest.mark.slow
@pytest.mark.docs
def test_hook_signatures_in_built_reference(site):
    html = (site / "reference" / "hooks.html").read_text(encoding="utf-8")
    for name, func in hookspecs.HOOKS.items():
        assert name in html
        assert catalog.hook_signature(func).replace(">", "&gt;") in html


@pytest.mark.slow
@pytest.mark.docs
def test_architecture_diagram_survives_markdown(site):
    """The layers' diagram is inline SVG (offline); Markdown must not have split it into paragraphs."""
    html = (site / "architecture.html").read_text(encoding="utf-8")
    svg = re.search(r"<svg[^>]*zoo-layers.*?</svg>", html, re.S)
    assert svg, "no inline SVG on the architecture page"
    assert "<p>" not in svg.group(0), "markdown broke the SVG into paragraphs"
    for layer in ("Plugins", "Core services", "Spec layer"):
        assert re.search(rf"<text[^>]*>{layer}", svg.group(0)), layer


def test_files_copied_into_the_plugin_guide_equal_their_files():
    """The guide reads whole in the repository (no snippet includes that only the site
    renders), and each copy of an example file is that file, so it cannot drift."""
    guide = ROOT / "docs" / "guides" / "writing-a-plugin.md"
    text = guide.read_text(encoding="utf-8")
    assert "--8<--" not in text
    copies = re.findall(r'^```\w+ title="(?P<path>[^"]+)"\n(?P<code>.*?)^```[ \t]*$', text, re.M | re.S)
    assert {p for p, _ in copies} >= {"examples/fifty_lines.py", "examples/zoo-plugin-example/pyproject.toml",
                                       "examples/zoo-plugin-example/zoo_example_gated_cross.py",
                                       "examples/zoo-plugin-example/tests/test_checks.py"}
    for path, code in copies:
        assert code == (ROOT / path).read_text(encoding="utf-8").rstrip("\n") + "\n", (
            f"the copy of {path} in {guide.relative_to(ROOT)} differs from the file: paste the file again")

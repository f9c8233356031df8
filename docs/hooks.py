"""mkdocs hooks: the variant catalog from the registry, and math as MathML.

- ``on_config``: builds every catalog page and picture once per build with
  :func:`zoo.catalog.build_catalog` (harness results included) and puts the pages
  in the nav under "Catalog". ``ZOO_DOCS_QUICK=1`` skips the harness (for
  ``mkdocs serve`` while writing; the pages then say the result is not available);
  ``ZOO_DOCS_HARNESS=results.json`` reuses harness results computed before the build;
  ``ZOO_CATALOG_RESULTS`` (paths separated by ``os.pathsep``) adds plugins' own
  ``zoo bench``/``zoo compare`` JSON files (``build_catalog(results=...)``).
- ``on_files``: serves those pages from memory (``File.generated``): nothing
  generated is written into ``docs/`` or committed.
- ``on_page_markdown``: replaces ``<!-- zoo:worked-example -->`` with the worked
  example's numbers, computed by the zoo at build time (``docs/worked_example.py``,
  which also gives the catalog's pictures their inputs).
- ``on_page_content``: turns the LaTeX that ``pymdownx.arithmatex`` marks into
  MathML (``latex2mathml``), which browsers render natively: no JavaScript, no
  fonts, no network when the site is viewed (a display formula is cut at its
  top-level ``\\quad`` so that a narrow column wraps it: :func:`split_display`); and
  drops the Sphinx roles (``:class:``) that some docstrings carry.

Search from ``file://`` needs nothing here: mkdocs.yml turns on the theme's ``offline``
plugin and lists the vendored iframe-worker shim as a polyfill, so no page loads the
shim from a CDN (tests/test_docs_offline.py checks every built page).
"""

from __future__ import annotations

import html
import logging
import os
import re
import time
from pathlib import Path

from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.zoo")

_CATALOG: dict[str, str | bytes] = {}
WORKED_EXAMPLE_MARK = "<!-- zoo:worked-example -->"


def _worked_example():
    """``docs/worked_example.py``, loaded from its file (the docs are not a package)."""
    import importlib.util
    import sys

    name = "zoo_docs_worked_example"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("worked_example.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _harness_done():
    """Harness summaries computed before the build (``ZOO_DOCS_HARNESS=path.json``, written
    by the test suite's session fixture), so a build inside the tests does not run the
    harness over every variant a second time; variants missing from the file are checked."""
    path = os.environ.get("ZOO_DOCS_HARNESS")
    if not path:
        return None
    import json

    from zoo.catalog import HarnessSummary

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {name: HarnessSummary.from_dict(d) for name, d in data.items()}


def on_config(config):
    from zoo.catalog import CATALOG_DIR, build_catalog, page_path

    import zoo

    root = Path(config.config_file_path).parent
    start = time.perf_counter()
    names = zoo.list_variants()
    _CATALOG.clear()
    quick = os.environ.get("ZOO_DOCS_QUICK", "") not in ("", "0")  # `mkdocs serve` while writing
    _CATALOG.update(build_catalog([zoo.get_variant(n) for n in names], run_harness=not quick,
                                  harness=_harness_done(),
                                  bench_path=root / "benchmarks" / "results" / "cpu.json", log=log,
                                  compare_path=root / "benchmarks" / "results" / "compare-full.json",
                                  conversions=sorted(root.glob("benchmarks/results/convert-*.json")),
                                  results=[p for p in os.environ.get("ZOO_CATALOG_RESULTS", "").split(os.pathsep) if p],
                                  example=_worked_example().picture_example()))
    log.info("zoo catalog: %d variants in %.1f s", len(names), time.perf_counter() - start)
    section = [{"Overview": f"{CATALOG_DIR}/index.md"}] + [{n: page_path(n)} for n in names]
    nav = config.nav or []
    for i, item in enumerate(nav):
        if isinstance(item, dict) and item.get("Catalog") == f"{CATALOG_DIR}/index.md":
            nav[i] = {"Catalog": section}
    return config


def on_files(files, config):
    for path, content in _CATALOG.items():
        existing = files.get_file_from_path(path)
        if existing is not None:  # a stale file in docs/catalog/ never wins over the registry
            files.remove(existing)
        files.append(File.generated(config, path, content=content))
    return files


def on_page_markdown(markdown, page, config, files):
    if WORKED_EXAMPLE_MARK in markdown:
        markdown = markdown.replace(WORKED_EXAMPLE_MARK, _worked_example().worked_example_markdown())
    return markdown


_MATH = re.compile(
    r'<(?P<tag>div|span) class="arithmatex">\s*(?:\\\[(?P<block>.*?)\\\]|\\\((?P<inline>.*?)\\\))\s*</(?P=tag)>',
    re.S,
)


_SPACE = re.compile(r"\\q?quad(?![A-Za-z])")
_GROUP = re.compile(r"\\left(?![A-Za-z])|\\right(?![A-Za-z])|(?<!\\)[{}]")


def split_display(tex: str) -> list[str]:
    """A display formula cut at its top-level ``\\quad``/``\\qquad`` (outside braces and
    ``\\left...\\right``): MathML never line-breaks, so each part becomes its own
    ``<math>`` and a narrow column wraps between them instead of hiding the rest."""
    parts, start, depth = [], 0, 0
    events = sorted([(m.start(), m.end(), m.group()) for m in _GROUP.finditer(tex)]
                    + [(m.start(), m.end(), None) for m in _SPACE.finditer(tex)], key=lambda e: e[0])
    for begin, end, token in events:
        if token is None:
            if depth == 0:
                parts.append(tex[start:begin])
                start = end
        else:
            depth += 1 if token in ("{", "\\left") else -1
    parts.append(tex[start:])
    return [p.strip().rstrip("\\").strip() for p in parts if p.strip().rstrip("\\").strip()]


def _to_mathml(match: re.Match, page) -> str:
    from latex2mathml.converter import convert

    block = match.group("block") is not None
    tex = html.unescape(match.group("block") if block else match.group("inline")).strip()
    try:
        if not block:
            return convert(tex, display="inline")
        mathml = "".join(convert(part, display="block") for part in split_display(tex))
    except Exception as exc:  # noqa: BLE001 - report and keep the source visible
        log.warning("%s: cannot convert LaTeX to MathML (%s): %s", page.file.src_uri, exc, tex)
        return match.group(0)
    return f'<div class="zoo-math" title="{html.escape(tex)}">{mathml}</div>'


# Sphinx roles in docstrings (":class:`X`") arrive as ":class:<code>X</code>": keep the code.
_ROLE = re.compile(r":(?:class|func|meth|data|attr|mod|exc|obj|const):(<code>)~?")


def on_page_content(content, page, config, files):
    content = _MATH.sub(lambda m: _to_mathml(m, page), content)
    return _ROLE.sub(r"\1", content)

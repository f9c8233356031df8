"""mkdocs hooks: the variant catalog from the registry, and math as MathML.

- ``on_config``: builds every catalog page and picture once per build with
  :func:`zoo.catalog.build_catalog` (harness results included) and puts the pages
  in the nav under "Catalog". ``ZOO_DOCS_QUICK=1`` skips the harness (for
  ``mkdocs serve`` while writing; the pages then say the result is not available).
- ``on_files``: serves those pages from memory (``File.generated``): nothing
  generated is written into ``docs/`` or committed.
- ``on_page_markdown``: replaces ``<!-- zoo:worked-example -->`` with the worked
  example's numbers, computed by the zoo at build time.
- ``on_page_content``: turns the LaTeX that ``pymdownx.arithmatex`` marks into
  MathML (``latex2mathml``), which browsers render natively: no JavaScript, no
  fonts, no network when the site is viewed; and drops the Sphinx roles
  (``:class:``) that some docstrings carry.
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


def on_config(config):
    from zoo.catalog import CATALOG_DIR, build_catalog, page_path

    import zoo

    root = Path(config.config_file_path).parent
    start = time.perf_counter()
    names = zoo.list_variants()
    _CATALOG.clear()
    quick = os.environ.get("ZOO_DOCS_QUICK", "") not in ("", "0")  # `mkdocs serve` while writing
    _CATALOG.update(build_catalog([zoo.get_variant(n) for n in names], run_harness=not quick,
                                  bench_path=root / "benchmarks" / "results" / "cpu.json", log=log))
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
        from zoo.catalog import worked_example_markdown

        markdown = markdown.replace(WORKED_EXAMPLE_MARK, worked_example_markdown())
    return markdown


_MATH = re.compile(
    r'<(?P<tag>div|span) class="arithmatex">\s*(?:\\\[(?P<block>.*?)\\\]|\\\((?P<inline>.*?)\\\))\s*</(?P=tag)>',
    re.S,
)


def _to_mathml(match: re.Match, page) -> str:
    from latex2mathml.converter import convert

    block = match.group("block") is not None
    tex = html.unescape(match.group("block") if block else match.group("inline")).strip()
    try:
        mathml = convert(tex, display="block" if block else "inline")
    except Exception as exc:  # noqa: BLE001 - report and keep the source visible
        log.warning("%s: cannot convert LaTeX to MathML (%s): %s", page.file.src_uri, exc, tex)
        return match.group(0)
    if block:
        return f'<div class="zoo-math" title="{html.escape(tex)}">{mathml}</div>'
    return mathml


# Sphinx roles in docstrings (":class:`X`") arrive as ":class:<code>X</code>": keep the code.
_ROLE = re.compile(r":(?:class|func|meth|data|attr|mod|exc|obj|const):(<code>)~?")


def on_page_content(content, page, config, files):
    content = _MATH.sub(lambda m: _to_mathml(m, page), content)
    return _ROLE.sub(r"\1", content)

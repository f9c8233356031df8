"""The variant catalog: documentation pages generated from the registry.

Everything the catalog shows comes from a variant's :class:`zoo.VariantSpec`, its
config model, the shared harness and the benchmark results, so the pages cannot
drift from the code. The docs build (``docs/hooks.py``) calls :func:`build_catalog`
once per build and serves the pages from memory; nothing generated is committed.

The package, by concern:

- :mod:`zoo.catalog.text`: markdown cells and tables, config tables, hook signatures.
- :mod:`zoo.catalog.results`: what the harness and ``zoo bench`` said.
- :mod:`zoo.catalog.pictures`: the attention-pattern picture of any variant.
- :mod:`zoo.catalog.pages`: the index, one page per variant, :func:`build_catalog`.

The worked example the docs draw their pictures on (seed 000's 2x2 image attending to
"I love mountains") lives with the docs (``docs/worked_example.py``) and reaches the
catalog as a :class:`PictureExample`: the core knows no variant and no example by name.
"""

from __future__ import annotations

from zoo.catalog.pages import build_catalog, index_markdown, runnable_example, variant_markdown
from zoo.catalog.pictures import Pattern, PictureExample, attention_pattern, render_pattern
from zoo.catalog.results import HarnessSummary, bench_ratios, bench_table, harness_summary
from zoo.catalog.text import CATALOG_DIR, NOT_MEASURED, config_table, hook_signature, page_path

__all__ = [
    "CATALOG_DIR",
    "NOT_MEASURED",
    "HarnessSummary",
    "Pattern",
    "PictureExample",
    "attention_pattern",
    "bench_ratios",
    "bench_table",
    "build_catalog",
    "config_table",
    "harness_summary",
    "hook_signature",
    "index_markdown",
    "page_path",
    "render_pattern",
    "runnable_example",
    "variant_markdown",
]

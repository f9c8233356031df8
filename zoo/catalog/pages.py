"""The catalog's pages: the index, one page per variant, and :func:`build_catalog`."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from zoo.harness.capabilities import resolve_capabilities
from zoo.catalog.pictures import Pattern, PictureExample, render_pattern
from zoo.catalog.results import HarnessSummary, bench_ratios, bench_table, harness_summary
from zoo.catalog.text import CATALOG_DIR, NOT_MEASURED, cell, code, config_table, image_name, page_path, shape_md, table
from zoo.spec import VariantSpec

BENCH_DEFAULT = "benchmarks/results/cpu.json"
"""The zoo's committed ``zoo bench`` results, read when no results file of a plugin has the variant."""
COMPARE_DEFAULT = "benchmarks/results/compare-full.json"
"""The zoo's committed ``zoo compare`` results (full tier), likewise."""

__all__ = ["build_catalog", "index_markdown", "runnable_example", "variant_markdown"]


_CAP_LABELS = {
    "self_attention": "self-attention (context=None)",
    "masks": "context masks",
    "dropout": "dropout",
    "query_order_equivariant": "query-order equivariant",
    "context_order_invariant": "context-order invariant",
    "equal_lengths": "N = M (aligned)",
    "chunk_causal": "chunk-causal",
}
_CAP_SHORT = {"self_attention": "self", "masks": "masks", "dropout": "dropout", "chunk_causal": "causal",
              "equal_lengths": "N=M"}
_NEEDS_CONTEXT = {False: "context required", True: "needs ctx"}  # what self_attention=False means


def _capabilities(spec: VariantSpec, short: bool = False) -> list[str]:
    caps = resolve_capabilities(spec).as_dict()
    labels = _CAP_SHORT if short else _CAP_LABELS
    out = [] if caps.get("attention", True) else ["no attention matrix"]
    out += [labels[k] for k, v in caps.items() if k in labels and v is True]
    return out if caps["self_attention"] else [*out, _NEEDS_CONTEXT[short]]


def _example_fields(spec: VariantSpec) -> dict[str, Any]:
    fields = dict(spec.example_configs()[0])
    fields.pop("variant", None)
    return fields


def runnable_example(spec: VariantSpec) -> str:
    """A complete Python snippet that builds the variant from its first example config,
    makes inputs of the right shape with the spec's ``make_inputs`` and runs it."""
    fields = _example_fields(spec)
    name = json.dumps(spec.name)
    args = ", ".join([name, *(f"{k}={v!r}" for k, v in fields.items())])
    if len(args) > 60:
        args = "\n" + "".join(f"    {a},\n" for a in [name, *(f"{k}={v!r}" for k, v in fields.items())])
    return textwrap.dedent("""\
        import torch
        import zoo

        """) + f"layer = zoo.create({args})\n" + textwrap.dedent(f"""\
        spec = zoo.get_variant({name})
        inputs = spec.make_inputs(
            layer, batch=2, query_len=16, context_len=4,
            generator=torch.Generator().manual_seed(0), dtype=torch.float32,
        )
        out = layer(**inputs)
        assert out.shape == inputs["x"].shape
        print(tuple(out.shape))
        """)


def _yaml_example(spec: VariantSpec) -> str:
    lines = [f"variant: {spec.name}"]
    for k, v in _example_fields(spec).items():
        lines.append(f"{k}: {json.dumps(v)}")
    return "\n".join(lines)


def _paper_md(paper: str | None) -> str:
    if not paper:
        return "No paper given."
    import re

    text = cell(paper)
    text = re.sub(r"arXiv:(\d{4}\.\d{4,5})", r"[arXiv:\1](https://arxiv.org/abs/\1)", text)
    return text


def index_markdown(specs: Sequence[VariantSpec], harness: Mapping[str, HarnessSummary] | None = None,
                   speeds: Mapping[str, str] | None = None) -> str:
    """The catalog's index page: one row per variant with its one-line summary,
    complexity, inputs, capabilities, harness result and measured speed ratio."""
    harness = harness or {}
    speeds = speeds or {}
    rows = []
    for spec in specs:
        h = harness.get(spec.name)
        rows.append((
            f"[`{spec.name}`]({spec.name}.md)",
            cell(spec.summary),
            cell(spec.complexity or "-"),
            shape_md(spec.context_shape) if spec.context_shape else "-",
            cell(", ".join(_capabilities(spec, short=True)) or "-"),
            f"[{cell(h.short)}]({spec.name}.md#harness)" if h else "not run",
            cell(speeds.get(spec.name, NOT_MEASURED)),
        ))
    third = [s for s in specs if s.distribution and s.distribution != "attention-zoo"]
    parts = [
        "---", "hide:", "  - toc", "---", "",  # the table needs the width; the site navigation stays
        "# Variant catalog",
        "",
        "Every attention variant registered in the environment that built these docs, generated "
        "from the registry at build time (`zoo.catalog`), so the pages cannot drift from the code. "
        "Variants from third-party plugins that are installed appear here too"
        + (f" (here: {', '.join(f'`{s.name}` from `{s.distribution}`' for s in third)})." if third else "."),
        "",
        table(("variant", "summary", "complexity (N queries, M context)", "context", "capabilities",
                "harness", "speed vs baseline"), rows),
        "",
        "*Capabilities*: **self** accepts `context=None`; **masks** accepts `context_mask`; "
        "**dropout** has dropout that acts in training; **causal** never lets a position see the "
        "context of a later chunk; **N=M** needs `x` and `context` of equal length. "
        "*Harness*: the shared checks (`zoo check NAME`) run on this build. "
        f"*Speed*: the variant's time over the hand-written baseline its spec gives (bare "
        f"`scaled_dot_product_attention` for an attention variant) doing the same work "
        f"(`zoo_ms / baseline_ms`, median over the benchmark's shapes and dtypes per pass), from "
        f"`{BENCH_DEFAULT}` (`zoo bench`) or the plugin's own results file that its page names; lower "
        f"is faster; \"{NOT_MEASURED}\" when no file has an entry.",
        "",
    ]
    return "\n".join(parts)


def variant_markdown(spec: VariantSpec, harness: HarnessSummary | None = None, speed: str | None = None,
                     image: str | None = None, pattern: Pattern | None = None,
                     bench: str | None = None, learned: str | None = None,
                     bench_source: str = BENCH_DEFAULT, learned_source: str = COMPARE_DEFAULT,
                     kept: str | None = None) -> str:
    """One variant's page: summary, paper, equation, shapes, config table, runnable
    example, harness result, speed, what it learned on the ``zoo compare`` tasks
    (``learned``: a Markdown table), what it keeps of a pretrained model (``kept``:
    :mod:`zoo.catalog.retention`) and (when ``image`` is given) its attention pattern.
    ``bench_source`` and ``learned_source`` name the results files the page quotes."""
    layer_path = f"{spec.module.__module__}.{spec.module.__qualname__}"
    label = _baseline_label(spec)
    facts = [
        ("name", f"`{spec.name}`"),
        ("aliases", ", ".join(f"`{a}`" for a in spec.aliases) or "-"),
        ("paper", _paper_md(spec.paper)),
        ("layer", f"`{layer_path}`"),
        ("config", f"`{spec.config.__module__}.{spec.config.__qualname__}`"),
        ("source", cell(f"{spec.plugin or '-'} ({spec.distribution or 'in-process'})")),
        ("complexity", cell(spec.complexity or "-")),
        ("capabilities", cell(", ".join(_capabilities(spec)) or "-")),
        (f"speed vs {label}", cell(speed or NOT_MEASURED)),
    ]
    out = [f"# `{spec.name}`", "", cell(spec.summary), ""]
    out += [f"- **{k}**: {v}" for k, v in facts] + [""]
    out += ["## Equation", ""]
    if spec.equation:
        out += ["$$", spec.equation.strip(), "$$", ""]
    else:
        out += ["The spec gives no equation.", ""]
    out += [
        "## Shapes", "",
        table(("argument", "shape"), [
            ("`x`", "`(B, N, query_dim)`"),
            ("`context`", shape_md(spec.context_shape, none_ok=resolve_capabilities(spec).self_attention)),
            ("`context_mask`", "bool `context.shape[:-1]`, True = may be attended"
             if resolve_capabilities(spec).masks else "not accepted"),
            ("output", "`(B, N, query_dim)`, the dtype and device of `x`"),
        ]), "",
        "B is the batch size, N the number of queries (tokens of `x`), M the number of context "
        "tokens; `query_dim` (Dq) and `context_dim` (Dc) are the feature widths, h the heads and "
        "d the width of each head.", "",
        "## Config", "",
        f"`{spec.config.__name__}`; unknown keys are refused. In a file or a model config, "
        f"select it with `variant: {spec.name}`.", "",
        table(("field", "type", "default", "description"),
               [(f"`{n}`", code(t), code(d), cell(desc)) for n, t, d, desc in config_table(spec.config)]),
        "",
        "## Example", "",
        "```python", runnable_example(spec).rstrip(), "```", "",
        "The same layer from a YAML file (`zoo.load_config(path)`, then `zoo.create(config)`):", "",
        "```yaml", _yaml_example(spec), "```", "",
    ]
    if spec.laws:
        out += ["## Laws", "", "Variant-specific properties the harness proves:", ""]
        out += [f"- **`law:{law.name}`**: {cell(law.description)}" for law in spec.laws]
        out += [""]
    out += ["## Harness", ""]
    if harness is None or not harness.available:
        note = harness.note if harness else "the harness was not run for this build"
        out += [f"Harness result not available: {cell(note)}.", ""]
    else:
        verdict = "all checks passed" if harness.passed else "**some checks failed**"
        kind = "success" if harness.passed else "failure"
        out += [f"`zoo check {spec.name}` on this build: {verdict} ({harness.short}). "
                "A skipped check does not apply to this variant; the table gives the reason.", "",
                f'???{"" if harness.passed else "+"} {kind} "{len(harness.results)} checks: {harness.short}"', ""]
        checks = table(("check", "status", "message"),
                       [(f"`{c}`", s, cell(m[:300])) for c, s, m in harness.results])
        out += [textwrap.indent(checks, "    "), ""]
    out += ["## Speed", ""]
    if bench:
        out += [f"Time of this layer over its baseline ({cell(label)}: the same computation written "
                f"by hand on the same weights, as its spec gives it), from `{bench_source}` "
                "(`zoo bench`); lower is faster.", "", bench, ""]
    else:
        out += [f"{NOT_MEASURED.capitalize()}: `{bench_source}` has no entry for "
                f"`{spec.name}` (run `zoo bench {spec.name} --json FILE`; pages read FILE with `--results`).", ""]
    out += ["## What it learns", ""]
    if learned:
        out += [f"Measured by `zoo compare` (`{learned_source}`): the same tiny model "
                "and budget for every variant, next to the floor (the model without its conditioning "
                "layer). Method: the guide *Comparing what variants learn*.", "", learned, ""]
    else:
        out += [f"{NOT_MEASURED.capitalize()}: `{learned_source}` has no row for "
                f"`{spec.name}` (run `zoo compare {spec.name} --json FILE`; pages read FILE with `--results`).", ""]
    out += ["## What it keeps from a pretrained model", ""]
    if kept:
        out += ["The model's attention converted to this variant with `zoo.swap` (weights carried) and "
                "`zoo.distill`; method and commands: `benchmarks/CONVERT.md`.", "", kept, ""]
    else:
        out += [f"{NOT_MEASURED.capitalize()}: no conversion results file has a row for `{spec.name}`.", ""]
    out += ["## Attention pattern", ""]
    if image:
        caption = pattern.caption if pattern else ""
        out += [f"![Attention pattern of {spec.name}]({image})", "", cell(caption), ""]
    else:
        out += ["No picture could be drawn for this variant on this build.", ""]
    return "\n".join(out)


def _baseline_label(spec: VariantSpec) -> str:
    b = spec.bench
    return b.baseline_label if b is not None and b.baseline is not None else "baseline"


def build_catalog(specs: Sequence[VariantSpec] | None = None, *, run_harness: bool = True,
                  bench_path: str | Path | None = None, pictures: bool = True,
                  log: Any = None, example: PictureExample | None = None,
                  harness: Mapping[str, HarnessSummary] | None = None,
                  compare_path: str | Path | None = None,
                  results: Sequence[str | Path] = (),
                  conversions: Sequence[str | Path] | None = None) -> dict[str, str | bytes]:
    """Every catalog file, keyed by its path in the docs (``catalog/index.md``,
    ``catalog/<name>.md``, ``catalog/<name>-pattern.png``).

    Args:
        specs: the variants (default: every registered one).
        run_harness: run the shared harness on each variant.
        bench_path: the benchmark results JSON (default: ``benchmarks/results/cpu.json``
            if it exists in the working directory).
        pictures: draw the attention-pattern pictures.
        log: a ``logging.Logger`` for problems (a picture that could not be drawn).
        example: hand-made inputs to draw the pictures on where a variant accepts them
            (the docs pass their worked example); otherwise each variant's ``make_inputs``.
        harness: summaries already computed (by name); the harness runs only for the others.
        compare_path: the ``zoo compare`` results JSON (default:
            ``benchmarks/results/compare-full.json`` if it exists in the working directory).
        results: more results files, ``zoo bench --json`` (``zoo-bench/1``) or ``zoo compare
            --json`` (``zoo-compare/1``) output, told apart by their schema: a plugin's own
            measurements. A variant's speed and what it learned come from the first of these
            files that has rows for it, else from ``bench_path`` / ``compare_path``; the page
            names the file. A file of another schema is a ``ValueError``.
        conversions: conversion results files for "What it keeps" (default: the files
            matching ``benchmarks/results/convert-*.json`` in the working directory).
    """
    import zoo
    from zoo.compare.report import load as load_compare
    from zoo.catalog.retention import RESULTS_GLOB, load_conversions, retention_section
    from zoo.compare.report import variant_section

    if specs is None:
        specs = [zoo.get_variant(n) for n in zoo.list_variants()]
    own_bench, own_compare = split_results(results)
    bench_files = [(p, Path(p).name) for p in own_bench] + [(bench_path or Path(BENCH_DEFAULT), BENCH_DEFAULT)]
    compare_files = ([(load_compare(p), Path(p).name) for p in own_compare]
                     + [(load_compare(compare_path or Path(COMPARE_DEFAULT)), COMPARE_DEFAULT)])
    kept_docs = load_conversions(Path().glob(RESULTS_GLOB) if conversions is None else conversions)
    ratios = [bench_ratios(p) for p, _ in bench_files]
    speeds: dict[str, str] = {}
    for found in reversed(ratios):  # the first file with rows for a variant wins
        speeds.update(found)
    done = dict(harness or {})
    harness = {s.name: done.get(s.name) or harness_summary(s) for s in specs} if run_harness else {}
    files: dict[str, str | bytes] = {f"{CATALOG_DIR}/index.md": index_markdown(specs, harness, speeds)}
    for spec in specs:
        image = pattern = None
        if pictures:
            try:
                data, pattern = render_pattern(spec, example=example)
            except Exception as exc:  # noqa: BLE001
                if log is not None:
                    log.warning("catalog: no attention picture for %r: %s: %s", spec.name, type(exc).__name__, exc)
            else:
                image = image_name(spec.name)
                files[f"{CATALOG_DIR}/{image}"] = data
        bench_at = next((i for i, found in enumerate(ratios) if spec.name in found), len(ratios) - 1)
        learned, learned_source = next(((section, label) for section, label in
                                        ((variant_section(doc, spec.name), label) for doc, label in compare_files)
                                        if section), (None, COMPARE_DEFAULT))
        files[page_path(spec.name)] = variant_markdown(
            spec, harness.get(spec.name) if run_harness else None, speeds.get(spec.name), image, pattern,
            bench_table(bench_files[bench_at][0], spec.name, _baseline_label(spec)), learned,
            bench_source=bench_files[bench_at][1], learned_source=learned_source,
            kept=retention_section(kept_docs, spec.name))
    return files


def split_results(paths: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """``(bench files, compare files)`` among ``paths``, by each file's ``schema``; a missing
    file, one that is not JSON or one of another schema is a ``ValueError`` naming it."""
    bench, compare = [], []
    for path in map(Path, paths):
        try:
            schema = json.loads(path.read_text(encoding="utf-8")).get("schema")
        except (OSError, ValueError, AttributeError) as exc:
            raise ValueError(f"{path}: not a results file ({type(exc).__name__}: {exc}); give the JSON that "
                             f"`zoo bench --json` or `zoo compare --json` wrote") from None
        if schema == "zoo-bench/1":
            bench.append(path)
        elif schema == "zoo-compare/1":
            compare.append(path)
        else:
            raise ValueError(f"{path}: schema {schema!r} is neither 'zoo-bench/1' (zoo bench --json) nor "
                             f"'zoo-compare/1' (zoo compare --json)")
    return bench, compare

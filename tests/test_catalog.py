"""zoo.catalog: the docs catalog is generated from the registry, for every variant."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import torch

import zoo
from zoo import catalog

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_PLUGIN = ROOT / "examples" / "zoo-plugin-example" / "zoo_example_gated_cross.py"
VARIANTS = zoo.list_variants()


def _load_docs_worked_example():
    """``docs/worked_example.py`` (docs-side, not part of the library), loaded from its file."""
    spec = importlib.util.spec_from_file_location("_catalog_test_worked_example", ROOT / "docs" / "worked_example.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


WE = _load_docs_worked_example()


def _load_example_plugin():
    """The example plugin module, loaded from its file (installed or not)."""
    spec = importlib.util.spec_from_file_location("_catalog_test_gated_cross", EXAMPLE_PLUGIN)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the config's annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pages():
    """The catalog of the installed variants (no harness, no pictures: fast)."""
    return catalog.build_catalog(run_harness=False, pictures=False)


def test_builtin_variants_are_registered():
    assert {"cross", "selfdoc", "persistent", "retro", "film"} <= set(VARIANTS)


def test_every_registered_variant_has_a_page(pages):
    assert "catalog/index.md" in pages
    for name in VARIANTS:
        assert catalog.page_path(name) in pages, name
        assert f"]({name}.md)" in pages["catalog/index.md"], f"{name} missing from the index"


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_page_has_every_part(name):
    spec = zoo.get_variant(name)
    harness = catalog.HarnessSummary(True, True, {"passed": 2}, [("shape", "passed", "ok"), ("mask", "passed", "ok")])
    page = catalog.variant_markdown(spec, harness, "fwd 1.01x", f"{name}-pattern.png", None, None)
    for heading in ("## Equation", "## Shapes", "## Config", "## Example", "## Harness", "## Speed",
                    "## Attention pattern"):
        assert heading in page, heading
    assert spec.summary.split()[0] in page
    assert spec.paper and spec.paper.split(",")[0] in page, "paper citation"
    assert spec.equation and spec.equation.strip() in page, "equation (LaTeX)"
    for field in spec.config.model_fields:
        if field != "variant":
            assert f"| `{field}` |" in page, f"config field {field} missing from the table"
    assert "2/2 passed" in page and "fwd 1.01x" in page
    assert f"![Attention pattern of {name}]({name}-pattern.png)" in page


@pytest.mark.parametrize("name", VARIANTS)
def test_runnable_example_runs(name, capsys):
    exec(compile(catalog.runnable_example(zoo.get_variant(name)), f"<example {name}>", "exec"), {})
    assert capsys.readouterr().out.startswith("(2, 16, ")


@pytest.mark.parametrize("name", VARIANTS)
def test_pattern_picture(name):
    spec = zoo.get_variant(name)
    png, pattern = catalog.render_pattern(spec, example=WE.picture_example())
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(png[16:20], "big")  # IHDR: the page shows it at its own size
    assert width <= catalog.pictures.MAX_WIDTH_PX, f"{name}: {width} px wide would be shrunk on the page"
    rows, cols = pattern.values.shape
    assert (len(pattern.row_labels), len(pattern.col_labels)) == (rows, cols)
    assert torch.isfinite(pattern.values).all()
    sums = pattern.values.sum(-1)
    if pattern.kind == "attention":
        assert torch.allclose(sums, torch.ones_like(sums))
    if pattern.kind == "influence":  # normalised per row; a row the context cannot reach is 0
        assert all(abs(s - 1) < 1e-9 or s == 0 for s in sums.tolist())
    if not spec.capabilities.attention:
        assert pattern.kind == "modulation"


def _mha_on_the_worked_example():
    """The worked example through torch.nn.MultiheadAttention, an implementation the zoo
    does not share (its query projection is square, so the queries go in as ``x W_q``
    with an identity projection): the inputs, its attention weights, its output before
    ``W_o``."""
    t = WE.WorkedExample().tensors()
    eye = torch.eye(2, dtype=torch.float64)
    mha = torch.nn.MultiheadAttention(2, 1, bias=False, kdim=6, vdim=6, batch_first=True).double()
    with torch.no_grad():
        mha.q_proj_weight.copy_(eye)
        mha.k_proj_weight.copy_(t["W_k"].T)
        mha.v_proj_weight.copy_(t["W_v"].T)
        mha.out_proj.weight.copy_(eye)
        out, weights = mha(t["x"] @ t["W_q"], t["context"], t["context"])
    return t, weights[0], out[0]


def test_cross_pattern_is_the_worked_example():
    """The cross picture shows the attention torch.nn.MultiheadAttention computes on it."""
    _, weights, _ = _mha_on_the_worked_example()
    pattern = catalog.attention_pattern(zoo.get_variant("cross"), WE.picture_example())
    assert pattern.kind == "attention"
    assert pattern.col_labels == ["I", "love", "mountains"]
    assert torch.allclose(pattern.values, weights, atol=1e-12)


def test_persistent_memory_columns_are_labelled():
    pattern = catalog.attention_pattern(zoo.get_variant("persistent"), WE.picture_example())
    assert pattern.kind == "attention"
    assert sum(label.startswith("fixed") for label in pattern.col_labels) == \
        zoo.get_variant("persistent").config.model_fields["num_memory"].default
    assert {"I", "love", "mountains"} <= set(pattern.col_labels)


def test_retro_pattern_shows_chunk_causality():
    pattern = catalog.attention_pattern(zoo.get_variant("retro"))
    assert pattern.kind == "influence"
    chunk = zoo.get_variant("retro").example_configs()[0]["chunk_size"]
    assert (pattern.values[: chunk - 1] == 0).all(), "the first chunk_size-1 positions see no neighbours"


def test_retro_x_axis_label_names_the_whole_context_shape():
    """The label quotes the context's shape whole (not its gloss cut mid-word) and fits the picture."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    spec = zoo.get_variant("retro")
    pattern = catalog.attention_pattern(spec, WE.picture_example())
    shape = spec.context_shape.split(":")[0].strip()
    assert pattern.xlabel.rstrip().endswith(f"(the context is {shape})"), pattern.xlabel
    seen = []
    real = Figure.savefig

    def keep(fig, *args, **kwargs):
        seen.append(fig)
        return real(fig, *args, **kwargs)

    Figure.savefig = keep
    try:
        catalog.render_pattern(spec, example=WE.picture_example())
    finally:
        Figure.savefig = real
    fig = seen[0]
    label = fig.axes[0].xaxis.label.get_window_extent(FigureCanvasAgg(fig).get_renderer())
    assert label.x0 >= 0 and label.y0 >= 0 and label.x1 <= fig.bbox.x1, (label.bounds, fig.bbox.bounds)


def test_worked_example_matches_an_independent_implementation():
    """The guide's numbers equal torch.nn.MultiheadAttention's with the same weights, and
    say what the guide says: both sky pixels attend most to *mountains*."""
    w = WE.worked_example()
    t, weights, o = _mha_on_the_worked_example()
    assert torch.allclose(w["A"], weights, atol=1e-12)
    assert torch.allclose(w["out"], o @ t["W_o"], atol=1e-12)
    assert torch.allclose(w["y"], t["x"][0] + o @ t["W_o"], atol=1e-12)
    ex = w["example"]
    for i, pixel in enumerate(ex.pixels):
        if pixel.startswith("sky"):
            assert ex.words[int(w["A"][i].argmax())] == "mountains", pixel
    md = WE.worked_example_markdown()
    assert "| **sky** |" in md and "mountains" in md


def test_third_party_variant_appears(registry):
    """A plugin's variant gets a page and is named as third-party in the index."""
    from attention_zoo_plugins.variants import cross

    registry.load_plugin(cross, name="cross", distribution="attention-zoo")
    registry.load_plugin(_load_example_plugin(), name="gated-cross", distribution="zoo-example-gated-cross")
    files = catalog.build_catalog(run_harness=False, pictures=True)
    assert set(files) == {"catalog/index.md", "catalog/cross.md", "catalog/cross-pattern.png",
                          "catalog/gated-cross.md", "catalog/gated-cross-pattern.png"}
    assert "`gated-cross` from `zoo-example-gated-cross`" in files["catalog/index.md"]
    assert "Flamingo" in files["catalog/gated-cross.md"]


@pytest.mark.slow
def test_harness_results_on_the_page(harness_summaries):
    summary = harness_summaries["film"]
    assert summary.available and summary.passed, summary.results
    assert summary.counts.get("passed", 0) >= 10
    page = catalog.variant_markdown(zoo.get_variant("film"), summary)
    assert "all checks passed" in page and "`oracle-forward`" in page


def test_a_failing_variant_shows_failed_checks():
    spec = zoo.get_variant("cross")
    broken = spec.replace(name="cross-broken", reference=lambda module, x, context=None, **kw: x * 0)
    summary = catalog.harness_summary(broken)
    assert summary.available and not summary.passed
    assert summary.counts["failed"] >= 1
    assert "some checks failed" in catalog.variant_markdown(broken, summary)
    assert "failed" in summary.short


def test_harness_missing_degrades(monkeypatch):
    monkeypatch.setitem(sys.modules, "zoo.harness", None)
    summary = catalog.harness_summary(zoo.get_variant("cross"))
    assert not summary.available and summary.short == "not available"
    assert "Harness result not available" in catalog.variant_markdown(zoo.get_variant("cross"), summary)


def test_bench_ratios(tmp_path):
    doc = {"schema": "zoo-bench/1", "results": [
        {"variant": "cross", "shape": "sd", "dtype": "float32", "pass": "fwd", "zoo_ms": 10.1,
         "baseline_ms": 10.0, "ratio": 1.01},
        {"variant": "cross", "shape": "long", "dtype": "float32", "pass": "fwd", "zoo_ms": 5.0,
         "baseline_ms": 5.05, "ratio": 0.99},
        {"variant": "cross", "shape": "sd", "dtype": "float32", "pass": "fwd+bwd", "zoo_ms": 30.0,
         "baseline_ms": 29.0, "ratio": 1.0345},
        {"variant": "film", "shape": "sd", "dtype": "float32", "pass": "fwd", "ratio": float("nan")},
    ]}
    path = tmp_path / "cpu.json"
    path.write_text(json.dumps(doc))
    assert catalog.bench_ratios(path) == {"cross": "fwd 1.00x, fwd+bwd 1.03x"}  # medians
    assert "| sd | float32 | fwd | 10.100 | 10.000 | 1.010 |" in catalog.bench_table(path, "cross")
    assert catalog.bench_table(path, "film") is None
    assert catalog.bench_ratios(tmp_path / "missing.json") == {}
    (tmp_path / "bad.json").write_text("{not json")
    assert catalog.bench_ratios(tmp_path / "bad.json") == {}
    index = catalog.index_markdown([zoo.get_variant("cross"), zoo.get_variant("film")], {},
                                   catalog.bench_ratios(path))
    assert "fwd 1.00x" in index and catalog.NOT_MEASURED in index


def test_config_table_lists_fields_with_defaults_and_descriptions():
    rows = {r[0]: r for r in catalog.config_table(zoo.get_variant("cross").config)}
    assert "variant" not in rows
    assert rows["heads"][1:3] == ("int", "8")
    assert rows["context_dim"][1] == "int | None"
    assert rows["heads"][3].startswith("Number of attention heads") and "> 0" in rows["heads"][3]


def test_hook_signature():
    from zoo.hookspecs import zoo_register_variants

    assert catalog.hook_signature(zoo_register_variants) == \
        "zoo_register_variants(register: Callable[[VariantSpec], None]) -> None"


@pytest.mark.parametrize("name", VARIANTS)
def test_shapes_row_reads_as_written(name):
    """The context row shows each tuple of the spec's shape as code and says what None
    means once (issue 17: persistent's row read "`(..., or None (...)` or `None`")."""
    spec = zoo.get_variant(name)
    page = catalog.variant_markdown(spec)
    row = next(line for line in page.splitlines() if line.startswith("| `context` |"))
    for tup in re.findall(r"\([A-Z][^()]*\)", spec.context_shape or ""):
        assert f"`{tup}`" in row, f"{name}: {tup} is not shown as code in {row!r}"
    assert row.count("None") <= 1, f"{name}: None explained twice in {row!r}"
    assert "`(" not in row.replace("`(B", ""), f"{name}: prose inside a code span in {row!r}"


@pytest.mark.parametrize("name", VARIANTS)
def test_speed_table_names_the_variants_own_baseline(name, tmp_path):
    """The speed column is headed by the baseline the spec gives, not "bare SDPA" for all."""
    spec = zoo.get_variant(name)
    path = tmp_path / "cpu.json"
    path.write_text(json.dumps({"results": [{"variant": name, "shape": "sd", "dtype": "float32", "pass": "fwd",
                                             "zoo_ms": 1.0, "baseline_ms": 1.0, "ratio": 1.0}]}))
    files = catalog.build_catalog([spec], run_harness=False, pictures=False, bench_path=path)
    page = files[catalog.page_path(name)]
    label = spec.bench.baseline_label if spec.bench and spec.bench.baseline else "baseline"
    assert f"| {label} ms |" in page
    if spec.bench is not None and spec.bench.baseline_label != "bare SDPA":
        assert "bare SDPA" not in page


@pytest.mark.slow
def test_harness_results_can_be_reused(harness_summaries):
    """The docs build reuses the session's harness run: a summary survives JSON."""
    for summary in harness_summaries.values():
        again = catalog.HarnessSummary.from_dict(json.loads(json.dumps(summary.to_dict())))
        assert again == summary and again.short == summary.short


def test_page_shows_what_the_variant_learned(tmp_path):
    """The page quotes the variant's own `zoo compare` rows next to the floor, from the JSON given;
    without a row it says the variant was not measured."""
    import json

    spec = zoo.get_variant("film")
    doc = json.loads((Path(__file__).parents[1] / "benchmarks/results/compare-full.json").read_text())
    doc["results"] = [r for r in doc["results"] if r["task"] == "global" and r["variant"] in ("film", "none")]
    for r in doc["results"]:
        r["value"] = {"film": 0.123456, "none": 0.000321}[r["variant"]]
    path = tmp_path / "compare.json"
    path.write_text(json.dumps(doc))
    page = catalog.build_catalog([spec], run_harness=False, pictures=False, compare_path=path)[catalog.page_path("film")]
    learned = page.split("## What it learns", 1)[1].split("\n## ", 1)[0]
    row = next(line for line in learned.splitlines() if line.startswith("| global"))
    assert "0.123" in row and "0.000" in row, row
    doc["results"] = [r for r in doc["results"] if r["variant"] == "none"]
    path.write_text(json.dumps(doc))
    page = catalog.build_catalog([spec], run_harness=False, pictures=False, compare_path=path)[catalog.page_path("film")]
    assert "has no row for `film`" in page.split("## What it learns", 1)[1]


def test_page_shows_what_the_variant_keeps_from_a_pretrained_model(tmp_path):
    """'What it keeps' quotes the variant's conversion rows (MiniLM points, translation accuracy,
    a refusal's reason) from the files given; without a row it says so."""
    import json

    minilm = {"model": "MiniLM", "rows": [
        {"label": "linear", "variant": "linear", "points": [
            {"stage": "zero-shot", "steps": 0, "mean_cosine": 0.451, "top1_agreement": 0.19, "ground_truth_top1": 0.08},
            {"stage": "model (all)", "steps": 500, "mean_cosine": 0.91382, "top1_agreement": 0.58,
             "ground_truth_top1": 0.165}]},
        {"label": "film", "variant": "film", "points": [], "reason": "film needs a context"}]}
    translation = {"rows": [{"label": "linear", "zero_shot": {"token_accuracy": 0.684},
                             "distilled": {"steps": 100, "token_accuracy": 0.99}}]}
    shorter = {"model": "MiniLM", "rows": [  # the same conversion cut earlier in another run: not shown
        {"label": "linear", "variant": "linear", "points": [{"stage": "zero-shot", "steps": 0, "mean_cosine": 0.45}]},
        {"label": "film", "variant": "film", "points": [], "reason": "film needs a context"}]}
    paths = [tmp_path / "convert-a.json", tmp_path / "convert-b.json", tmp_path / "broken.json", tmp_path / "c.json"]
    paths[0].write_text(json.dumps(minilm))
    paths[1].write_text(json.dumps(translation))
    paths[2].write_text("{not json")  # skipped, never a crash
    paths[3].write_text(json.dumps(shorter))
    pages = catalog.build_catalog([zoo.get_variant(n) for n in ("linear", "film", "cross")], run_harness=False,
                                  pictures=False, conversions=paths)

    def kept(name):
        return pages[catalog.page_path(name)].split("## What it keeps", 1)[1].split("\n## ", 1)[0]

    assert "| linear | model (all) | 500 | 0.914 | 0.580 | 0.165 |" in kept("linear")
    assert "| linear | zero-shot | 0 | 0.451 |" in kept("linear") and "0.450" not in kept("linear")
    assert kept("film").count("cannot serve there") == 1
    assert "| linear | 0.684 | 0.990 | 100 |" in kept("linear")
    assert "cannot serve there: film needs a context" in kept("film")
    assert "no conversion results file has a row for `cross`" in kept("cross")


def test_the_committed_conversion_results_reach_the_pages():
    """Every conversion committed under benchmarks/results shows on its variant's page."""
    import json

    root = Path(__file__).parents[1]
    files = sorted(root.glob("benchmarks/results/convert-*.json"))
    assert files
    pages = catalog.build_catalog(run_harness=False, pictures=False, conversions=files)
    for path in files:
        for row in json.loads(path.read_text())["rows"]:
            name = row.get("variant") or row["label"].split(" ")[0]
            if name in zoo.list_variants():
                assert row["label"] in pages[catalog.page_path(name)].split("## What it keeps", 1)[1], (path, row)


def test_pages_show_inferred_capabilities_for_a_variant_that_declares_nothing():
    """A stranger declares no capabilities: the page shows what the harness observes
    (film has no dropout field and needs a context), not plain attention's defaults."""
    from zoo.catalog.pages import _capabilities

    spec = zoo.get_variant("film").replace(name="film-undeclared", capabilities=zoo.Capabilities())
    shown = _capabilities(spec)
    assert not any("dropout" in c for c in shown), shown
    assert not any("self" in c for c in shown), shown


def _own_results(tmp_path, name):
    """A plugin's own results files for ``name``: a zoo-bench/1 and a zoo-compare/1 JSON."""
    bench = tmp_path / "my-bench.json"
    bench.write_text(json.dumps({"schema": "zoo-bench/1", "results": [
        {"variant": name, "shape": "sd", "dtype": "float32", "pass": "fwd", "zoo_ms": 1.0, "baseline_ms": 2.0,
         "ratio": 0.5}]}))
    doc = json.loads((ROOT / "benchmarks/results/compare-full.json").read_text())
    doc["results"] = [r for r in doc["results"] if r["task"] == "global" and r["variant"] in ("cross", "none")]
    for r in doc["results"]:
        if r["variant"] == "cross":
            r.update(variant=name, value=0.654321)
    compare = tmp_path / "my-compare.json"
    compare.write_text(json.dumps(doc))
    return bench, compare


def test_a_plugins_own_results_files_give_its_page_speed_and_quality(registry, tmp_path):
    """Results files of the plugin's own (not the zoo's committed ones) feed its page; the
    zoo's variants keep the zoo's files, which stay untouched."""
    from attention_zoo_plugins.variants import cross

    registry.load_plugin(cross, name="cross", distribution="attention-zoo")
    registry.load_plugin(_load_example_plugin(), name="gated-cross", distribution="zoo-example-gated-cross")
    committed = {p: p.read_bytes() for p in (ROOT / "benchmarks" / "results").glob("*.json")}
    bench, compare = _own_results(tmp_path, "gated-cross")
    files = catalog.build_catalog(run_harness=False, pictures=False, results=[compare, bench],
                                  bench_path=ROOT / "benchmarks/results/cpu.json")
    page = files["catalog/gated-cross.md"]
    assert "speed vs" in page and "fwd 0.50x" in page and "from `my-bench.json`" in page
    learned = page.split("## What it learns", 1)[1].split("\n## ", 1)[0]
    assert "`my-compare.json`" in learned and "0.654" in learned
    assert "fwd 0.50x" in files["catalog/index.md"]
    assert "from `benchmarks/results/cpu.json`" in files["catalog/cross.md"]
    assert {p: p.read_bytes() for p in committed} == committed
    with pytest.raises(ValueError, match="neither 'zoo-bench/1'"):
        catalog.build_catalog(run_harness=False, pictures=False, results=[_json_of(tmp_path, {"schema": "other/1"})])


def _json_of(tmp_path, data):
    path = tmp_path / "other.json"
    path.write_text(json.dumps(data))
    return path


def test_python_dash_m_zoo_catalog_writes_a_plugins_page(registry, tmp_path, capsys):
    from zoo.catalog.__main__ import main as catalog_main

    registry.load_plugin(_load_example_plugin(), name="gated-cross", distribution="zoo-example-gated-cross")
    bench, compare = _own_results(tmp_path, "gated-cross")
    out = tmp_path / "site"
    assert catalog_main(["gated-cross", "--results", str(bench), str(compare), "--out", str(out),
                         "--no-harness", "--no-pictures"]) == 0
    page = (out / "catalog" / "gated-cross.md").read_text()
    assert "fwd 0.50x" in page and "0.654" in page
    assert catalog_main(["gated-cross", "--results", str(tmp_path / "missing.json"), "--out", str(out)]) == 2
    assert "missing.json" in capsys.readouterr().err

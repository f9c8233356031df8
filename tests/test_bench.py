"""zoo bench: the baselines compute what the zoo layers compute; the CLI writes its JSON.

No wall-clock assertion here: timings on a shared machine prove nothing in a test.
"""

from __future__ import annotations

import io
import json

import pytest
import torch

import zoo
from zoo.bench.cases import attention_flops, bench_of, build, cases_for, workload
from zoo.bench.report import Progress
from zoo.bench.timing import interleaved, median_ci

BENCHED = [n for n in zoo.list_variants() if bench_of(zoo.get_variant(n)).baseline is not None]
CASES = [(n, c.shape) for n in BENCHED for c in cases_for(zoo.get_variant(n), "tiny")]


def _layer(name: str, key: str, dtype: torch.dtype):
    spec = zoo.get_variant(name)
    case = next(c for c in cases_for(spec, "tiny") if c.shape == key)
    layer, inputs = build(spec, case.workload, dtype=dtype)
    with torch.no_grad():  # FiLM starts as the identity: give every parameter a value
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return layer.eval(), inputs


@pytest.mark.parametrize(("name", "key"), CASES)
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_baseline_equals_zoo_layer(name, key, dtype, tol):
    layer, inputs = _layer(name, key, dtype)
    bare = zoo.get_variant(name).bench.baseline
    with torch.no_grad():
        ours, theirs = layer(**inputs), bare(layer, **inputs)
    assert ours.shape == theirs.shape == inputs["x"].shape
    err = (ours - theirs).abs().max().item()
    assert err <= tol * max(1.0, theirs.abs().max().item()), f"{name} at {key}: baseline differs by {err:.2e}"


@pytest.mark.parametrize(("name", "key"), CASES)
def test_baseline_gradients_equal_zoo_layer(name, key):
    layer, inputs = _layer(name, key, torch.float64)
    bare = zoo.get_variant(name).bench.baseline
    params = [p for p in layer.parameters()]
    grads = []
    for fn in (layer, lambda **kw: bare(layer, **kw)):
        leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
        out = fn(**leaves)
        g = torch.autograd.grad(out, [*leaves.values(), *params], torch.ones_like(out), allow_unused=True)
        grads.append(g)
    for a, b in zip(*grads):
        if a is None or b is None:
            assert a is None and b is None or (a if a is not None else b).abs().max() == 0
            continue
        assert (a - b).abs().max().item() < 1e-10


def test_retro_baseline_zero_before_first_window():
    layer, inputs = _layer("retro", "retro", torch.float64) if "retro" in BENCHED else pytest.skip("no retro")
    out = zoo.get_variant("retro").bench.baseline(layer, **inputs)
    m = layer.config.chunk_size
    assert out[:, : m - 1].abs().max().item() == 0.0
    assert out[:, m - 1 :].abs().max().item() > 0.0


def test_a_wrong_baseline_is_reported_as_a_mismatch(registry):
    """The bench compares outputs before timing: a baseline that computes something else
    gives a failed row saying so, whatever the times."""
    from attention_zoo_plugins.variants import cross

    from zoo.bench.runner import bench

    registry.load_plugin(cross, name="cross", distribution="attention-zoo")
    spec = zoo.get_variant("cross")
    wrong = spec.replace(name="cross-wrong", config=_renamed_config(spec.config, "cross-wrong"),
                         aliases=(), bench=zoo.BenchSpec(shapes=spec.bench.shapes[:1],
                                                         baseline=lambda m, x, context, **_: 2 * x))
    registry.register(wrong)
    doc = bench(["cross-wrong"], size="tiny", dtypes=("float32",), passes=("fwd",), repeat=2, memory=False,
                system_checks=False, progress=False)
    (row,) = doc["results"]
    assert row["mismatch"] is True and row["met"] is False and not doc["all_met"]


def test_a_variant_without_bench_info_gets_a_row_without_a_ratio(registry):
    """No BenchSpec: timed on its own make_inputs at the default workload, absolute
    numbers only (no baseline to divide by, so no ratio and no verdict)."""
    from attention_zoo_plugins.variants import cross

    from zoo.bench.runner import bench

    registry.load_plugin(cross, name="cross", distribution="attention-zoo")
    spec = zoo.get_variant("cross")
    bare = spec.replace(name="plain", config=_renamed_config(spec.config, "plain"), aliases=(), bench=None)
    registry.register(bare)
    doc = bench(["plain"], size="tiny", dtypes=("float32",), passes=("fwd",), repeat=2, memory=False,
                system_checks=False, progress=False)
    (row,) = doc["results"]
    assert row["shape"] == "default" and row["zoo_ms"] > 0
    assert row["ratio"] is None and row["baseline_ms"] is None and row["met"] is None
    assert doc["all_met"] and doc["verdicts"] == 0


def _renamed_config(config, name):
    from typing import Literal

    from pydantic import create_model

    return create_model(f"{config.__name__}_{name.replace('-', '_')}", __base__=config,
                        variant=(Literal[name], name))


def test_median_ci_needs_enough_rounds_and_brackets_the_median():
    assert median_ci([1.0] * 5) is None  # 5 paired rounds cannot give 95 %
    lo, hi = median_ci([float(i) for i in range(1, 22)])
    assert lo < 11.0 < hi and (lo, hi) == (6.0, 16.0)  # binomial order statistics for n = 21


def test_quick_run_gives_no_verdict_its_interval_does_not_support():
    """A smoke run's row is judged only when the paired interval lies on one side."""
    from zoo.bench.runner import _verdict

    noisy = [0.8, 1.3, 0.9, 1.2, 1.0, 1.1, 0.95, 1.15]
    assert _verdict(1.05, noisy, 1.05, True, decide=False) is None
    assert _verdict(1.3, [1.3 + 0.01 * i for i in range(8)], 1.05, True, decide=False) is False
    assert _verdict(0.9, [0.9 + 0.01 * i for i in range(8)], 1.05, True, decide=False) is True
    assert _verdict(1.06, noisy, 1.05, True, decide=True) is False  # the full run judges medians


def test_bench_cli_writes_json_with_schema(tmp_path, capsys):
    from zoo.cli import main

    path = tmp_path / "bench.json"
    rc = main(["bench", "cross", "--size", "tiny", "--repeat", "2", "--no-memory", "--no-system",
               "--dtype", "float32", "--no-progress", "--json", str(path)])
    assert rc == 0
    doc = json.loads(path.read_text())
    assert doc["schema"] == "zoo-bench/1"
    assert doc["torch"] == torch.__version__
    assert {"cpu_model", "threads", "device"} <= set(doc["machine"])
    rows = doc["results"]
    shapes = [c.shape for c in cases_for(zoo.get_variant("cross"), "tiny")]
    assert {(r["shape"], r["pass"]) for r in rows} == {(s, p) for s in shapes for p in ("fwd", "fwd+bwd")}
    for r in rows:
        assert set(r) >= {"variant", "shape", "dtype", "pass", "zoo_ms", "baseline_ms", "ratio", "target", "met"}
        assert r["variant"] == "cross" and r["dtype"] == "float32"
        assert r["zoo_ms"] > 0 and r["baseline_ms"] > 0
        assert r["ratio"] == pytest.approx(r["zoo_ms"] / r["baseline_ms"], rel=2e-2)
        assert r["met"] is None or isinstance(r["met"], bool)  # tiny: a smoke run
        assert r["max_abs_diff"] < 1e-4
    out = capsys.readouterr().out
    assert "ratio" in out and "cross" in out and str(path) in out
    assert max(map(len, out.splitlines())) <= 100, "a table wider than 100 columns"
    from zoo.bench.report import to_markdown

    md = to_markdown(doc)
    assert md.count("| cross | ") == len(rows)


def test_bench_unknown_variant_exits_2(capsys):
    from zoo.cli import main

    assert main(["bench", "crosss", "--size", "tiny", "--no-memory", "--no-system", "--no-progress",
                 "--json", "/dev/null"]) == 2
    assert "cross" in capsys.readouterr().err


def test_bench_module_import_is_cheap():
    import subprocess
    import sys

    code = "import sys, zoo.bench; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_dispatch_measurement_returns_a_number():
    from zoo.bench.system import dispatch_overhead

    d = dispatch_overhead("cross", repeat=3)
    for k in ("zoo_us", "baseline_us", "overhead_us"):
        assert isinstance(d[k], float)
    assert d["zoo_us"] > 0 and d["baseline_us"] > 0
    assert isinstance(d["met"], bool)


@pytest.mark.slow
def test_memory_worker_sees_what_a_call_allocates():
    """Measured in a fresh process, a forward at N=M=2048 holds at least its own output
    (2048 x 512 float32 = 4 MiB), and more than a forward 16 times smaller."""
    from zoo.bench.memory import measure
    from zoo.benchspec import Workload

    def job(n):
        wl = Workload(1, n, n, {"query_dim": 512, "context_dim": 512, "heads": 8, "dim_head": 64})
        return {"variant": "cross", "impl": "zoo", "workload": wl.as_dict(), "dtype": "float32",
                "passes": ["fwd"], "device": "cpu"}

    big, small = measure(job(2048))["fwd"], measure(job(128))["fwd"]
    output_mib = 2048 * 512 * 4 / 2**20
    assert big >= output_mib, f"a forward at N=2048 measured {big:.1f} MiB, less than its output"
    assert big > small + output_mib / 2


@pytest.mark.slow
def test_memory_worker_batches_jobs_in_one_process():
    from zoo.bench.memory import measure_many

    jobs = [{"variant": "cross", "impl": impl, "shape": "long", "size": "tiny", "dtype": "float32",
             "passes": ["fwd"], "device": "cpu"} for impl in ("zoo", "bare")]
    got = measure_many(jobs)
    assert len(got) == 2 and all(set(g) == {"fwd"} for g in got)
    assert measure_many([]) == []


def test_interleaved_alternates_order_and_counts_rounds():
    calls = []
    s = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                    repeat=4, warmup=0, number=1)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert len(s["a"].seconds) == len(s["b"].seconds) == 4


def test_workload_releases_gradients():
    layer, inputs = _layer("cross", "sd", torch.float32)
    run = workload(layer, list(layer.parameters()), inputs, "fwd+bwd")
    run()
    assert all(p.grad is None for p in layer.parameters())
    with pytest.raises(ValueError, match="pass"):
        workload(layer, [], inputs, "bwd")


def test_progress_writes_lines_to_a_log():
    buf = io.StringIO()
    p = Progress(2, stream=buf)
    p.show("cross sd float32", "round 1/3")
    p.step("cross sd float32")
    p.show("cross long float32")
    p.close()
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("[0/2]") and "cross sd float32" in lines[0]
    assert lines[-1].startswith("[1/2]") and "cross long" in lines[-1]


def test_attention_flops_counts_both_products():
    f = attention_flops(1, 4096, 4096, 8, 64, 512, 512)
    assert f["attention"] == 4 * 4096 * 4096 * 512
    assert f["total"] > f["attention"]


def test_gflops_check_and_system_table():
    from zoo.bench.report import format_system
    from zoo.bench.system import gflops

    g = gflops(dtypes=("float32",), length=256, matmul_n=256, repeat=1, layer="cross")
    row = g["float32"]
    assert row["matmul_peak_gflops"] > 0 and row["sdpa_gflops"] > 0 and row["layer_gflops"] > 0
    assert row["matmul_peak_gflops"] >= row["matmul_median_gflops"]
    table = format_system({"gflops": g, "dispatch": [], "import": {
        "seconds": 0.1, "variants_discovered": 5, "target_s": 0.3, "met": True}})
    assert "SDPA GFLOP/s (fp32)" in table and "import + discovery" in table
    assert max(map(len, table.splitlines())) <= 100


def test_a_strangers_variant_is_benchmarked_with_its_ratio(registry, capsys):
    """The example plugin (a third-party distribution) gets rows with ratios from its own
    BenchSpec: `zoo bench gated-cross` needs nothing from the core by name."""
    import importlib.util
    import sys
    from pathlib import Path

    from zoo.cli import main

    path = Path(__file__).resolve().parents[1] / "examples" / "zoo-plugin-example" / "zoo_example_gated_cross.py"
    spec = importlib.util.spec_from_file_location("_bench_test_gated_cross", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    registry.load_plugin(module, name="gated-cross", distribution="zoo-example-gated-cross")
    assert main(["bench", "gated-cross", "--size", "tiny", "--repeat", "2", "--no-memory", "--no-system",
                 "--no-progress", "--json", "/dev/null"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("gated-cross ")]
    assert {r[1] for r in rows} == {"sd", "long"}
    assert all(float(r[6]) > 0 for r in rows), rows  # the ratio column holds a number


def test_a_variant_that_cannot_build_its_workload_is_skipped_with_the_reason(registry):
    from attention_zoo_plugins.variants import cross

    from zoo.bench.runner import bench

    registry.load_plugin(cross, name="cross", distribution="attention-zoo")
    spec = zoo.get_variant("cross")

    def refuses(module, **kw):
        raise ValueError("this variant needs inputs of its own kind")

    registry.register(spec.replace(name="odd", config=_renamed_config(spec.config, "odd"), aliases=(),
                                   make_inputs=refuses, bench=None))
    doc = bench(["odd", "cross"], size="tiny", dtypes=("float32",), passes=("fwd",), repeat=2, memory=False,
                system_checks=False, progress=False)
    assert {r["variant"] for r in doc["results"]} == {"cross"}
    assert any(s.startswith("odd default float32: ValueError: this variant needs") for s in doc["skipped"])


TINY_ARGS = ["--size", "tiny", "--repeat", "2", "--no-memory", "--no-system", "--dtype", "float32", "--no-progress"]


def test_bench_json_dash_is_the_json_alone_on_stdout(capsys):
    from zoo.cli import main

    assert main(["bench", "cross", *TINY_ARGS, "--json", "-"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["schema"] == "zoo-bench/1"  # nothing else on stdout
    assert "ratio" in err and "wrote" not in out + err


class _Crashes(torch.nn.Module):
    def __init__(self, query_dim: int = 8, **fields) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(query_dim, query_dim)

    def forward(self, x, context=None, *, context_mask=None):
        raise KeyError("boom")


def test_a_run_whose_every_workload_crashed_exits_1(registry, capsys):
    """Failed work is never exit 0, with or without --strict."""
    from attention_zoo_plugins.variants import cross

    from zoo.cli import main

    registry.load_plugin(cross, name="cross", distribution="attention-zoo")
    spec = zoo.get_variant("cross")
    registry.register(spec.replace(name="crashes", module=_Crashes, config=_renamed_config(spec.config, "crashes"),
                                   aliases=(), bench=None, examples=({"query_dim": 8},)))
    for strict in ([], ["--strict"]):
        assert main(["bench", "crashes", *TINY_ARGS, *strict]) == 1
        out, err = capsys.readouterr()
        assert "FAILED: crashes" in out and "KeyError" in out and "1 workload(s) failed" in out


def test_a_partial_run_in_the_repository_leaves_the_committed_results_alone(tmp_path, monkeypatch, capsys):
    from zoo.cli import main

    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "attention-zoo"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "cross", *TINY_ARGS]) == 0
    assert not (tmp_path / "benchmarks" / "results").exists()
    assert "no results file written" in capsys.readouterr().out


def test_the_report_states_the_load_and_warns_when_busy(capsys):
    from zoo.bench.runner import load_warning

    calm = load_warning({"load_average": [0.4, 0.6], "cores": 2})
    assert "load average 0.40 -> 0.60" in calm and "WARNING" not in calm
    busy = load_warning({"load_average": [1.5, 3.1], "cores": 2})
    assert "WARNING" in busy and "--threads 1" in busy
    from zoo.cli import main

    assert main(["bench", "cross", *TINY_ARGS]) == 0
    assert "load average" in capsys.readouterr().out  # every printed report says it


def test_a_named_run_measures_only_the_named_variant(monkeypatch, capsys):
    """System checks measure the zoo as a whole: a run naming variants skips them unless asked."""
    import zoo.bench.runner as runner
    from zoo.cli import main

    class Planned(Exception):
        pass

    def record(*args, **kwargs):
        raise Planned(kwargs["system_checks"])

    monkeypatch.setattr(runner, "bench", record)
    args = [a for a in TINY_ARGS if a != "--no-system"]
    seen = []
    for argv in (["cross"], ["cross", "--system"], []):
        with pytest.raises(Planned) as info:
            main(["bench", *argv, *args])
        seen.append(info.value.args[0])
    assert seen == [False, True, True]

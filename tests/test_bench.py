"""zoo bench: the baselines compute what the zoo layers compute; the CLI writes its JSON.

No wall-clock assertion here: timings on a shared machine prove nothing in a test.
"""

from __future__ import annotations

import io
import json

import pytest
import torch

import zoo
from zoo.bench import baselines
from zoo.bench.cases import SHAPES, VARIANT_SHAPES, Shape, attention_flops, layer_fields, make_inputs, workload
from zoo.bench.report import Progress
from zoo.bench.timing import interleaved

BENCHED = [n for n in zoo.list_variants() if baselines.baseline_for(n) is not None]
CASES = [(n, k) for n in BENCHED for k in VARIANT_SHAPES[n]]


def _layer(name: str, key: str, dtype: torch.dtype):
    shape = SHAPES["tiny"][key]
    spec = zoo.get_variant(name)
    torch.manual_seed(0)
    layer = zoo.create(spec, **layer_fields(spec.config, shape)).to(dtype).eval()
    with torch.no_grad():  # FiLM starts as the identity: give every parameter a value
        for p in layer.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    x, c = make_inputs(shape, dtype=dtype)
    return layer, x, c


def test_every_builtin_variant_has_a_baseline():
    assert set(BENCHED) >= {"cross"} & set(zoo.list_variants())
    for name in ("cross", "selfdoc", "persistent", "retro", "film"):
        assert baselines.baseline_for(name) is not None
    assert baselines.baseline_for("no-such-variant") is None


@pytest.mark.parametrize(("name", "key"), CASES)
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_baseline_equals_zoo_layer(name, key, dtype, tol):
    layer, x, c = _layer(name, key, dtype)
    bare = baselines.baseline_for(name)
    with torch.no_grad():
        ours, theirs = layer(x, c), bare(layer, x, c)
    assert ours.shape == theirs.shape == x.shape
    err = (ours - theirs).abs().max().item()
    assert err <= tol * max(1.0, theirs.abs().max().item()), f"{name} at {key}: baseline differs by {err:.2e}"


@pytest.mark.parametrize(("name", "key"), CASES)
def test_baseline_gradients_equal_zoo_layer(name, key):
    layer, x, c = _layer(name, key, torch.float64)
    bare = baselines.baseline_for(name)
    params = [p for p in layer.parameters()]
    grads = []
    for fn in (layer, lambda a, b: bare(layer, a, b)):
        xg, cg = x.clone().requires_grad_(), c.clone().requires_grad_()
        out = fn(xg, cg)
        g = torch.autograd.grad(out, [xg, cg, *params], torch.ones_like(out), allow_unused=True)
        grads.append(g)
    for a, b in zip(*grads):
        if a is None or b is None:
            assert a is None and b is None or (a if a is not None else b).abs().max() == 0
            continue
        assert (a - b).abs().max().item() < 1e-10


def test_retro_baseline_zero_before_first_window():
    layer, x, c = _layer("retro", "retro", torch.float64) if "retro" in BENCHED else pytest.skip("no retro")
    out = baselines.retro(layer, x, c)
    m = layer.config.chunk_size
    assert out[:, : m - 1].abs().max().item() == 0.0
    assert out[:, m - 1 :].abs().max().item() > 0.0


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
    assert {(r["shape"], r["pass"]) for r in rows} == {(s, p) for s in VARIANT_SHAPES["cross"] for p in ("fwd", "fwd+bwd")}
    for r in rows:
        assert set(r) >= {"variant", "shape", "dtype", "pass", "zoo_ms", "baseline_ms", "ratio", "target", "met"}
        assert r["variant"] == "cross" and r["dtype"] == "float32"
        assert r["zoo_ms"] > 0 and r["baseline_ms"] > 0
        assert r["ratio"] == pytest.approx(r["zoo_ms"] / r["baseline_ms"], rel=2e-2)
        assert isinstance(r["met"], bool)
        assert r["max_abs_diff"] < 1e-4
    out = capsys.readouterr().out
    assert "ratio" in out and "cross" in out and str(path) in out
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


def test_memory_worker_measures_a_fresh_process():
    from zoo.bench.memory import measure

    shape = Shape("t", 1, 256, 256, 64, 64, 4, 16)
    got = measure({"variant": "cross", "impl": "zoo", "shape": shape.as_dict(), "dtype": "float32",
                   "passes": ["fwd", "fwd+bwd"], "device": "cpu"})
    assert set(got) == {"fwd", "fwd+bwd"}
    assert all(isinstance(v, float) and v >= 0 for v in got.values())


def test_memory_worker_batches_jobs_in_one_process():
    from zoo.bench.memory import measure_many

    shape = Shape("t", 1, 128, 128, 32, 32, 2, 16).as_dict()
    jobs = [{"variant": "cross", "impl": impl, "shape": shape, "dtype": "float32", "passes": ["fwd"],
             "device": "cpu"} for impl in ("zoo", "bare")]
    got = measure_many(jobs)
    assert len(got) == 2 and all(set(g) == {"fwd"} and g["fwd"] >= 0 for g in got)
    assert measure_many([]) == []


def test_interleaved_alternates_order_and_counts_rounds():
    calls = []
    s = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                    repeat=4, warmup=0, number=1)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert len(s["a"].seconds) == len(s["b"].seconds) == 4


def test_workload_releases_gradients():
    layer, x, c = _layer("cross", "sd", torch.float32)
    run = workload(layer, list(layer.parameters()), x, c, "fwd+bwd")
    run()
    assert all(p.grad is None for p in layer.parameters())
    with pytest.raises(ValueError, match="pass"):
        workload(layer, [], x, c, "bwd")


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
    s = SHAPES["full"]["long"]
    f = attention_flops(s)
    assert f["attention"] == 4 * 4096 * 4096 * 512
    assert f["total"] > f["attention"]


def test_gflops_check_and_system_table():
    from zoo.bench.report import format_system
    from zoo.bench.system import gflops

    g = gflops(dtypes=("float32",), length=64, matmul_n=64, repeat=1)
    row = g["float32"]
    assert row["matmul_peak_gflops"] > 0 and row["sdpa_gflops"] > 0 and row["layer_gflops"] > 0
    assert row["matmul_peak_gflops"] >= row["matmul_median_gflops"]
    table = format_system({"gflops": g, "dispatch": [], "import": {
        "seconds": 0.1, "variants_discovered": 5, "target_s": 0.3, "met": True}})
    assert "fused attention GFLOP/s (float32)" in table and "import zoo" in table

"""``zoo compare``: task generators, the floor, the JSON schema, null rows, the task hook."""

from __future__ import annotations

import json
import math
from typing import Literal

import pytest
import torch

import zoo
import zoo.compare as zc
from zoo.cli import main
from zoo.compare.report import draw, markdown, table, validate_document
from zoo.compare.runner import run_cell

TINY = zc.Tier("quick", steps=3, batch=8, lrs=(1e-2,), seeds=2, eval_size=64)
BUILTIN = ("recall", "global", "aligned", "memory", "retrieval")


@pytest.fixture
def compare_registry(registry, monkeypatch):
    """A fresh registry with cross, selfdoc, retro and the built-in tasks; a tiny tier."""
    from attention_zoo_plugins import retro, tasks
    from attention_zoo_plugins.variants import cross, selfdoc

    for mod, name in ((cross, "cross"), (selfdoc, "selfdoc"), (retro, "retro"), (tasks, "tasks")):
        registry.load_plugin(mod, name=name)
    monkeypatch.setattr(zc, "QUICK", TINY)
    return registry


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", BUILTIN)
def test_task_generator_shapes_and_determinism(compare_registry, name):
    task = zc.get_task(name)
    problem = task.build(0, quick=True)
    a = problem.batch(_gen(1), 4, "train")
    b = task.build(0, quick=True).batch(_gen(1), 4, "train")
    c = task.build(1, quick=True).batch(_gen(2), 4, "train")
    n = problem.query_len
    assert a["x"].shape[:2] == (4, n)
    assert a["target"].shape[:2] == (4, n)
    if problem.context_form == "sequence":
        assert a["context"].shape == (4, problem.context_len, task.layer_fields["context_dim"])
    else:
        nb = a["neighbours"]
        assert nb.shape[:2] == (4, n // task.layer_fields["chunk_size"]) and nb.shape[-1] == problem.context_len
    for key in a:
        assert torch.equal(a[key], b[key]), f"{name}: the same seeds gave a different {key!r}"
    assert not torch.equal(a["target"], c["target"]), f"{name}: another seed gave the same targets"


@pytest.mark.parametrize("name", BUILTIN)
def test_floor_is_near_chance(compare_registry, name):
    task = zc.get_task(name)
    problems = [(s, task.build(s, quick=True)) for s in (0, 1)]
    row = run_cell(None, task, problems, TINY)
    assert row["variant"] == "none" and row["value"] is not None
    if task.higher_is_better:  # accuracy / R^2: nothing above chance without the layer
        assert row["value"] <= task.chance + 0.06, row
    else:  # loss: without neighbours no model beats the letters' entropy
        assert row["value"] >= 0.95 * task.chance, row


def test_aligned_targets_are_x_content_routed_by_the_context(compare_registry):
    """The target of item i is x's content at the item whose label (in the context) i asks for."""
    p = zc.get_task("aligned").build(0, quick=True)
    b = p.batch(_gen(3), 16)
    # x_i = content_emb[c] + ask_emb[a]: 32 vectors in 32 dims, so the coefficients are exact
    coef = b["x"] @ torch.linalg.pinv(torch.cat([p.content_emb, p.ask_emb]))
    content, asked = coef[..., :16].argmax(-1), coef[..., 16:].argmax(-1)
    label = torch.cdist(b["context"], p.label_emb[None].expand(16, -1, -1)).argmin(-1)
    src = (asked[:, :, None] == label[:, None, :]).float().argmax(-1)
    assert torch.equal(b["target"], content.gather(1, src))
    assert not (src == torch.arange(p.query_len)).any(), "an item never asks for itself"


def test_retrieval_neighbours_hold_the_continuation(compare_registry):
    p = zc.get_task("retrieval").build(0, quick=True)
    b = p.batch(_gen(0), 8)
    m = zc.get_task("retrieval").layer_fields["chunk_size"]
    tokens = torch.cat([b["x"], b["target"][:, -1:]], dim=1)
    # the first neighbour of chunk u is the other copy: chunk u and chunk u+1
    for u in range(b["neighbours"].shape[1] - 1):
        assert torch.equal(b["neighbours"][:, u, 0], tokens[:, u * m : (u + 2) * m])


def test_json_alone_on_stdout_with_null_rows_and_floor(compare_registry, capsys):
    assert main(["compare", "cross", "selfdoc", "retro", "--quick", "--task", "recall", "--json", "-"]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)  # the whole of stdout is the JSON
    validate_document(doc)
    rows = {r["variant"]: r for r in doc["results"]}
    assert doc["schema"] == "zoo-compare/1" and set(rows) == {"none", "cross", "selfdoc", "retro"}
    for key in ("variant", "task", "metric", "value", "higher_is_better", "params", "seconds"):
        assert all(key in r for r in rows.values())
    assert isinstance(rows["cross"]["value"], float) and rows["cross"]["params"] > 0
    assert set(rows["cross"]["per_seed"]) == {"0", "1"} and rows["cross"]["spread"] >= 0
    assert rows["selfdoc"]["value"] is None and "as long as x" in rows["selfdoc"]["reason"]
    assert rows["retro"]["value"] is None and "neighbours" in rows["retro"]["reason"]
    assert "recall" in err and "n/a" in err  # the table went to stderr


def test_unknown_names_and_bad_options_exit_2(compare_registry, capsys, tmp_path):
    assert main(["compare", "no-such-variant", "--quick"]) == 2
    assert main(["compare", "cross", "--quick", "--json", str(tmp_path / "no" / "such" / "dir.json")]) == 2
    assert main(["compare", "cross", "--quick", "--device", "nonsense"]) == 2
    assert main(["compare", "cross", "--task", "no-such-task", "--quick"]) == 2
    assert "known tasks: recall" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--png", "out.xyz"], "--png out.xyz: the file name must end in .png"),
    (["--png", "{tmp}"], "is a directory; give a file name such as {tmp}/out.png"),
    (["--markdown", "table.txt"], "must end in .md"),
    (["--seed", "99999999999999999999999"], "a seed is a whole number from 0"),
    (["--seed", "-1"], "a seed is a whole number from 0"),
])
def test_usage_errors_are_found_before_any_training(compare_registry, capsys, tmp_path, monkeypatch, args, message):
    """Checked before anything trains: exit 2 and the reason, never a task or a variant blamed."""
    monkeypatch.setattr(zc, "compare", lambda *a, **k: pytest.fail("trained before the usage check"))
    args = [a.format(tmp=tmp_path) for a in args]
    assert main(["compare", "cross", "--quick", "--task", "global", *args]) == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err


def test_check_refuses_a_seed_torch_cannot_take(compare_registry, capsys):
    assert main(["check", "cross", "--seed", "99999999999999999999999"]) == 2
    err = capsys.readouterr().err
    assert "a seed is a whole number" in err and "FAILED" not in err


class _TrainsBadly(torch.nn.Module):
    """Passes in eval; raises KeyError in training mode (a bug only training finds)."""

    def __init__(self, query_dim: int = 8, **fields) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(query_dim, query_dim)

    def forward(self, x, context=None, *, context_mask=None):
        if self.training:
            raise KeyError("boom")
        return self.lin(x)


class _BoomConfig(zoo.VariantConfig):
    variant: Literal["boom"] = "boom"
    query_dim: int = 8
    context_dim: int | None = None
    heads: int = 8
    dim_head: int = 64


def test_a_variant_that_fails_in_training_loses_no_other_result(compare_registry, capsys, tmp_path):
    zoo.register(zoo.VariantSpec(name="boom", module=_TrainsBadly, config=_BoomConfig, summary="raises KeyError"))
    path = tmp_path / "out.json"
    assert main(["compare", "boom", "cross", "--quick", "--task", "global", "--json", str(path)]) == 1
    doc = json.loads(path.read_text())
    validate_document(doc)
    rows = {r["variant"]: r for r in doc["results"]}
    assert rows["boom"]["value"] is None and "KeyError" in rows["boom"]["reason"]
    assert rows["cross"]["value"] is not None and rows["none"]["value"] is not None
    assert "these runs failed: boom on global" in capsys.readouterr().err


class _BrokenConfig(zoo.VariantConfig):
    variant: Literal["broken-at-call"] = "broken-at-call"
    query_dim: int = 8


class _Broken(torch.nn.Module):
    def __init__(self, query_dim: int = 8) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(query_dim, query_dim)

    def forward(self, x, context=None, *, context_mask=None):
        raise ValueError("this layer refuses every input")


def test_a_variant_that_raises_gets_a_null_row_not_a_crash(compare_registry):
    zoo.register(zoo.VariantSpec(name="broken-at-call", module=_Broken, config=_BrokenConfig, summary="raises"))
    doc = zc.compare(["broken-at-call", "cross"], ["global"], quick=True)
    validate_document(doc)
    rows = {r["variant"]: r for r in doc["results"]}
    assert rows["broken-at-call"]["value"] is None
    assert "refuses every input" in rows["broken-at-call"]["reason"]
    assert rows["cross"]["value"] is not None


class _Copy(zc.Task):
    name, summary, metric, chance = "copy-third-party", "output the context vector at x's position", "r2", 0.0
    layer_fields = {"query_dim": 8, "context_dim": 8, "heads": 2, "dim_head": 4}

    def build(self, seed, *, quick):
        return _CopyProblem()


class _CopyProblem(zc.Problem):
    query_len = context_len = 4

    def batch(self, gen, size, split="train"):
        c = torch.randn(size, 4, 8, generator=gen)
        return {"x": torch.eye(4, 8).expand(size, 4, 8), "context": c, "target": c}

    def model(self, cond):
        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.cond = cond

            def forward(self, b):
                return b["x"] + (self.cond(b["x"], b["context"]) if self.cond is not None else 0)
        return M()

    def loss(self, pred, batch):
        return ((pred - batch["target"]) ** 2).mean()

    def score(self, pred, batch):
        return float(1 - self.loss(pred, batch) / (batch["target"] ** 2).mean())


class ThirdPartyTasks:
    @zoo.hookimpl
    def zoo_register_tasks(self, register):
        register(_Copy())
        register(_Copy())  # a taken name: refused and reported, the first one stays
        register(object())  # not a task: refused and reported


def test_a_third_party_task_registers_through_the_hook(compare_registry):
    compare_registry.load_plugin(ThirdPartyTasks(), name="third-party")
    assert "copy-third-party" in zc.list_tasks() and set(BUILTIN) <= set(zc.list_tasks())
    problems = " | ".join(zc.task_problems())
    assert "already taken" in problems and "needs the attribute" in problems
    doc = zc.compare(["cross"], ["copy-third-party"], quick=True)
    assert [r["variant"] for r in doc["results"]] == ["none", "cross"]
    assert doc["results"][1]["layer_params"] == sum(p.numel() for p in zoo.create("cross", query_dim=8, heads=2, dim_head=4).parameters())


class RaisingTasks:
    @zoo.hookimpl
    def zoo_register_tasks(self, register):
        raise RuntimeError("this plugin is broken")


def test_a_raising_task_plugin_hides_no_other_plugins_tasks(compare_registry):
    """Hooks are called plugin by plugin: the broken one is reported, the others' tasks stay."""
    compare_registry.load_plugin(ThirdPartyTasks(), name="third-party")
    compare_registry.load_plugin(RaisingTasks(), name="raising")  # pluggy would call it first
    assert "copy-third-party" in zc.list_tasks() and set(BUILTIN) <= set(zc.list_tasks())
    info = {p.name: p for p in compare_registry.plugins()}["raising"]
    assert any("this plugin is broken" in p for p in info.problems), info.problems


def test_register_task_refuses_bad_tasks(compare_registry):
    with pytest.raises(ValueError, match="task instance"):
        zc.register_task(_Copy)
    bad = _Copy()
    bad.name = "Bad Name"
    with pytest.raises(ValueError, match="invalid"):
        zc.register_task(bad)


def test_validate_document_refuses_a_null_without_reason():
    row = {"variant": "x", "task": "t", "metric": "m", "value": None, "higher_is_better": True,
           "params": None, "seconds": None}
    with pytest.raises(ValueError, match="no reason"):
        validate_document({"schema": "zoo-compare/1", "results": [row]})
    validate_document({"schema": "zoo-compare/1", "results": [{**row, "reason": "cannot"}]})
    with pytest.raises(ValueError, match="zoo-compare/1"):
        validate_document({"schema": "zoo-bench/1", "results": []})


def test_reports_render(compare_registry, tmp_path):
    doc = zc.compare(["cross", "selfdoc"], ["recall"], quick=True)
    assert "cross" in table(doc) and "none" in table(doc)
    md = markdown(doc, picture="m.png")
    assert "| recall |" in md and "![task x variant matrix](m.png)" in md and "as long as x" in md
    png = draw(doc, tmp_path / "m.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert not math.isnan(doc["results"][1]["value"])


def test_variant_section_for_the_catalog(compare_registry, tmp_path):
    doc = zc.compare(["cross", "selfdoc"], ["recall"], quick=True)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    from zoo.compare.report import load, variant_section

    loaded = load(path)
    assert load(tmp_path / "missing.json") is None and variant_section(loaded, "film") is None
    cross = variant_section(loaded, "cross")
    assert "| recall | accuracy ↑ |" in cross and f"{doc['results'][1]['value']:.3f}" in cross
    assert "n/a: selfdoc cannot take" in variant_section(loaded, "selfdoc")


class _BrokenTask(_Copy):
    name = "cannot-build"

    def build(self, seed, *, quick):
        raise RuntimeError("no data today")


def test_a_task_that_cannot_be_built_gives_null_rows_and_exit_1(compare_registry, capsys):
    zc.register_task(_BrokenTask())
    assert main(["compare", "cross", "--quick", "--task", "cannot-build", "--task", "global", "--json", "-"]) == 1
    doc = json.loads(capsys.readouterr().out)
    validate_document(doc)
    broken = [r for r in doc["results"] if r["task"] == "cannot-build"]
    assert [r["variant"] for r in broken] == ["none", "cross"] and all("no data today" in r["reason"] for r in broken)
    assert all(r["value"] is not None for r in doc["results"] if r["task"] == "global")


def test_the_floor_is_trained_once_per_task_tier_seed_and_code(compare_registry, monkeypatch):
    import zoo.compare.cache as cache

    first = zc.compare(["cross"], ["global"], quick=True)
    floor = next(r for r in first["results"] if r["variant"] == "none")
    assert not floor.get("cached") and floor["value"] is not None
    again = next(r for r in zc.compare(["cross"], ["global"], quick=True)["results"] if r["variant"] == "none")
    assert again["cached"] and again["value"] == floor["value"]
    other_seed = zc.compare(["cross"], ["global"], quick=True, seed=5)
    assert not next(r for r in other_seed["results"] if r["variant"] == "none").get("cached")
    monkeypatch.setattr(cache, "_source_digest", lambda obj: "changed code")  # a new version of the task
    changed = zc.compare(["cross"], ["global"], quick=True)
    assert not next(r for r in changed["results"] if r["variant"] == "none").get("cached")
    monkeypatch.setenv("ZOO_CACHE_DIR", "")  # off
    assert cache.cache_dir() is None


def test_no_floor_is_trained_for_a_task_no_named_variant_can_take(compare_registry, monkeypatch):
    import zoo.compare.runner as runner

    trained = []
    real = runner._train_once
    monkeypatch.setattr(runner, "_train_once", lambda *a, **k: trained.append(1) or real(*a, **k))
    doc = zc.compare(["selfdoc"], ["recall"], quick=True)
    rows = {r["variant"]: r for r in doc["results"]}
    validate_document(doc)
    assert rows["selfdoc"]["value"] is None and rows["none"]["value"] is None
    assert "none of the named variants can take" in rows["none"]["reason"] and not trained


def test_only_the_first_seeds_problem_is_built_for_a_task_no_named_variant_can_take(compare_registry, monkeypatch):
    """A retrieval task builds a database per seed: not for a run that cannot use it."""
    task = zc.get_task("recall")
    built = []
    real = type(task).build
    monkeypatch.setattr(type(task), "build", lambda self, seed, **kw: built.append(seed) or real(self, seed, **kw))
    zc.compare(["selfdoc"], ["recall"], quick=True)
    assert built == [0]
    zc.compare(["cross"], ["recall"], quick=True)
    assert built[1:] == [0, 1]  # a variant that takes it: every seed of the tier


def test_compare_trains_on_one_thread_unless_told(compare_registry, monkeypatch):
    """Tiny models on a busy CPU: more threads make every step wait (a cell took 512 s on 2
    threads at load 11 and under 1 s on one)."""
    seen = []

    def fake_compare(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise KeyboardInterrupt  # stop there: main answers 130

    before = torch.get_num_threads()
    monkeypatch.setattr(zc, "compare", fake_compare)
    try:
        assert main(["compare", "cross", "--quick", "--task", "global"]) == 130
        assert main(["compare", "cross", "--quick", "--task", "global", "--threads", "2"]) == 130
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 2]
    assert main(["compare", "cross", "--quick", "--threads", "0"]) == 2

"""The staged, resumable RETRO build (plugins/retro/build.py) on the local engine and on Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from attention_zoo_plugins.retro import ByteTokenizer, HashingEmbedder, RetroDatabase
from attention_zoo_plugins.retro import build as buildmod
from attention_zoo_plugins.retro.corpus import load_corpus

M = 16


@pytest.fixture(scope="module")
def docs():
    tok = ByteTokenizer()
    return [tok.encode(t) for t in load_corpus()]


def _queries(db, n=60):
    ids = np.random.default_rng(0).choice(db.n_chunks, n, replace=False)
    return db.embed(db.chunk_tokens(ids))


def _same(a, b):
    assert a.index_info == b.index_info and a.n_chunks == b.n_chunks
    np.testing.assert_array_equal(a.chunk_starts, b.chunk_starts)
    q = _queries(a)
    for x, y in zip(a.search(q, 5), b.search(q, 5)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("index, kw", [("flat", {}), ("ivf", {"nlist": 8, "nprobe": 3})])
def test_a_sharded_build_equals_the_one_process_build(docs, tmp_path, index, kw):
    one = RetroDatabase.build(docs, chunk_size=M, index=index, tokenizer=ByteTokenizer(), **kw)
    staged = buildmod.build_database(docs, tmp_path / "db", shards=3, chunk_size=M, index=index,
                                     tokenizer=ByteTokenizer(), **kw)
    _same(staged, one)
    _same(RetroDatabase.load(tmp_path / "db"), one)
    assert not (tmp_path / "db.build").exists()  # the work directory is removed after success


def test_a_failed_build_resumes_with_only_the_unfinished_shards(docs, tmp_path, monkeypatch, capsys):
    kw = dict(shards=5, chunk_size=M, index="ivf", nlist=8, tokenizer=ByteTokenizer(), progress=True)
    real, calls = buildmod.embed_shard, []

    def dies_on_the_third(*args):
        calls.append(args[2])
        if len(calls) == 3:
            raise RuntimeError("worker killed (simulated)")
        return real(*args)

    monkeypatch.setattr(buildmod, "embed_shard", dies_on_the_third)
    with pytest.raises(RuntimeError, match="simulated"):
        buildmod.build_database(docs, tmp_path / "db", **kw)
    work = tmp_path / "db.build"
    done = sorted(work.glob("emb-*.npy"))
    assert [p.name for p in done] == ["emb-00000.npy", "emb-00001.npy"]
    assert not list(work.glob(".*.tmp")) and not (tmp_path / "db").exists()
    calls.clear()
    monkeypatch.setattr(buildmod, "embed_shard", lambda *a: (calls.append(a[2]), real(*a))[1])
    capsys.readouterr()
    db = buildmod.build_database(docs, tmp_path / "db", **kw)
    assert [c.rsplit("/", 1)[1] for c in calls] == ["emb-00002.npy", "emb-00003.npy", "emb-00004.npy"]
    assert "3 to do (resuming: 2 already embedded)" in capsys.readouterr().err
    _same(db, RetroDatabase.build(docs, chunk_size=M, index="ivf", nlist=8, tokenizer=ByteTokenizer()))


# The CLI build in a child process that SIGKILLs itself after adding two shards: no
# exception handler or ``finally`` runs, as when a machine or an OOM killer stops a build.
_DIES_WHILE_ADDING = """
import os, signal, sys
from attention_zoo_plugins.retro import build
from zoo.cli import main
real, added = build.add_shard, []
def add_then_die(*a):
    if len(added) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    added.append(1)
    return real(*a)
build.add_shard = add_then_die
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_cli_build_resumes_where_it_died(tmp_path):
    args = ["retro", "build", "builtin", str(tmp_path / "db"), "--embedder", "hashing", "--dim", "64",
            "--chunk-size", str(M), "--index", "ivf", "--nlist", "8", "--shards", "5", "--progress"]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    died = subprocess.run([sys.executable, "-c", _DIES_WHILE_ADDING, *args], capture_output=True, text=True, env=env)
    assert died.returncode == -signal.SIGKILL, died.stderr
    work = tmp_path / "db.build"
    assert len(list(work.glob("emb-*.npy"))) == 5 and len(list(work.glob("index-*.faiss"))) == 2
    assert not (tmp_path / "db").exists()
    again = subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr
    assert "0 to do (resuming: 5 already embedded)" in again.stderr
    assert "resuming: the index is already trained" in again.stderr
    assert "adding 3 shard(s) to the index (resuming: 2 already added)" in again.stderr
    tok = ByteTokenizer()
    fresh = RetroDatabase.build([tok.encode(t) for t in load_corpus()], chunk_size=M, index="ivf", nlist=8,
                                tokenizer=tok, embedder=HashingEmbedder(dim=64))
    _same(RetroDatabase.load(tmp_path / "db"), fresh)
    assert not work.exists()


def test_a_work_directory_of_another_build_is_refused(docs, tmp_path, monkeypatch):
    monkeypatch.setattr(buildmod, "add_shard", lambda *a: (_ for _ in ()).throw(RuntimeError("stop")))
    with pytest.raises(RuntimeError, match="stop"):
        buildmod.build_database(docs, tmp_path / "db", shards=2, chunk_size=M, index="flat")
    with pytest.raises(ValueError, match="holds a build with other documents or settings; delete it"):
        buildmod.build_database(docs, tmp_path / "db", shards=2, chunk_size=M + 1, index="flat")


@pytest.mark.parametrize("kw, match", [
    ({"engine": "spark"}, r"engine must be one of \('local', 'ray'\), got 'spark'"),
    ({"shards": 0}, "shards must be an integer between 1 and the number of chunks"),
    ({"address": "ray://x:1"}, "--address applies to --engine ray only"),
])
def test_bad_build_arguments(docs, tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        buildmod.build_database(docs, tmp_path / "db", chunk_size=M, **kw)


def test_without_ray_the_engine_names_the_extra(docs, tmp_path, monkeypatch, capsys):
    from zoo.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code = main(["retro", "build", "builtin", str(tmp_path / "db"), "--engine", "ray", "--embedder", "hashing"])
    assert code == 1
    assert "pip install 'attention-zoo[retro-ray]'" in capsys.readouterr().err


# ------------------------------------------------------------------ Ray (2 CPUs, no network)


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_gives_the_local_neighbours_and_resumes_a_local_build(docs, tmp_path, ray_local, monkeypatch):
    kw = dict(shards=4, chunk_size=M, index="ivfpq", nlist=8, nprobe=4, pq_m=8, opq=False, tokenizer=ByteTokenizer(),
              embedder=HashingEmbedder(dim=64))
    local = buildmod.build_database(docs, tmp_path / "local", **kw)
    on_ray = buildmod.build_database(docs, tmp_path / "ray", engine="ray", **kw)
    _same(on_ray, local)
    # a local build that died after two shards, finished on Ray: Ray does only the rest
    real, calls = buildmod.embed_shard, []
    monkeypatch.setattr(buildmod, "embed_shard",
                        lambda *a: real(*a) if len(calls) < 2 and not calls.append(1) else 1 / 0)
    with pytest.raises(ZeroDivisionError):
        buildmod.build_database(docs, tmp_path / "mixed", **kw)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "mixed.build").glob("emb-*.npy")}
    assert len(stamps) == 2
    monkeypatch.undo()
    mixed = buildmod.build_database(docs, tmp_path / "mixed", engine="ray", keep_work=True, **kw)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert len(list((tmp_path / "mixed.build").glob("emb-*.npy"))) == 4
    _same(mixed, local)


class _OnGpu(HashingEmbedder):
    device = "cuda"


def test_an_embedder_on_cuda_asks_ray_for_a_gpu_per_actor():
    from attention_zoo_plugins.retro.ray_engine import actor_resources

    assert actor_resources(HashingEmbedder()) == {"num_cpus": 1}
    assert actor_resources(_OnGpu()) == {"num_cpus": 1, "num_gpus": 1}


@pytest.mark.slow
def test_ray_without_gpus_refuses_an_embedder_on_cuda(docs, tmp_path, ray_local):
    with pytest.raises(ValueError, match="the Ray cluster has no free GPU; embed on the CPU"):
        buildmod.build_database(docs, tmp_path / "db", engine="ray", embedder=_OnGpu(dim=64), chunk_size=M,
                                tokenizer=ByteTokenizer(), index="flat")

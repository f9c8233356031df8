"""RETRO database at scale (issue 24): compressed (``ivfpq``/factory) indexes, query-time
nprobe, narrow memory-mapped tokens, the version-2 format still loading, on-disk
inverted lists and sharded search."""

from __future__ import annotations

import json
import time

import faiss
import numpy as np
import pytest

from attention_zoo_plugins.retro import RetroDatabase, storage
from attention_zoo_plugins.retro.index import build_index, bytes_per_vector, rescore, train_index
from attention_zoo_plugins.retro.shards import ShardedIndex

D = 32


@pytest.fixture(autouse=True, scope="module")
def _one_faiss_thread():
    """FAISS k-means on a shared, overloaded machine is 5-10x faster on one OpenMP thread."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def _clustered(n, seed=0, d=D, centres=40):
    """Vectors around a few centres (a realistic recall curve, no distance ties)."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + 0.3 * rng.normal(size=(n, d)).astype(np.float32)
    return x.astype(np.float32)


def _docs(n_chunks, m=4, seed=0):
    """Token documents giving exactly ``n_chunks`` chunks of ``m`` (fixed chunks, no tokenizer)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 30_000, size=m * 10) for _ in range(n_chunks // 10)]


@pytest.fixture(scope="module")
def vectors():
    return _clustered(4000)


@pytest.fixture(scope="module")
def pq_db(vectors):
    return RetroDatabase.build(_docs(len(vectors)), chunk_size=4, embeddings=vectors, index="ivfpq", nlist=32,
                               nprobe=2, pq_m=8, opq=True)


def _recall(found, truth):
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


# ------------------------------------------------------------------ compressed indexes


def test_ivfpq_is_compressed_and_close_to_exact(pq_db, vectors):
    info = pq_db.index_info
    assert info == {"kind": "ivfpq", "nlist": 32, "nprobe": 2, "factory": "OPQ8,IVF32,PQ8np"}
    assert bytes_per_vector(pq_db.index) == 8 + 8
    assert train_index(vectors[:1000], "ivfpq", 10**6, nlist=2, pq_m=4)[1]["factory"] == "OPQ4,IVF2,PQ4np"  # OPQ on
    plain, info = train_index(vectors[:2000], "ivfpq", 10**6, nlist=4, opq=False)
    assert info["factory"] == "IVF4,PQ32np" and bytes_per_vector(plain) == 40 <= 48  # PQ32 and an 8-byte id
    with pytest.raises(ValueError, match="opq must be True, False or None"):
        train_index(vectors[:2000], "ivfpq", 10**6, nlist=4, opq="yes")
    q = vectors[:200] + 0.05
    flat = faiss.IndexFlatL2(D)
    flat.add(vectors)
    _, exact = flat.search(q, 10)
    _, got = pq_db.search(q, 10, nprobe=32)
    assert _recall(got, exact) > 0.6
    assert (got[:, :1] == exact[:, :1]).mean() > 0.8


def test_nprobe_is_settable_per_query_and_leaves_the_database_alone(pq_db, vectors):
    q = vectors[::50] + 0.01
    d8, i8 = pq_db.search(q, 10)
    d32, i32 = pq_db.search(q, 10, nprobe=32)
    assert pq_db.index_info["nprobe"] == 2 and faiss.extract_index_ivf(pq_db.index).nprobe == 2
    np.testing.assert_array_equal(pq_db.search(q, 10)[1], i8)
    assert (i32 != i8).any()  # more lists probed: some neighbours change
    ex = pq_db.chunk_docs[np.arange(len(q)) * 50]
    _, ie = pq_db.search(q, 10, nprobe=32, exclude_docs=ex)
    assert not np.isin(pq_db.chunk_docs[ie], ex[:, None]).any(axis=None) or (pq_db.chunk_docs[ie] != ex[:, None]).all()
    with pytest.raises(ValueError, match="nprobe must be between 1 and nlist=32"):
        pq_db.search(q, 10, nprobe=33)
    flat = RetroDatabase.build(_docs(100), chunk_size=4, embeddings=vectors[:100], index="flat")
    with pytest.raises(ValueError, match="nprobe applies to an IVF index"):
        flat.search(q, 3, nprobe=2)


def test_factory_strings_for_experts(vectors):
    idx, info = build_index(vectors, "IVF16,PQ8x4np")
    assert info == {"kind": "factory", "nlist": 16, "nprobe": 8, "factory": "IVF16,PQ8x4np"} and idx.ntotal == 4000
    hnsw, info = build_index(vectors[:500], "HNSW16")
    assert info == {"kind": "factory", "nlist": None, "nprobe": None, "factory": "HNSW16"}
    with pytest.raises(ValueError, match=r"or a FAISS factory string .*could not parse"):
        build_index(vectors, "IVF16,Bogus7")
    with pytest.raises(ValueError, match="pq_m must be a positive divisor of the vector width 32"):
        build_index(vectors, "ivfpq", pq_m=7)
    with pytest.raises(ValueError, match="pq_m and opq apply to index='ivfpq' only"):
        build_index(vectors, "ivf", pq_m=8)


def test_the_index_is_trained_on_a_sample_and_seeded(vectors):
    idx, _ = train_index(vectors[:1000], "ivfpq", 10**6, nlist=16, pq_m=4, opq=False)
    assert idx.is_trained and idx.ntotal == 0  # trained on 1,000 vectors for a million-chunk database
    a, _ = build_index(vectors, "ivfpq", nlist=16, pq_m=4, seed=3, opq=False)
    b, _ = build_index(vectors, "ivfpq", nlist=16, pq_m=4, seed=3, opq=False)
    q = vectors[:20]
    np.testing.assert_array_equal(a.search(q, 5)[1], b.search(q, 5)[1])


# ------------------------------------------------------------------ storage

class _WordPieceSized:
    """A stand-in tokenizer with MiniLM's vocabulary size (no file needed)."""
    vocab_size = 30_522


def test_tokens_are_saved_in_the_narrowest_dtype_and_memory_mapped(tmp_path, vectors):
    docs = _docs(200)
    db = RetroDatabase.build(docs, chunk_size=4, embeddings=vectors[:200], index="flat",
                             tokenizer=_WordPieceSized())
    assert storage.token_dtype(db.tokens, _WordPieceSized()) == "uint16"
    assert storage.token_dtype(np.array([70_000])) == "uint32"
    assert storage.token_dtype(np.array([3, 255])) == "uint8"
    root = db.save(tmp_path / "db")
    man = json.loads((root / "manifest.json").read_text())
    assert man["tokens_dtype"] == "uint16"
    assert (root / man["files"]["tokens"]["name"]).stat().st_size < 2 * db.tokens.size + 200
    loaded = RetroDatabase.load(root)
    assert isinstance(loaded.tokens, np.memmap) and loaded.tokens.dtype == np.uint16
    np.testing.assert_array_equal(loaded.neighbours([0, 5, 199])[0], db.neighbours([0, 5, 199])[0])


def test_the_manifest_checksum_covers_the_new_settings(pq_db, tmp_path):
    root = pq_db.save(tmp_path / "db")
    man = json.loads((root / "manifest.json").read_text())
    for edit in (lambda m: m["index"].update(factory="OPQ8,IVF32,PQ4np"), lambda m: m.update(tokens_dtype="uint32")):
        bad = json.loads(json.dumps(man))
        edit(bad)
        (root / "manifest.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match="settings_sha256"):
            RetroDatabase.load(root)
    bad = dict(man, tokens_dtype="float32")
    bad["settings_sha256"] = storage._settings_sha256(bad)
    (root / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="tokens_dtype.*must be one of"):
        RetroDatabase.load(root)


def _save_version_2(db, root):
    """Write ``db`` exactly as attention-zoo wrote version-2 databases (before issue 24):
    int32 tokens inside the store .npz, no tokens file, no tokens_dtype."""
    root.mkdir(parents=True)
    tag = time.strftime("%Y%m%d%H%M%S") + "-0123abcd"
    names = {"store": f"store-{tag}.npz", "index": f"index-{tag}.faiss"}
    np.savez(root / names["store"], tokens=np.asarray(db.tokens, np.int32), doc_offsets=db.doc_offsets,
             chunk_starts=db.chunk_starts)
    faiss.write_index(db.index, str(root / names["index"]))
    files = {k: {"name": n, "bytes": (root / n).stat().st_size, "sha256": storage._sha256(root / n)}
             for k, n in names.items()}
    man = {"format": storage.FORMAT, "version": 2, "chunk_size": db.chunk_size, "n_chunks": db.n_chunks,
           "n_docs": db.n_docs, "n_tokens": int(db.tokens.size), "dim": db.dim, "index": db.index_info,
           "embedder": db.embedder_cfg, "tokenizer": None, "files": files, "created": "2026-11-01T00:00:00Z"}
    man["settings_sha256"] = storage._settings_sha256(man)
    (root / "manifest.json").write_text(json.dumps(man))


def test_a_version_2_database_still_loads(tmp_path, vectors):
    db = RetroDatabase.build(_docs(2000), chunk_size=4, embeddings=vectors[:2000], index="ivf", nlist=16, nprobe=4)
    _save_version_2(db, tmp_path / "old")
    old = RetroDatabase.load(tmp_path / "old")
    assert old.index_info == {"kind": "ivf", "nlist": 16, "nprobe": 4}
    q = vectors[:30] + 0.01
    for a, b in zip(old.search(q, 5), db.search(q, 5)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(old.neighbours([3, 7])[0], db.neighbours([3, 7])[0])
    again = old.save(tmp_path / "old")  # re-saving upgrades it to the current version
    assert json.loads((again / "manifest.json").read_text())["version"] == storage.VERSION


# ------------------------------------------------------------------ larger than RAM: on-disk lists, shards


def test_mmap_load_keeps_the_inverted_lists_on_disk(pq_db, tmp_path, vectors):
    root = pq_db.save(tmp_path / "db")
    ram, disk = RetroDatabase.load(root), RetroDatabase.load(root, mmap=True)
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(disk.index).invlists)
    assert isinstance(lists, faiss.OnDiskInvertedLists)
    assert isinstance(faiss.downcast_InvertedLists(faiss.extract_index_ivf(ram.index).invlists),
                      faiss.ArrayInvertedLists)
    q = vectors[:100] + 0.02
    for a, b in zip(disk.search(q, 10, nprobe=16), ram.search(q, 10, nprobe=16)):
        np.testing.assert_array_equal(a, b)


def _split(x, parts):
    return np.array_split(np.arange(len(x)), parts)


def test_flat_shards_merge_to_exactly_the_single_index(vectors):
    single = faiss.IndexFlatL2(D)
    single.add(vectors)
    shards = []
    for rows in _split(vectors, 3):
        s = faiss.IndexFlatL2(D)
        s.add(vectors[rows])
        shards.append(s)
    q = _clustered(300, seed=9)
    sharded = ShardedIndex(shards)
    assert sharded.ntotal == len(vectors)
    for a, b in zip(sharded.search(q, 10), single.search(q, 10)):
        np.testing.assert_array_equal(a, b)
    db = RetroDatabase.build(_docs(len(vectors)), chunk_size=4, embeddings=vectors, index="flat")
    db.index = sharded  # the database searches shards like any index (exclusion included)
    ex = db.chunk_docs[:300]
    got = db.search(q, 10, exclude_docs=ex)
    db.index = single
    for a, b in zip(got, db.search(q, 10, exclude_docs=ex)):
        np.testing.assert_array_equal(a, b)


def test_ivfpq_shards_from_one_trained_index_merge_to_the_single_index(vectors):
    trained, info = train_index(vectors[::2], "ivfpq", len(vectors), nlist=32, nprobe=6, pq_m=8, opq=False)
    single = faiss.clone_index(trained)
    single.add(vectors)
    shards = []
    for rows in _split(vectors, 4):
        s = faiss.clone_index(trained)
        s.add(vectors[rows])
        shards.append(s)
    sharded = ShardedIndex(shards)
    sharded.set_nprobe(6)
    faiss.extract_index_ivf(single).nprobe = 6
    q = _clustered(300, seed=9)
    d_sh, i_sh = sharded.search(q, 10)
    d_one, i_one = single.search(q, 10)
    np.testing.assert_allclose(d_sh, d_one, rtol=1e-6)
    # equal up to the order of equal distances (PQ codes collide: ties are common)
    assert all(set(a) == set(b) for a, b, da in zip(i_sh, i_one, d_one) if len(set(da.tolist())) == 10)
    assert (i_sh == i_one).mean() > 0.95


def test_sharded_index_rejects_bad_shards():
    with pytest.raises(ValueError, match="at least one shard"):
        ShardedIndex([])
    with pytest.raises(ValueError, match="same vector width"):
        ShardedIndex([faiss.IndexFlatL2(4), faiss.IndexFlatL2(8)])


# ------------------------------------------------------------------ exact re-scoring from stored vectors


def test_rescore_orders_each_querys_candidates_by_exact_distance(tmp_path):
    base = _clustered(500, seed=7)
    stored = np.lib.format.open_memmap(tmp_path / "v.npy", mode="w+", dtype=np.float16, shape=base.shape)
    stored[:] = base
    q = _clustered(150, seed=8)  # not a multiple of the block: the last block is short
    cand = np.random.default_rng(9).integers(0, 500, (150, 12))
    cand[3, 2:] = -1  # a query with only two candidates
    d, ids = rescore(q, cand, stored, 5, block=64)
    for r in range(150):
        valid = cand[r][cand[r] >= 0]
        true = np.linalg.norm(stored[valid].astype(np.float64) - q[r], axis=1) ** 2
        want = valid[np.argsort(true, kind="stable")][:5]
        got = ids[r][ids[r] >= 0]
        np.testing.assert_array_equal(np.sort(got), np.sort(want))
        np.testing.assert_allclose(d[r][: len(got)], np.sort(true)[: len(got)], rtol=1e-4, atol=1e-4)
    assert list(ids[3, 2:]) == [-1, -1, -1] and np.isinf(d[3, 2:]).all()
    assert (np.diff(d[:, :2], axis=1) >= 0).all()


def test_rerank_rescores_compressed_candidates_with_the_stored_vectors(tmp_path, vectors):
    db = RetroDatabase.build(_docs(len(vectors)), chunk_size=4, embeddings=vectors, index="ivfpq", nlist=16,
                             nprobe=16, pq_m=4, opq=False, keep_vectors=True)
    assert db.vectors.dtype == np.float16 and db.vectors.shape == vectors.shape
    flat = faiss.IndexFlatL2(D)
    flat.add(vectors)
    q = _clustered(200, seed=5)
    _, exact = flat.search(q, 10)
    _, plain = db.search(q, 10)
    _, better = db.search(q, 10, rerank=200)
    assert _recall(better, exact) > _recall(plain, exact) + 0.1 and _recall(better, exact) > 0.95
    root = db.save(tmp_path / "db")
    loaded = RetroDatabase.load(root, mmap=True)
    assert isinstance(loaded.vectors, np.memmap)
    for a, b in zip(loaded.search(q, 10, rerank=200), db.search(q, 10, rerank=200)):
        np.testing.assert_array_equal(a, b)
    ex = db.chunk_docs[np.arange(200)]
    _, ie = loaded.search(q[:5] * 0 + vectors[:5], 10, rerank=200, exclude_docs=ex[:5])
    assert not (db.chunk_docs[ie] == ex[:5, None]).any()
    with pytest.raises(ValueError, match="rerank must be a positive integer"):
        db.search(q, 10, rerank=0)
    plain_db = RetroDatabase.build(_docs(100), chunk_size=4, embeddings=vectors[:100], index="flat")
    with pytest.raises(ValueError, match="rerank needs the chunk vectors: build the database with keep_vectors=True"):
        plain_db.search(q, 3, rerank=10)

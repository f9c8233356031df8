"""A staged, resumable build of a RETRO database, run locally or on Ray.

Stages, each leaving files in a work directory (default ``<out>.build``, next to
the database, removed once the database is saved)::

    plan.json            what is being built (settings, sizes, a checksum of the tokens)
    emb-<s>.npy          shard s's chunk embeddings (float32)      -- embed, per shard
    trained.faiss        the empty index trained on a sample        -- train, once
    index-<s>.faiss      the trained index holding shard s          -- add, per shard

then the shard indexes are merged (IVF lists concatenated in shard order, ids offset)
and the database is saved atomically (:mod:`~.storage`). Every file is written under
a temporary name and renamed when complete, so a build killed at any point and run
again with the same arguments redoes only the shards whose files are missing (and
says so on stderr). A work directory left by a build with other settings is refused.

The local engine runs the shards one after the other in this process; the Ray engine
(:mod:`~.ray_engine`, ``pip install "attention-zoo[retro-ray]"``) runs the embed and add
stages as Ray tasks (embedding on a pool of actors, each loading the embedder once).
Both use the same training sample (:func:`~.index.sample_rows`, seeded) and the same
merge, and give the same index as :meth:`RetroDatabase.build` on the same documents.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from attention_zoo_plugins.retro import index as _index
from attention_zoo_plugins.retro._progress import note
from attention_zoo_plugins.retro.chunks import ChunkStore, as_documents, chunk_starts
from attention_zoo_plugins.retro.embedders import HashingEmbedder, embedder_config

__all__ = ["ENGINES", "build_database", "shard_bounds"]

ENGINES = ("local", "ray")
DEFAULT_SHARD_CHUNKS = 65_536


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous ``(lo, hi)`` chunk ranges covering ``0..n``, sizes differing by at most one."""
    edges = np.linspace(0, n, shards + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _atomic_save(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def embed_shard(embedder: Any, chunks: np.ndarray, path: str) -> int:
    """Embed ``chunks`` (int ``(n, m)``, ``-1`` padding) and write them to ``path`` (.npy)."""
    vec = np.ascontiguousarray(embedder(np.asarray(chunks, dtype=np.int64)), dtype=np.float32)
    if vec.ndim != 2 or vec.shape[0] != len(chunks) or not np.isfinite(vec).all():
        raise ValueError(f"the embedder must return finite (n={len(chunks)}, dim) vectors, got shape {vec.shape}")
    _atomic_save(Path(path), lambda p: _save_npy(p, vec))
    return len(chunks)


def _save_npy(p: Path, arr: np.ndarray) -> None:
    with open(p, "wb") as f:
        np.save(f, arr)


def add_shard(trained_path: str, emb_path: str, out_path: str) -> int:
    """Read the trained empty index, add one shard's embeddings, write it to ``out_path``."""
    import faiss

    index = faiss.read_index(trained_path)
    _index.add_vectors(index, np.load(emb_path, mmap_mode="r"))
    _atomic_save(Path(out_path), lambda p: faiss.write_index(index, str(p)))
    return int(index.ntotal)


class _Local:
    """The local engine: every shard in this process, one after the other."""

    name = "local"

    def embed(self, embedder: Any, jobs: list[tuple[np.ndarray, str]], on_done: Callable[[int], None]) -> None:
        for chunks, path in jobs:
            on_done(embed_shard(embedder, chunks, path))

    def add(self, jobs: list[tuple[str, str, str]], on_done: Callable[[int], None]) -> None:
        for job in jobs:
            on_done(add_shard(*job))

    def close(self) -> None:
        pass


def _engine(name: str, address: str | None, workers: int | None) -> Any:
    if name == "local":
        if address is not None:
            raise ValueError("--address applies to --engine ray only")
        return _Local()
    if name == "ray":
        from attention_zoo_plugins.retro.ray_engine import RayEngine

        return RayEngine(address=address, workers=workers)
    raise ValueError(f"engine must be one of {ENGINES}, got {name!r}")


def _plan(store: ChunkStore, settings: dict[str, Any], bounds: list[tuple[int, int]]) -> dict[str, Any]:
    h = hashlib.sha256()
    for arr in (store.tokens, store.doc_offsets, store.chunk_starts):
        h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
    return {"settings": settings, "n_chunks": store.n_chunks, "shards": [list(b) for b in bounds],
            "data_sha256": h.hexdigest()}


def build_database(
    documents: Iterable[Any],
    out: str | os.PathLike,
    *,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    shards: int | None = None,
    work_dir: str | os.PathLike | None = None,
    keep_work: bool = False,
    keep_vectors: bool = False,
    chunk_size: int = 64,
    embedder: Any = None,
    tokenizer: Any = None,
    index: str = "auto",
    nlist: int | None = None,
    nprobe: int | None = None,
    pq_m: int | None = None,
    opq: bool | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> Any:
    """Chunk ``documents`` (token sequences), embed, train, add and merge in shards, and
    save the database to ``out``; returns the :class:`~.database.RetroDatabase`.

    Args:
        engine: ``"local"`` or ``"ray"`` (``address``: a running cluster, default a
            local Ray; ``workers``: embedding actors, default the CPUs Ray sees).
        shards: how many pieces (default one per 65,536 chunks).
        work_dir: where the stage files go (default ``<out>.build``); kept after a
            failure so that the same call resumes, removed after success unless
            ``keep_work``.
        keep_vectors: save the chunk vectors (float16) for ``search(..., rerank=R)``.
        progress: notes on stderr (default: for 50,000 chunks or more).
        Others: as :meth:`~.database.RetroDatabase.build`.
    """
    from attention_zoo_plugins.retro.database import RetroDatabase

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    embedder = embedder if embedder is not None else HashingEmbedder()
    tokens, offsets = as_documents(documents)
    words = getattr(tokenizer, "word_starts", None)
    store = ChunkStore(tokens, offsets, int(chunk_size), chunk_starts(offsets, int(chunk_size),
                                                                      words(tokens) if words else None))
    n = store.n_chunks
    progress = n >= 50_000 if progress is None else bool(progress)
    count = shards if shards is not None else max(1, -(-n // DEFAULT_SHARD_CHUNKS))
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 1 <= count <= n:
        raise ValueError(f"shards must be an integer between 1 and the number of chunks ({n}), got {shards!r}")
    bounds = shard_bounds(n, int(count))
    settings = {"chunk_size": int(chunk_size), "embedder": embedder_config(embedder),
                "tokenizer": tokenizer.config() if hasattr(tokenizer, "config") else None,
                "index": index, "nlist": nlist, "pq_m": pq_m, "opq": opq, "seed": seed}
    plan = _plan(store, settings, bounds)
    work = Path(work_dir) if work_dir is not None else Path(f"{os.fspath(out).rstrip('/')}.build")
    work.mkdir(parents=True, exist_ok=True)
    plan_path = work / "plan.json"
    if plan_path.exists():
        old = json.loads(plan_path.read_text())
        if old != json.loads(json.dumps(plan)):
            raise ValueError(f"{work} holds a build with other documents or settings; delete it (or pass another "
                             f"work directory) to start this one")
    else:
        _atomic_save(plan_path, lambda p: p.write_text(json.dumps(plan)))

    emb_paths = [work / f"emb-{s:05d}.npy" for s in range(count)]
    idx_paths = [work / f"index-{s:05d}.faiss" for s in range(count)]
    trained_path = work / "trained.faiss"
    runner = _engine(engine, address, workers)
    start = time.perf_counter()
    try:
        todo = [s for s in range(count) if not emb_paths[s].exists()]
        note(f"retro: embedding {n:,} chunks in {count} shard(s) with engine {runner.name}: {len(todo)} to do"
             + (f" (resuming: {count - len(todo)} already embedded)" if len(todo) < count else ""), enabled=progress)
        done = [0]

        def embedded(k: int) -> None:
            done[0] += 1
            note(f"retro: embedded shard {done[0]}/{len(todo)} ({k:,} chunks, "
                 f"{time.perf_counter() - start:.0f}s)", enabled=progress)

        runner.embed(embedder, [(store.chunk_tokens(np.arange(*bounds[s])).astype(np.int32), str(emb_paths[s]))
                                for s in todo], embedded)
        embs = [np.load(p, mmap_mode="r") for p in emb_paths]
        d = embs[0].shape[1]
        kind = ("flat" if n < _index.AUTO_IVF_MIN_CHUNKS else "ivf") if index == "auto" else index
        if trained_path.exists():
            import faiss

            trained = faiss.read_index(str(trained_path))
            info = json.loads((work / "trained.json").read_text())
            note("retro: resuming: the index is already trained", enabled=progress)
        else:
            rows = _index.training_rows(n, kind, nlist, seed)
            sample = np.concatenate([embs[s][rows[(rows >= lo) & (rows < hi)] - lo]
                                     for s, (lo, hi) in enumerate(bounds)]).reshape(-1, d)
            trained, info = _index.train_index(sample, kind, n, nlist=nlist, nprobe=nprobe, pq_m=pq_m, opq=opq,
                                               seed=seed, progress=progress)
            import faiss

            _atomic_save(work / "trained.json", lambda p: p.write_text(json.dumps(info)))
            _atomic_save(trained_path, lambda p: faiss.write_index(trained, str(p)))
        todo = [s for s in range(count) if not idx_paths[s].exists()]
        note(f"retro: adding {len(todo)} shard(s) to the index"
             + (f" (resuming: {count - len(todo)} already added)" if len(todo) < count else ""), enabled=progress)
        added = [0]

        def one_added(k: int) -> None:
            added[0] += 1
            note(f"retro: added shard {added[0]}/{len(todo)} ({k:,} vectors)", enabled=progress)

        runner.add([(str(trained_path), str(emb_paths[s]), str(idx_paths[s])) for s in todo], one_added)
    finally:
        runner.close()
    merged = _merge(trained, [str(p) for p in idx_paths])
    if nprobe is not None and info.get("nlist"):
        _index.set_nprobe(merged, info, nprobe)
    elif info.get("nlist"):
        _index.set_nprobe(merged, info, info["nprobe"])
    vectors = np.concatenate([np.asarray(e, dtype=np.float16) for e in embs]) if keep_vectors else None
    db = RetroDatabase(store=store, index=merged, index_info=info, embedder=embedder, tokenizer=tokenizer,
                       vectors=vectors)
    db.save(out)
    note(f"retro: built {db!r} in {time.perf_counter() - start:.1f}s", enabled=progress)
    if not keep_work:
        with contextlib.suppress(OSError):
            shutil.rmtree(work)
    return db


def _merge(trained: Any, paths: list[str]) -> Any:
    """The trained index holding every shard's vectors, in shard order (ids offset by the shards before)."""
    import faiss

    main = faiss.clone_index(trained)
    ivf = _index._ivf(main)
    for p in paths:
        shard = faiss.read_index(p)
        if ivf is not None:
            ivf.merge_from(_index._ivf(shard), int(ivf.ntotal))
        else:
            main.merge_from(shard)  # flat: ids are positions, appended in shard order
    if ivf is not None and main is not ivf:
        main.ntotal = ivf.ntotal  # a pre-transform (OPQ) wrapper counts what its IVF holds
    return main

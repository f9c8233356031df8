"""The RETRO database's nearest-neighbour index: FAISS under L2 distance.

Kinds (``index=`` of :meth:`~.database.RetroDatabase.build` and ``zoo retro build``):

- ``"flat"``: exact ``IndexFlatL2``, float32 vectors (``4 * dim`` bytes per chunk).
- ``"ivf"``: ``IVF{nlist},Flat``, a k-means coarse quantizer over float32 vectors.
- ``"ivfpq"``: ``OPQ{m},IVF{nlist},PQ{m}np``: an OPQ rotation (so that the ``m``
  sub-vectors carry similar energy), the coarse quantizer, and product-quantized
  residuals: ``m`` bytes of code and an 8-byte id per chunk (``m = 32``: 40 bytes,
  against 1,552 for a 384-d flat index). On 380,000 real MiniLM chunks OPQ raised
  recall@10 from 0.60 to 0.68 (codes alone) and from 0.916 to 0.948 (re-scoring 100
  candidates, nprobe 32) at the same queries per second, for a one-off 60 s of training
  (against 3 s without; benchmarks/RESULTS-retrieval.md). ``opq=False`` leaves it out.
  Codes alone find about 0.6 of the true top 10 of MiniLM vectors: keep the vectors
  (``keep_vectors=True``) and re-score (``search(..., rerank=200)``) for 0.9 and more.
  For throughput, the factory string ``"IVF{nlist},PQ64x4fs"`` (FAISS fast-scan, the
  same 40 bytes) scans 5-10x faster with somewhat worse candidates.
- any other string is a FAISS ``index_factory`` string for experts (``"IVF4096,PQ48"``,
  ``"OPQ32_128,IVF1024_HNSW32,PQ32"``); it must build an L2 index.
- ``"auto"``: flat below :data:`AUTO_IVF_MIN_CHUNKS`, IVF from there.

Trained indexes (every kind but flat) are trained on a sample (:func:`train_sample_size`
vectors, seeded), so training cost does not grow with the database, and the same
trained, empty index can take its vectors shard by shard (:func:`train_index`, then
:func:`add_vectors`): the staged build (:mod:`~.build`) does that.
The database itself (:class:`~attention_zoo_plugins.retro.database.RetroDatabase`) only
calls this module.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from attention_zoo_plugins.retro._progress import Progress, note

__all__ = ["AUTO_IVF_MIN_CHUNKS", "KINDS", "DEFAULT_PQ_M", "build_index", "train_index", "add_vectors",
           "default_nlist", "default_nprobe", "train_sample_size", "factory_string", "set_nprobe", "bytes_per_vector",
           "rescore"]

AUTO_IVF_MIN_CHUNKS = 100_000
"""``index="auto"`` uses the exact flat index below this many chunks, IVF from it on.

Below it an exact search is cheap enough for every use. Above it, a large batch of
queries (``retrieve`` on a training batch) can still be faster on the flat index,
whose distances are one matrix product, but a single query reads every vector
(1M x 384 floats: about 0.5 s on a CPU core) while IVF reads ``nprobe/nlist`` of
them (measurements in benchmarks/RESULTS-retrieval.md)."""

KINDS = ("auto", "flat", "ivf", "ivfpq")
DEFAULT_PQ_M = 32
"""PQ code bytes per chunk of ``index="ivfpq"``: 32 + an 8-byte id = 40 bytes."""


def _faiss():
    try:
        import faiss
    except ImportError as exc:
        raise ImportError('the RETRO database needs FAISS, which comes with the extra [retro]: '
                          'pip install "attention-zoo[retro]"') from exc
    return faiss


def default_nlist(n: int) -> int:
    """IVF lists for ``n`` vectors: about ``sqrt(n)``, at most ``n // 39`` so that
    k-means has its 39 training points per centroid."""
    return int(max(1, min(round(math.sqrt(n)), n // 39)))


def default_nprobe(nlist: int) -> int:
    """Lists visited per query: ``nlist / 16``, at least 8. On the synthetic 384-d
    embeddings of ``benchmarks/retrieval.py`` this gives recall@10 of 0.89 at 100k
    chunks (nlist 316) and 0.99 at 1M (nlist 1000); nprobe 16 at 1M gives 0.84 at
    four times the speed (benchmarks/RESULTS-retrieval.md)."""
    return int(max(1, min(nlist, max(8, nlist // 16))))


def train_sample_size(n: int, nlist: int | None, pq: bool) -> int:
    """Vectors the index is trained on: 50 per IVF list, at least 10,000 with PQ (its
    256-centroid k-means wants 39 points per centroid), at most ``n``."""
    want = 50 * (nlist or 1)
    if pq:
        want = max(want, 10_000)
    return int(min(n, want))


def factory_string(kind: str, d: int, nlist: int, *, pq_m: int | None = None, opq: bool | None = None) -> str:
    """The FAISS factory string of ``kind`` (``"ivf"`` or ``"ivfpq"``) for width ``d``
    (``opq=None``: OPQ on, the ``ivfpq`` default)."""
    if kind == "ivf":
        return f"IVF{nlist},Flat"
    if opq is not None and not isinstance(opq, bool):
        raise ValueError(f"opq must be True, False or None (the default, on), got {opq!r}")
    m = DEFAULT_PQ_M if pq_m is None else int(pq_m)
    if m < 1 or d % m:
        raise ValueError(f"pq_m must be a positive divisor of the vector width {d} (each of the m sub-vectors "
                         f"gets d/m dims), got {pq_m}; e.g. pq_m=32 for width 384 or 256")
    # np: no polysemous training (a slow annealing of the code order that only the
    # polysemous search, which the database does not use, needs)
    return f"{'' if opq is False else 'OPQ%d,' % m}IVF{nlist},PQ{m}np"


def _ivf(index: Any) -> Any | None:
    faiss = _faiss()
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def bytes_per_vector(index: Any) -> float | None:
    """Bytes an IVF index keeps per vector for code and id (``None`` for other indexes)."""
    ivf = _ivf(index)
    return None if ivf is None else float(ivf.code_size + 8)


def set_nprobe(index: Any, info: dict[str, Any], nprobe: int) -> None:
    """Set the IVF lists searched per query on ``index`` and in ``info``; ``ValueError`` otherwise."""
    if info.get("nlist") is None:
        raise ValueError(f"nprobe applies to an IVF index; this database's index is {info['kind']!r} "
                         f"(exact or without inverted lists)")
    if isinstance(nprobe, bool) or not isinstance(nprobe, (int, np.integer)) or not 1 <= nprobe <= info["nlist"]:
        raise ValueError(f"nprobe must be between 1 and nlist={info['nlist']}, got {nprobe!r} (an integer)")
    if hasattr(index, "set_nprobe"):  # a ShardedIndex
        index.set_nprobe(int(nprobe))
    else:
        _ivf(index).nprobe = int(nprobe)
    info["nprobe"] = int(nprobe)


def train_index(
    sample: np.ndarray,
    kind: str,
    n_total: int,
    *,
    nlist: int | None = None,
    nprobe: int | None = None,
    pq_m: int | None = None,
    opq: bool | None = None,
    seed: int = 0,
    progress: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """An empty index of ``kind`` for ``n_total`` vectors, trained on ``sample`` (all of
    them: draw it with :func:`train_sample_size`), and its ``info`` for the manifest.

    Returns:
        ``(index, info)``; ``info`` has ``kind``, ``nlist``, ``nprobe`` and, for trained
        kinds other than ``ivf``, ``factory`` (the FAISS factory string).
    """
    faiss = _faiss()
    x = np.ascontiguousarray(sample, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"embeddings must be a non-empty (n, d) array, got shape {x.shape}")
    d = x.shape[1]
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"index must be one of {KINDS} or a FAISS factory string, got {kind!r}")
    if kind == "auto":
        kind = "flat" if n_total < AUTO_IVF_MIN_CHUNKS else "ivf"
    if kind != "ivfpq" and (pq_m is not None or opq is not None):
        raise ValueError(f"pq_m and opq apply to index='ivfpq' only, not {kind!r}")
    if kind == "flat":
        if nlist is not None or nprobe is not None:
            raise ValueError("nlist and nprobe apply to IVF indexes only (the flat index is exact)")
        return faiss.IndexFlatL2(d), {"kind": "flat", "nlist": None, "nprobe": None}
    if kind in ("ivf", "ivfpq"):
        nlist = default_nlist(n_total) if nlist is None else nlist
        if isinstance(nlist, bool) or not isinstance(nlist, (int, np.integer)) or not 1 <= nlist <= n_total:
            raise ValueError(f"nlist must be between 1 and the number of chunks ({n_total}), got {nlist!r} (an integer)")
        factory = factory_string(kind, d, int(nlist), pq_m=pq_m, opq=opq)
    else:
        if nlist is not None:
            raise ValueError(f"nlist is part of the factory string {kind!r}; do not pass it as well")
        factory = kind
    try:
        index = faiss.index_factory(d, factory, faiss.METRIC_L2)
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or [""])[-1].rsplit(": ", 1)[-1][:200]
        raise ValueError(f"index must be one of {KINDS} or a FAISS factory string such as 'OPQ32,IVF1024,PQ32'; "
                         f"FAISS cannot build {kind!r} for width {d}: {first}") from None
    ivf = _ivf(index)
    if ivf is not None:
        ivf.cp.seed = int(seed)
        nlist = int(ivf.nlist)
    else:
        nlist = None
    info: dict[str, Any] = {"kind": kind if kind in ("ivf", "ivfpq") else "factory", "nlist": nlist, "nprobe": None}
    if info["kind"] != "ivf":
        info["factory"] = factory
    if not index.is_trained:
        note(f"retro: training {factory} on {x.shape[0]:,} vectors", enabled=progress)
        index.train(x)
    if nlist is not None:
        set_nprobe(index, info, default_nprobe(nlist) if nprobe is None else nprobe)
    elif nprobe is not None:
        raise ValueError(f"nprobe applies to IVF indexes; {factory!r} has no inverted lists")
    return index, info


def add_vectors(index: Any, x: np.ndarray, *, progress: bool = False, batch_size: int = 65536,
                label: str = "retro: indexing") -> None:
    """Add ``x`` (float32 ``(n, d)``) to ``index`` in batches, ids continuing from ``index.ntotal``."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    with Progress(label, x.shape[0], enabled=progress) as bar:
        for start in range(0, x.shape[0], batch_size):
            index.add(x[start : start + batch_size])
            bar.update(min(batch_size, x.shape[0] - start))


def rescore(queries: np.ndarray, candidates: np.ndarray, vectors: Any, k: int,
            block: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` of each query's ``candidates`` nearest by exact squared L2 distance.

    Args:
        queries: float32 ``(n, d)``.
        candidates: int ``(n, c)`` row numbers into ``vectors``; ``-1`` for none.
        vectors: ``(N, d)``, any float dtype; a memory-mapped array is read only at the
            candidates' rows.
        k: neighbours to return (at most ``c``).
        block: queries re-scored at a time; bounds the float32 copy of their
            candidates' vectors (``block * c * d * 4`` bytes) and keeps it in cache.

    Returns:
        ``(distances, ids)``, each ``(n, k)``, nearest first; ``(inf, -1)`` where a
        query had fewer than ``k`` candidates.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    cand = np.asarray(candidates)
    n, c = cand.shape
    dist = np.empty((n, c), np.float32)
    for lo in range(0, n, block):
        ids, qq = cand[lo : lo + block], q[lo : lo + block]
        x = np.asarray(vectors[np.maximum(ids, 0).ravel()], dtype=np.float32)
        xx = np.einsum("ij,ij->i", x, x).reshape(ids.shape)
        dist[lo : lo + block] = xx - 2 * np.einsum("bcd,bd->bc", x.reshape(*ids.shape, -1), qq) \
            + np.einsum("ij,ij->i", qq, qq)[:, None]
    dist[cand < 0] = np.inf
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    d, i = np.take_along_axis(dist, order, 1), np.take_along_axis(cand, order, 1)
    return d, np.where(np.isinf(d), -1, i)


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """The rows (sorted) of the training sample: all of them when ``size == n``."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def training_rows(n: int, kind: str, nlist: int | None, seed: int) -> np.ndarray:
    """Which of ``n`` vectors (sorted row numbers) train an index of ``kind`` (resolved, not
    ``"auto"``): one row for flat (nothing to train), else :func:`train_sample_size` rows
    drawn with ``seed`` (IVF lists from ``nlist``, the default, or the factory string)."""
    if kind == "flat":
        return np.zeros(1, np.int64)
    if kind in ("ivf", "ivfpq"):
        guess = nlist if isinstance(nlist, (int, np.integer)) else default_nlist(n)
    else:  # a factory string: its IVF list count, if any
        found = re.search(r"IVF(\d+)", kind)
        guess = int(found.group(1)) if found else None
    return sample_rows(n, train_sample_size(n, guess, pq=kind != "ivf"), seed)


def build_index(
    embeddings: np.ndarray,
    kind: str = "auto",
    *,
    nlist: int | None = None,
    nprobe: int | None = None,
    pq_m: int | None = None,
    opq: bool | None = None,
    seed: int = 0,
    progress: bool = False,
    batch_size: int = 65536,
):
    """A FAISS L2 index holding ``embeddings`` (float32 ``(n, d)``) under ids ``0..n-1``.

    Args:
        embeddings: the vectors, in id order.
        kind: ``"flat"``, ``"ivf"``, ``"ivfpq"``, ``"auto"`` or a FAISS factory string
            (see the module doc).
        nlist: IVF lists (default :func:`default_nlist`).
        nprobe: IVF lists searched per query (default :func:`default_nprobe`).
        pq_m, opq: ``ivfpq`` only: code bytes per vector (default 32) and whether to
            rotate with OPQ first (default True).
        seed: seeds the training sample and k-means.
        progress: show progress on stderr.

    Returns:
        ``(index, info)``: see :func:`train_index`.
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"embeddings must be a non-empty (n, d) array, got shape {x.shape}")
    n = x.shape[0]
    resolved = ("flat" if n < AUTO_IVF_MIN_CHUNKS else "ivf") if kind == "auto" else kind
    sample = x[training_rows(n, resolved, nlist, seed)]
    index, info = train_index(sample, resolved, n, nlist=nlist, nprobe=nprobe, pq_m=pq_m, opq=opq, seed=seed,
                              progress=progress)
    add_vectors(index, x, progress=progress, batch_size=batch_size)
    return index, info

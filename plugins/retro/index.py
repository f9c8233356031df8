"""The RETRO database's nearest-neighbour index: FAISS under L2 distance.

An exact ``IndexFlatL2`` for small databases and ``IVF{nlist},Flat`` (a k-means
coarse quantizer, approximate) for large ones; :func:`build_index` chooses and
builds either from the chunk embeddings. The database itself
(:class:`~attention_zoo_plugins.retro.database.RetroDatabase`) only calls it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from attention_zoo_plugins.retro._progress import Progress, note

__all__ = ["AUTO_IVF_MIN_CHUNKS", "build_index", "default_nlist", "default_nprobe"]

AUTO_IVF_MIN_CHUNKS = 100_000
"""``index="auto"`` uses the exact flat index below this many chunks, IVF from it on.

Below it an exact search is cheap enough for every use. Above it, a large batch of
queries (``retrieve`` on a training batch) can still be faster on the flat index,
whose distances are one matrix product, but a single query reads every vector
(1M x 384 floats: about 0.5 s on a CPU core) while IVF reads ``nprobe/nlist`` of
them (measurements in benchmarks/RESULTS-retrieval.md)."""


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


def build_index(
    embeddings: np.ndarray,
    kind: str = "auto",
    *,
    nlist: int | None = None,
    nprobe: int | None = None,
    seed: int = 0,
    progress: bool = False,
    batch_size: int = 65536,
):
    """A FAISS L2 index holding ``embeddings`` (float32 ``(n, d)``) under ids ``0..n-1``.

    Args:
        embeddings: the vectors, in id order.
        kind: ``"flat"`` (exact ``IndexFlatL2``), ``"ivf"`` (``IVF{nlist},Flat``:
            k-means coarse quantizer, approximate) or ``"auto"`` (flat below
            :data:`AUTO_IVF_MIN_CHUNKS` vectors, IVF from there).
        nlist: IVF lists (default :func:`default_nlist`).
        nprobe: IVF lists searched per query (default :func:`default_nprobe`).
        seed: seeds the k-means training sample and initialisation.
        progress: show progress on stderr.

    Returns:
        ``(index, info)`` where ``info`` is ``{"kind", "nlist", "nprobe"}``.
    """
    faiss = _faiss()
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"embeddings must be a non-empty (n, d) array, got shape {x.shape}")
    n, d = x.shape
    if kind == "auto":
        kind = "flat" if n < AUTO_IVF_MIN_CHUNKS else "ivf"
    if kind == "flat":
        if nlist is not None or nprobe is not None:
            raise ValueError("nlist and nprobe apply to index='ivf' only (the flat index is exact)")
        index = faiss.IndexFlatL2(d)
        info: dict[str, Any] = {"kind": "flat", "nlist": None, "nprobe": None}
    elif kind == "ivf":
        nlist = default_nlist(n) if nlist is None else int(nlist)
        if not 1 <= nlist <= n:
            raise ValueError(f"nlist must be between 1 and the number of chunks ({n}), got {nlist}")
        nprobe = default_nprobe(nlist) if nprobe is None else int(nprobe)
        if not 1 <= nprobe <= nlist:
            raise ValueError(f"nprobe must be between 1 and nlist={nlist}, got {nprobe}")
        index = faiss.index_factory(d, f"IVF{nlist},Flat", faiss.METRIC_L2)
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.seed = int(seed)
        rng = np.random.default_rng(seed)
        n_train = min(n, 50 * nlist)
        sample = x if n_train == n else x[np.sort(rng.choice(n, size=n_train, replace=False))]
        note(f"retro: training IVF quantizer: {nlist} lists on {n_train:,} vectors", enabled=progress)
        index.train(sample)
        ivf.nprobe = nprobe
        info = {"kind": "ivf", "nlist": nlist, "nprobe": nprobe}
    else:
        raise ValueError(f"index must be 'auto', 'flat' or 'ivf', got {kind!r}")
    with Progress("retro: indexing", n, enabled=progress) as bar:
        for start in range(0, n, batch_size):
            index.add(x[start : start + batch_size])
            bar.update(min(batch_size, n - start))
    return index, info


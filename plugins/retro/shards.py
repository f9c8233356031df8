"""Search several FAISS indexes as one: a database split into shards.

Shard ``s`` holds the vectors with ids ``offsets[s] .. offsets[s+1]-1`` (its local ids
plus ``offsets[s]``). :meth:`ShardedIndex.search` asks every shard for its ``k`` best
and keeps the ``k`` best of all, ordered by distance (ties: lower shard first, then
the shard's own order).

What "equal to a single index" means:

- exact (flat) shards: the merged result *is* the single flat index's result over
  the same vectors: the global top ``k`` is among the union of every shard's top
  ``k``, and every distance is computed the same way (tested bit for bit on data
  without distance ties).
- IVF shards made from **one trained empty index** (:func:`faiss.clone_index` of it,
  then each shard's vectors added: what the staged build does) equal the single IVF
  index trained the same way and holding all vectors, at the same ``nprobe``: every
  shard probes the same lists (same coarse quantizer), holds the same codes for its
  vectors (same PQ/OPQ), so the union of candidates and their distances is the
  single index's (tested). Shards trained *separately* would not be equal: their
  quantizers, and so their approximations, differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["ShardedIndex"]


class ShardedIndex:
    """Several FAISS indexes (or anything with ``d``, ``ntotal`` and ``search``) as one.

    Args:
        shards: the indexes, in id order; all of width ``d``.
    """

    def __init__(self, shards: Sequence[Any]) -> None:
        self.shards = list(shards)
        if not self.shards:
            raise ValueError("ShardedIndex needs at least one shard")
        widths = {int(s.d) for s in self.shards}
        if len(widths) != 1:
            raise ValueError(f"every shard must have the same vector width, got widths {sorted(widths)}")
        self.d = widths.pop()
        sizes = np.array([int(s.ntotal) for s in self.shards], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])

    @property
    def ntotal(self) -> int:
        return int(self.offsets[-1])

    def set_nprobe(self, nprobe: int) -> None:
        """Set ``nprobe`` on every shard (IVF shards only)."""
        import faiss

        for s in self.shards:
            faiss.extract_index_ivf(s).nprobe = int(nprobe)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(distances, ids)`` float32/int64 ``(n, k)`` over all shards; ``inf``/``-1`` where fewer."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        dists, ids = [], []
        for off, shard in zip(self.offsets[:-1], self.shards):
            kk = int(min(k, shard.ntotal))
            if kk == 0:
                continue
            d, i = shard.search(q, kk)
            missing = i < 0
            ids.append(np.where(missing, -1, i + off))
            dists.append(np.where(missing, np.inf, d).astype(np.float32))
        n = q.shape[0]
        if not ids:
            return np.full((n, k), np.inf, np.float32), np.full((n, k), -1, np.int64)
        d_all, i_all = np.concatenate(dists, axis=1), np.concatenate(ids, axis=1)
        order = np.argsort(d_all, axis=1, kind="stable")[:, :k]
        d_top = np.take_along_axis(d_all, order, axis=1)
        i_top = np.take_along_axis(i_all, order, axis=1)
        if d_top.shape[1] < k:
            pad = k - d_top.shape[1]
            d_top = np.pad(d_top, ((0, 0), (0, pad)), constant_values=np.inf)
            i_top = np.pad(i_top, ((0, 0), (0, pad)), constant_values=-1)
        return d_top, i_top

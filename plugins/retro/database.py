"""The RETRO retrieval database: a chunk store plus a FAISS nearest-neighbour index.

Documents (token sequences) are cut into chunks of ``m`` tokens; each chunk is
embedded by a frozen :mod:`embedder <attention_zoo_plugins.retro.embedders>`
and added to a FAISS index under L2 distance (exact ``IndexFlatL2`` for small
databases, ``IVF{nlist},Flat`` for large ones). A neighbour is returned as the
chunk *plus its continuation*, the next ``m`` tokens of the same document
(``R = 2m``, as in RETRO), and neighbours from the query's own document can be
excluded.

On disk a database is a directory::

    manifest.json          format, version, sizes, index and embedder settings,
                           and the name, size and sha256 of each file below
    store-<tag>.npz        tokens (T,) and doc_offsets (D+1,): plain arrays, no pickle
    index-<tag>.faiss      the FAISS index (faiss.write_index)

:meth:`RetroDatabase.save` writes new files under fresh names, then replaces
``manifest.json`` atomically (``os.replace``) and only then deletes the old
files: a crash at any point leaves either the old or the new database whole.
:meth:`RetroDatabase.load` checks presence, size and checksum of every file and
the consistency of shapes and dimensions, and raises ``ValueError`` naming the
file when anything is missing, truncated or corrupt.

Paper: Borgeaud et al., "Improving language models by retrieving from trillions
of tokens", 2021, arXiv:2112.04426 (section 2.3: frozen BERT chunk embeddings,
L2 kNN, neighbours as ``[N, F]`` chunk and continuation, same-document exclusion).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attention_zoo_plugins.retro._progress import Progress, note
from attention_zoo_plugins.retro.embedders import HashingEmbedder, embedder_config, embedder_from_config
from attention_zoo_plugins.retro.tokenizer import PAD, ByteTokenizer, tokenizer_from_config

__all__ = ["RetroDatabase", "Retrieved", "build_index", "AUTO_IVF_MIN_CHUNKS", "FORMAT", "VERSION"]

FORMAT = "attention-zoo/retro-database"
VERSION = 1
MANIFEST = "manifest.json"
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
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a dependency
        raise ImportError("the RETRO database needs FAISS: pip install faiss-cpu") from exc
    return faiss


# --------------------------------------------------------------------------- index


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


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Retrieved:
    """Neighbours of every complete chunk of a batch of sequences.

    Attributes:
        tokens: int64 ``(B, L, K, R)``: each neighbour chunk and its continuation
            (``R = 2 * chunk_size``); positions past the end of its document hold
            ``pad_id``.
        mask: bool ``(B, L, K, R)``: True where ``tokens`` is a real token (pass it as
            the layer's ``context_mask`` once the neighbours are encoded).
        chunk_ids: int64 ``(B, L, K)``: database chunk ids, ``-1`` where fewer than K
            neighbours were found.
        distances: float32 ``(B, L, K)``: squared L2 distances, ``inf`` where missing.
    """

    tokens: np.ndarray
    mask: np.ndarray
    chunk_ids: np.ndarray
    distances: np.ndarray

    def to_torch(self, device: Any = None):
        """``(tokens, mask)`` as a ``LongTensor`` and a ``BoolTensor``."""
        import torch

        return (torch.as_tensor(self.tokens, dtype=torch.long, device=device),
                torch.as_tensor(self.mask, dtype=torch.bool, device=device))


# --------------------------------------------------------------------------- helpers


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _as_documents(documents: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate token sequences; return ``tokens (T,)`` and ``doc_offsets (D+1,)``."""
    arrays = []
    for i, doc in enumerate(documents):
        a = np.asarray(doc)
        if a.ndim != 1:
            raise ValueError(f"document {i} must be a 1-D sequence of token ids, got shape {a.shape}")
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(
                f"document {i} must hold integer token ids, got dtype {a.dtype}; "
                f"tokenize texts first (RetroDatabase.from_texts does it with a ByteTokenizer)"
            )
        if a.size and a.min() < 0:
            raise ValueError(f"document {i} has a negative token id {int(a.min())}; ids must be >= 0")
        arrays.append(a.astype(np.int64, copy=False))
    if not arrays:
        raise ValueError("documents is empty: give at least one non-empty token sequence")
    lengths = np.array([a.size for a in arrays], dtype=np.int64)
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.concatenate(arrays) if offsets[-1] else np.zeros(0, dtype=np.int64)
    if tokens.size == 0:
        raise ValueError("every document is empty: nothing to index")
    if tokens.max() < 2**31:
        tokens = tokens.astype(np.int32)
    return tokens, offsets


# --------------------------------------------------------------------------- database


class RetroDatabase:
    """Chunks of token sequences, their frozen embeddings in a FAISS index, and the
    retrieval RETRO needs: neighbours plus continuations, same-document exclusion.

    Build with :meth:`build` (token sequences) or :meth:`from_texts`; query with
    :meth:`search` (vectors), :meth:`retrieve` (a batch of sequences -> neighbours of
    every chunk, ready for the ``retro`` layer) or :meth:`query` (one text); persist
    with :meth:`save` and :meth:`load`.

    Example::

        from attention_zoo_plugins.retro import RetroDatabase
        from attention_zoo_plugins.retro.corpus import load_corpus
        texts = load_corpus()                                     # 26 short documents
        db = RetroDatabase.from_texts(texts, chunk_size=64)
        seqs = np.stack([db.tokenizer.encode(t)[:256] for t in texts[:4]])
        got = db.retrieve(seqs, k=2, exclude_docs=[0, 1, 2, 3])   # tokens (4, 4, 2, 128)
        db.save("my-db"); db2 = RetroDatabase.load("my-db")
    """

    def __init__(
        self,
        *,
        tokens: np.ndarray,
        doc_offsets: np.ndarray,
        chunk_size: int,
        index: Any,
        index_info: dict[str, Any],
        embedder: Any = None,
        embedder_cfg: dict[str, Any] | None = None,
        tokenizer: Any = None,
    ) -> None:
        self.tokens = tokens
        self.doc_offsets = doc_offsets
        self.chunk_size = int(chunk_size)
        self.index = index
        self.index_info = dict(index_info)
        self.embedder = embedder
        self.embedder_cfg = embedder_cfg if embedder_cfg is not None else (
            embedder_config(embedder) if embedder is not None else {"kind": "custom", "name": "unknown"})
        self.tokenizer = tokenizer
        m = self.chunk_size
        lengths = np.diff(doc_offsets)
        per_doc = (lengths + m - 1) // m
        self.chunk_docs = np.repeat(np.arange(len(lengths), dtype=np.int64), per_doc)
        first = np.cumsum(per_doc) - per_doc
        self.chunk_starts = doc_offsets[self.chunk_docs] + (np.arange(self.chunk_docs.size) - first[self.chunk_docs]) * m

    # ---------------------------------------------------------------- sizes

    @property
    def n_chunks(self) -> int:
        return int(self.chunk_docs.size)

    @property
    def n_docs(self) -> int:
        return int(self.doc_offsets.size - 1)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return self.n_chunks

    def __repr__(self) -> str:
        info = self.index_info
        idx = info["kind"] + (f"(nlist={info['nlist']}, nprobe={info['nprobe']})" if info["kind"] == "ivf" else "")
        return (f"RetroDatabase({self.n_chunks:,} chunks of {self.chunk_size} tokens from {self.n_docs:,} "
                f"documents, dim={self.dim}, index={idx}, embedder={self.embedder_cfg.get('kind')})")

    # ---------------------------------------------------------------- build

    @classmethod
    def build(
        cls,
        documents: Iterable[Any],
        *,
        chunk_size: int = 64,
        embedder: Any = None,
        index: str = "auto",
        nlist: int | None = None,
        nprobe: int | None = None,
        embeddings: np.ndarray | None = None,
        batch_size: int = 4096,
        progress: bool | None = None,
        seed: int = 0,
        tokenizer: Any = None,
    ) -> RetroDatabase:
        """Chunk, embed and index token sequences.

        Args:
            documents: token sequences (1-D integer arrays or lists, ids >= 0), one
                per document; a document's last chunk may be short.
            chunk_size: tokens per chunk (m); neighbours have ``2m`` tokens.
            embedder: frozen chunk embedder (see :class:`~.embedders.Embedder`);
                default :class:`~.embedders.HashingEmbedder`.
            index: ``"auto"``, ``"flat"`` or ``"ivf"`` (see :func:`build_index`).
            nlist, nprobe: IVF parameters; ``nprobe`` can be changed later with
                :meth:`set_nprobe`.
            embeddings: precomputed chunk embeddings ``(n_chunks, d)`` in chunk order
                (e.g. from a GPU pipeline); ``embedder`` then only embeds queries.
            batch_size: chunks per embedder call.
            progress: show progress on stderr; default: for 50,000 chunks or more.
            seed: IVF training seed.
            tokenizer: kept with the database to turn texts into tokens and back
                (:meth:`query`, ``zoo retro``); :meth:`from_texts` sets it.
        """
        if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        tokens, offsets = _as_documents(documents)
        embedder = embedder if embedder is not None else HashingEmbedder()
        db = cls(tokens=tokens, doc_offsets=offsets, chunk_size=int(chunk_size), index=None,
                 index_info={"kind": "none"}, embedder=embedder, tokenizer=tokenizer)
        n = db.n_chunks
        show = n >= 50_000 if progress is None else bool(progress)
        start = time.perf_counter()
        if embeddings is not None:
            emb = np.ascontiguousarray(embeddings, dtype=np.float32)
            if emb.ndim != 2 or emb.shape[0] != n:
                raise ValueError(
                    f"embeddings must have shape (n_chunks={n}, d) for these documents and "
                    f"chunk_size={chunk_size}, got {emb.shape}"
                )
        else:
            emb = None
            with Progress("retro: embedding", n, enabled=show) as bar:
                for lo in range(0, n, batch_size):
                    ids = np.arange(lo, min(n, lo + batch_size))
                    vec = db.embed(db.chunk_tokens(ids))
                    if emb is None:
                        emb = np.empty((n, vec.shape[1]), dtype=np.float32)
                    elif vec.shape[1] != emb.shape[1]:
                        raise ValueError(f"the embedder returned width {vec.shape[1]} after {emb.shape[1]}: "
                                         f"an embedder must always return the same dim")
                    emb[lo : lo + len(ids)] = vec
                    bar.update(len(ids))
        db.index, db.index_info = build_index(emb, index, nlist=nlist, nprobe=nprobe, seed=seed, progress=show)
        note(f"retro: built {db!r} in {time.perf_counter() - start:.1f}s", enabled=show)
        return db

    @classmethod
    def from_texts(cls, texts: Iterable[str], *, tokenizer: Any = None, **kwargs: Any) -> RetroDatabase:
        """:meth:`build` from texts, one per document (default :class:`ByteTokenizer`)."""
        tokenizer = tokenizer or ByteTokenizer()
        return cls.build((tokenizer.encode(t) for t in texts), tokenizer=tokenizer, **kwargs)

    def set_nprobe(self, nprobe: int) -> None:
        """IVF lists searched per query (more: better recall, slower). Saved with the database."""
        if self.index_info["kind"] != "ivf":
            raise ValueError("set_nprobe applies to an IVF index; this database uses an exact flat index")
        if not 1 <= int(nprobe) <= self.index_info["nlist"]:
            raise ValueError(f"nprobe must be between 1 and nlist={self.index_info['nlist']}, got {nprobe}")
        _faiss().extract_index_ivf(self.index).nprobe = int(nprobe)
        self.index_info["nprobe"] = int(nprobe)

    # ---------------------------------------------------------------- chunks

    def _check_ids(self, ids: Any, *, allow_missing: bool) -> np.ndarray:
        a = np.asarray(ids)
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"chunk ids must be integers, got dtype {a.dtype}")
        a = a.astype(np.int64, copy=False)
        lo = -1 if allow_missing else 0
        if a.size and (a.min() < lo or a.max() >= self.n_chunks):
            raise ValueError(f"chunk ids must be in [{lo}, {self.n_chunks}), got range [{a.min()}, {a.max()}]")
        return a

    def chunk_tokens(self, ids: Any) -> np.ndarray:
        """Tokens of chunks ``ids`` (any shape): int64 ``(*ids.shape, m)``, ``-1`` past a document's end."""
        ids = self._check_ids(ids, allow_missing=False)
        return self._window(ids, self.chunk_size, PAD)[0]

    def neighbours(self, ids: Any, *, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Chunk plus continuation (the next ``m`` tokens of the same document) for chunk
        ``ids`` (any shape; ``-1`` = none). Returns ``tokens (*ids.shape, 2m)`` with
        ``pad_id`` past the document's end and ``mask`` (True = real token)."""
        ids = self._check_ids(ids, allow_missing=True)
        return self._window(ids, 2 * self.chunk_size, pad_id)

    def _window(self, ids: np.ndarray, width: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
        flat = ids.reshape(-1)
        ok_id = flat >= 0
        safe = np.where(ok_id, flat, 0)
        starts = self.chunk_starts[safe]
        ends = self.doc_offsets[self.chunk_docs[safe] + 1]
        pos = starts[:, None] + np.arange(width, dtype=np.int64)
        ok = ok_id[:, None] & (pos < ends[:, None])
        out = np.where(ok, self.tokens[np.minimum(pos, self.tokens.size - 1)], pad).astype(np.int64)
        return out.reshape(*ids.shape, width), ok.reshape(*ids.shape, width)

    # ---------------------------------------------------------------- search

    def embed(self, chunks: Any) -> np.ndarray:
        """Embed token chunks ``(n, w)`` with the database's embedder -> float32 ``(n, dim)``."""
        if self.embedder is None:
            raise ValueError(
                "this database was loaded without its (custom) embedder: pass it, "
                "RetroDatabase.load(path, embedder=...), or search with vectors"
            )
        tok = np.asarray(chunks)
        if tok.ndim != 2:
            raise ValueError(f"chunks must be a 2-D array (n, w) of token ids, got shape {tok.shape}")
        vec = np.asarray(self.embedder(tok.astype(np.int64, copy=False)))
        if vec.ndim != 2 or vec.shape[0] != tok.shape[0]:
            raise ValueError(f"the embedder must return (n={tok.shape[0]}, dim) vectors, got shape {vec.shape}")
        if self.index is not None and vec.shape[1] != self.dim:
            raise ValueError(f"the embedder returned width {vec.shape[1]} but the index holds width {self.dim}: "
                             f"use the embedder the database was built with ({self.embedder_cfg})")
        if not np.isfinite(vec).all():
            raise ValueError("the embedder returned NaN or infinite values")
        return np.ascontiguousarray(vec, dtype=np.float32)

    def search(self, queries: Any, k: int, *, exclude_docs: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest chunks of each query vector.

        Args:
            queries: float ``(n, dim)`` vectors.
            k: neighbours per query.
            exclude_docs: optional ``(n,)`` document ids: chunks of ``exclude_docs[i]``
                are never returned for query ``i`` (``-1``: exclude nothing).

        Returns:
            ``(distances, ids)``: float32 ``(n, k)`` squared L2 distances, ascending,
            and int64 ``(n, k)`` chunk ids; ``inf`` and ``-1`` where fewer than ``k``
            chunks qualify (or, with IVF, were found in the probed lists).
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (n, dim={self.dim}), got {np.shape(queries)}")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        n, total = q.shape[0], self.index.ntotal
        dist = np.full((n, k), np.inf, dtype=np.float32)
        ids = np.full((n, k), -1, dtype=np.int64)
        if n == 0:
            return dist, ids
        if exclude_docs is None:
            d, i = self.index.search(q, int(min(k, total)))
            dist[:, : d.shape[1]], ids[:, : i.shape[1]] = d, i
            dist[ids < 0] = np.inf
            return dist, ids
        ex = np.asarray(exclude_docs, dtype=np.int64).reshape(-1)
        if ex.shape != (n,):
            raise ValueError(f"exclude_docs must have one document id per query ({n}), got shape {np.shape(exclude_docs)}")
        todo = np.arange(n)
        fetch = int(min(total, 2 * k + 16))
        while todo.size:
            d, i = self.index.search(q[todo], fetch)
            docs = np.where(i >= 0, self.chunk_docs[np.maximum(i, 0)], -2)
            keep = (i >= 0) & (docs != ex[todo, None])
            rank = np.cumsum(keep, axis=1)
            # done: k found, or nothing more to fetch (the whole index, or every vector in
            # the IVF lists probed: FAISS pads with -1 when they run out)
            done = (rank[:, -1] >= k) | (fetch >= total) | (i < 0).any(axis=1)
            sel = keep & (rank <= k) & done[:, None]
            r, c = np.nonzero(sel)
            ids[todo[r], rank[r, c] - 1] = i[r, c]
            dist[todo[r], rank[r, c] - 1] = d[r, c]
            todo = todo[~done]
            fetch = int(min(total, fetch * 4))
        return dist, ids

    def retrieve(self, sequences: Any, k: int = 2, *, exclude_docs: Any = None, pad_id: int = 0) -> Retrieved:
        """Neighbours of every complete chunk of each sequence, ready for the ``retro`` layer.

        Chunk ``u`` of a sequence (tokens ``u*m .. u*m+m-1``) is embedded and its ``k``
        nearest database chunks are returned with their continuations; the layer
        lets only positions from ``(u+1)*m - 1`` on see them (causal by construction).

        Args:
            sequences: int ``(B, N)`` token ids; ``L = N // chunk_size`` chunks each (a
                trailing partial chunk has no neighbours, as in the layer).
            k: neighbours per chunk (K).
            exclude_docs: optional ``(B,)`` document id of each sequence (-1: none):
                its own document's chunks are never its neighbours.
            pad_id: token id placed past the end of a document.

        Returns:
            :class:`Retrieved` with ``tokens``/``mask`` ``(B, L, K, 2m)``.
        """
        seq = np.asarray(sequences)
        if seq.ndim != 2 or (seq.size and not np.issubdtype(seq.dtype, np.integer)):
            raise ValueError(f"sequences must be an integer array (B, N), got {seq.dtype} {seq.shape}")
        b, n = seq.shape
        m = self.chunk_size
        l = n // m
        if exclude_docs is not None:
            ex = np.asarray(exclude_docs, dtype=np.int64).reshape(-1)
            if ex.shape != (b,):
                raise ValueError(f"exclude_docs must have one document id per sequence ({b}), got shape {np.shape(exclude_docs)}")
            ex = np.repeat(ex, l)
        else:
            ex = None
        chunks = seq[:, : l * m].reshape(b * l, m)
        if b * l:
            dist, ids = self.search(self.embed(chunks), k, exclude_docs=ex)
        else:
            dist, ids = np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        tokens, mask = self.neighbours(ids, pad_id=pad_id)
        return Retrieved(tokens=tokens.reshape(b, l, k, 2 * m), mask=mask.reshape(b, l, k, 2 * m),
                         chunk_ids=ids.reshape(b, l, k), distances=dist.reshape(b, l, k))

    def query(self, text: str | Sequence[int], k: int = 2, *, exclude_doc: int | None = None) -> list[dict[str, Any]]:
        """The ``k`` nearest chunks of one text (or token sequence), for people and the CLI.

        Returns a list of ``{"rank", "chunk_id", "doc", "distance", "tokens",
        "text"}`` (``text`` is the chunk and its continuation, when the database has
        a tokenizer).
        """
        if isinstance(text, str):
            if self.tokenizer is None:
                raise ValueError("this database has no tokenizer: query it with token ids")
            tokens = self.tokenizer.encode(text)
        else:
            tokens = np.asarray(text, dtype=np.int64)
        if tokens.size == 0:
            raise ValueError("the query is empty")
        ex = None if exclude_doc is None else [exclude_doc]
        dist, ids = self.search(self.embed(tokens.reshape(1, -1)), k, exclude_docs=ex)
        neigh, mask = self.neighbours(ids[0])
        hits = []
        for rank, (cid, d) in enumerate(zip(ids[0].tolist(), dist[0].tolist())):
            if cid < 0:
                continue
            toks = neigh[rank][mask[rank]]
            hits.append({"rank": rank + 1, "chunk_id": cid, "doc": int(self.chunk_docs[cid]), "distance": d,
                         "tokens": toks.tolist(),
                         "text": self.tokenizer.decode(toks) if self.tokenizer is not None else None})
        return hits

    # ---------------------------------------------------------------- persistence

    def save(self, path: str | os.PathLike) -> Path:
        """Write the database to directory ``path`` (created if needed), atomically.

        New files get fresh names; ``manifest.json`` (which names them, with their
        sizes and sha256) is replaced with ``os.replace`` only once they are complete
        and synced, and the previous database's files are deleted only after that.
        A crash or error mid-save leaves the previous database loadable.
        """
        faiss = _faiss()
        root = Path(path)
        if root.exists() and not root.is_dir():
            raise ValueError(f"{root} exists and is not a directory; a RETRO database is saved as a directory")
        root.mkdir(parents=True, exist_ok=True)
        tag = time.strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(4)
        names = {"store": f"store-{tag}.npz", "index": f"index-{tag}.faiss"}
        written: list[Path] = []
        try:
            files = {}
            for key, name in names.items():
                tmp = root / f".{name}.tmp"
                written.append(tmp)
                if key == "store":
                    with open(tmp, "wb") as f:
                        np.savez(f, tokens=self.tokens, doc_offsets=self.doc_offsets)
                else:
                    faiss.write_index(self.index, str(tmp))
                _fsync_file(tmp)
                final = root / name
                os.replace(tmp, final)
                written.append(final)
                files[key] = {"name": name, "bytes": final.stat().st_size, "sha256": _sha256(final)}
            manifest = {
                "format": FORMAT,
                "version": VERSION,
                "chunk_size": self.chunk_size,
                "n_chunks": self.n_chunks,
                "n_docs": self.n_docs,
                "n_tokens": int(self.tokens.size),
                "dim": self.dim,
                "index": self.index_info,
                "embedder": self.embedder_cfg,
                "tokenizer": self.tokenizer.config() if self.tokenizer is not None and hasattr(self.tokenizer, "config") else None,
                "files": files,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            tmp = root / f".{MANIFEST}.{tag}.tmp"
            written.append(tmp)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(manifest, f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            _replace_manifest(tmp, root / MANIFEST)
        except BaseException:
            for p in written:  # the new files are unreferenced: remove them, keep the old database
                try:
                    p.unlink()
                except OSError:
                    pass
            raise
        _fsync_dir(root)
        keep = set(names.values())
        for p in root.iterdir():  # the previous database's files and leftovers of crashed saves
            if p.name not in keep and _OWN_FILE.match(p.name):
                try:
                    p.unlink()
                except OSError:
                    pass
        return root

    @classmethod
    def load(cls, path: str | os.PathLike, *, embedder: Any = None, verify: bool = True) -> RetroDatabase:
        """Read a database written by :meth:`save`.

        Args:
            path: its directory.
            embedder: the embedder for queries; default: rebuilt from the manifest
                (built-in embedders); a custom one must be passed again.
            verify: check every file's sha256 (sizes are always checked).

        Raises:
            ValueError: naming the file, when the directory, the manifest or a file
                is missing, truncated, corrupt or inconsistent.
        """
        root = Path(path)
        if not root.is_dir():
            raise ValueError(f"no RETRO database at {root}: "
                             f"{'not a directory' if root.exists() else 'the directory does not exist'}")
        mpath = root / MANIFEST
        if not mpath.is_file():
            raise ValueError(f"{mpath} is missing: {root} is not a saved RETRO database "
                             f"(build one with RetroDatabase.build(...).save(path) or `zoo retro build`)")
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{mpath} is corrupt (not valid JSON: {exc}); rebuild the database") from None
        man = _check_manifest(manifest, mpath)
        paths = {}
        for key in ("store", "index"):
            entry = man["files"][key]
            fp = root / entry["name"]
            if not fp.is_file():
                raise ValueError(f"{fp} is missing (the {key} file named by {mpath}); the database is incomplete")
            size = fp.stat().st_size
            if size != entry["bytes"]:
                raise ValueError(f"{fp} is truncated or corrupt: {size:,} bytes, the manifest says {entry['bytes']:,}")
            if verify and _sha256(fp) != entry["sha256"]:
                raise ValueError(f"{fp} is corrupt: its sha256 does not match the manifest {mpath}")
            paths[key] = fp
        try:
            with np.load(paths["store"], allow_pickle=False) as z:
                missing = {"tokens", "doc_offsets"} - set(z.files)
                if missing:
                    raise ValueError(f"lacks arrays {sorted(missing)}")
                tokens, offsets = z["tokens"], z["doc_offsets"]
        except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError) as exc:
            raise ValueError(f"{paths['store']} is not a valid chunk store ({exc}); the file is corrupt") from None
        _check_store(tokens, offsets, man, paths["store"])
        faiss = _faiss()
        try:
            index = faiss.read_index(str(paths["index"]))
        except Exception as exc:  # faiss raises RuntimeError with a C++ trace
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{paths['index']} is not a readable FAISS index ({first[:200]}); "
                             f"the file is truncated or corrupt: rebuild the database") from None
        info = man["index"]
        if index.d != man["dim"] or index.ntotal != man["n_chunks"]:
            raise ValueError(f"{paths['index']} holds {index.ntotal} vectors of width {index.d}, the manifest "
                             f"says {man['n_chunks']} of width {man['dim']}: the files do not belong together")
        if info["kind"] == "ivf":
            try:
                ivf = faiss.extract_index_ivf(index)
            except Exception:
                raise ValueError(f"{paths['index']} is not an IVF index but the manifest says 'ivf'") from None
            if ivf.nlist != info["nlist"]:
                raise ValueError(f"{paths['index']} has nlist={ivf.nlist}, the manifest says {info['nlist']}")
            ivf.nprobe = info["nprobe"]
        ecfg = man["embedder"]
        if embedder is None:
            try:
                embedder = embedder_from_config(ecfg)
            except ValueError:
                embedder = None  # custom: searching by vectors still works
        else:
            given = embedder_config(embedder)
            if given.get("kind") != "custom" and ecfg.get("kind") != "custom" and given != ecfg:
                raise ValueError(f"the embedder {given} differs from the one the database was built with {ecfg}: "
                                 f"its vectors would not match the index")
            dim = getattr(embedder, "dim", None)
            if isinstance(dim, int) and dim != man["dim"]:
                raise ValueError(f"the embedder's dim {dim} differs from the index width {man['dim']}")
        return cls(tokens=tokens, doc_offsets=offsets, chunk_size=man["chunk_size"], index=index,
                   index_info=dict(info), embedder=embedder, embedder_cfg=ecfg,
                   tokenizer=tokenizer_from_config(man.get("tokenizer")))


_OWN_FILE = re.compile(
    r"^(store-\d{14}-[0-9a-f]{8}\.npz|index-\d{14}-[0-9a-f]{8}\.faiss"
    r"|\.(store|index)-\d{14}-[0-9a-f]{8}\.(npz|faiss)\.tmp|\.manifest\.json\.\d{14}-[0-9a-f]{8}\.tmp)$"
)
"""Names :meth:`RetroDatabase.save` writes; only these are ever deleted from a directory."""


def _replace_manifest(tmp: Path, final: Path) -> None:
    """The commit point of :meth:`RetroDatabase.save` (a seam for crash tests)."""
    os.replace(tmp, final)


def _check_manifest(man: Any, mpath: Path) -> dict[str, Any]:
    def bad(why: str) -> ValueError:
        return ValueError(f"{mpath} is corrupt or not a RETRO database manifest: {why}")

    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise bad(f"'format' must be {FORMAT!r}")
    if not isinstance(man.get("version"), int):
        raise bad("'version' must be an integer")
    if man["version"] > VERSION:
        raise ValueError(f"{mpath} has format version {man['version']}, newer than this attention-zoo "
                         f"reads ({VERSION}): upgrade attention-zoo")
    for key in ("chunk_size", "n_chunks", "n_docs", "n_tokens", "dim"):
        if not isinstance(man.get(key), int) or man[key] < (1 if key in ("chunk_size", "dim", "n_chunks", "n_docs") else 0):
            raise bad(f"{key!r} must be a positive integer, got {man.get(key)!r}")
    info = man.get("index")
    if not isinstance(info, dict) or info.get("kind") not in ("flat", "ivf"):
        raise bad("'index.kind' must be 'flat' or 'ivf'")
    if info["kind"] == "ivf" and not (isinstance(info.get("nlist"), int) and isinstance(info.get("nprobe"), int)):
        raise bad("an IVF index needs integer 'nlist' and 'nprobe'")
    if not isinstance(man.get("embedder"), dict):
        raise bad("'embedder' must be an object")
    files = man.get("files")
    if not isinstance(files, dict):
        raise bad("'files' must be an object")
    for key in ("store", "index"):
        e = files.get(key)
        if not (isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get("bytes"), int)
                and isinstance(e.get("sha256"), str)):
            raise bad(f"'files.{key}' needs 'name', 'bytes' and 'sha256'")
        if Path(e["name"]).name != e["name"] or e["name"] in ("", ".", ".."):
            raise bad(f"'files.{key}.name' must be a plain file name, got {e['name']!r}")
    return man


def _check_store(tokens: np.ndarray, offsets: np.ndarray, man: dict[str, Any], fp: Path) -> None:
    def bad(why: str) -> ValueError:
        return ValueError(f"{fp} is inconsistent with its manifest: {why}")

    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise bad(f"tokens must be a 1-D integer array, got {tokens.dtype} {tokens.shape}")
    if offsets.ndim != 1 or offsets.dtype != np.int64:
        raise bad(f"doc_offsets must be a 1-D int64 array, got {offsets.dtype} {offsets.shape}")
    if tokens.size != man["n_tokens"] or offsets.size != man["n_docs"] + 1:
        raise bad(f"{tokens.size} tokens in {offsets.size - 1} documents, the manifest says "
                  f"{man['n_tokens']} in {man['n_docs']}")
    if offsets[0] != 0 or offsets[-1] != tokens.size or (np.diff(offsets) < 0).any():
        raise bad("doc_offsets must rise from 0 to the number of tokens")
    m = man["chunk_size"]
    n_chunks = int(((np.diff(offsets) + m - 1) // m).sum())
    if n_chunks != man["n_chunks"]:
        raise bad(f"the documents make {n_chunks} chunks of {m}, the manifest says {man['n_chunks']}")
    if tokens.size and tokens.min() < 0:
        raise bad("token ids must be >= 0")

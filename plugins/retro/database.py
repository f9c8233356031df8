"""The RETRO retrieval database: a chunk store plus a FAISS nearest-neighbour index.

Documents (token sequences) are cut into chunks of at most ``m`` tokens (between
words when the database has a tokenizer: :mod:`~attention_zoo_plugins.retro.chunks`);
each chunk is embedded by a frozen :mod:`embedder <attention_zoo_plugins.retro.embedders>`
and added to a FAISS index under L2 distance (:mod:`~attention_zoo_plugins.retro.index`:
exact ``IndexFlatL2`` for small databases, ``IVF{nlist},Flat`` for large ones). A
neighbour is returned as the chunk *plus its continuation*, ``R = 2m`` tokens of
the same document, as in RETRO, and neighbours from the query's own document can
be excluded. :meth:`RetroDatabase.save` and :meth:`RetroDatabase.load` are
:mod:`~attention_zoo_plugins.retro.storage`: a directory written atomically under
a lock and fully checked on load.

This module is the facade: :class:`RetroDatabase` ties the three together.

Paper: Borgeaud et al., "Improving language models by retrieving from trillions
of tokens", 2021, arXiv:2112.04426 (section 2.3: frozen BERT chunk embeddings,
L2 kNN, neighbours as ``[N, F]`` chunk and continuation, same-document exclusion).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attention_zoo_plugins.retro import storage
from attention_zoo_plugins.retro._progress import Progress, note
from attention_zoo_plugins.retro.chunks import ChunkStore, as_documents, chunk_starts
from attention_zoo_plugins.retro.embedders import HashingEmbedder, embedder_config
from attention_zoo_plugins.retro import index as _index
from attention_zoo_plugins.retro.index import AUTO_IVF_MIN_CHUNKS, build_index
from attention_zoo_plugins.retro.storage import FORMAT, VERSION
from attention_zoo_plugins.retro.tokenizer import ByteTokenizer

__all__ = ["RetroDatabase", "Retrieved", "build_index", "AUTO_IVF_MIN_CHUNKS", "FORMAT", "VERSION"]


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
        tokens: np.ndarray | None = None,
        doc_offsets: np.ndarray | None = None,
        chunk_size: int | None = None,
        index: Any,
        index_info: dict[str, Any],
        embedder: Any = None,
        embedder_cfg: dict[str, Any] | None = None,
        tokenizer: Any = None,
        store: ChunkStore | None = None,
        vectors: np.ndarray | None = None,
    ) -> None:
        if store is None:  # fixed chunks of chunk_size tokens
            store = ChunkStore(tokens, doc_offsets, chunk_size, chunk_starts(doc_offsets, chunk_size))
        self.store = store
        self.index = index
        self.index_info = dict(index_info)
        self.embedder = embedder
        self.embedder_cfg = embedder_cfg if embedder_cfg is not None else (
            embedder_config(embedder) if embedder is not None else {"kind": "custom", "name": "unknown"})
        self.tokenizer = tokenizer
        self.vectors = vectors
        """Optional float16 ``(n_chunks, dim)`` chunk vectors (memory-mapped once saved): with them,
        ``search(..., rerank=R)`` re-scores a compressed index's ``R`` best candidates exactly."""

    # ---------------------------------------------------------------- sizes

    tokens = property(lambda self: self.store.tokens, doc="``(T,)`` all documents' tokens, concatenated.")
    doc_offsets = property(lambda self: self.store.doc_offsets, doc="``(D+1,)`` document boundaries in ``tokens``.")
    chunk_size = property(lambda self: self.store.chunk_size, doc="At most this many tokens per chunk (m).")
    chunk_starts = property(lambda self: self.store.chunk_starts, doc="``(n_chunks,)`` where each chunk starts.")
    chunk_docs = property(lambda self: self.store.chunk_docs, doc="``(n_chunks,)`` each chunk's document.")

    @property
    def n_chunks(self) -> int:
        return self.store.n_chunks

    @property
    def n_docs(self) -> int:
        return self.store.n_docs

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return self.n_chunks

    def __repr__(self) -> str:
        info = self.index_info
        idx = info.get("factory", info["kind"]) + (
            f"(nlist={info['nlist']}, nprobe={info['nprobe']})" if info.get("nlist") else "")
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
        pq_m: int | None = None,
        opq: bool | None = None,
        embeddings: np.ndarray | None = None,
        keep_vectors: bool = False,
        batch_size: int = 4096,
        progress: bool | None = None,
        seed: int = 0,
        tokenizer: Any = None,
    ) -> RetroDatabase:
        """Chunk, embed and index token sequences.

        Args:
            documents: token sequences (1-D integer arrays or lists, ids >= 0), one
                per document; a document's last chunk may be short.
            chunk_size: tokens per chunk (m); neighbours have ``2m`` tokens. With a
                ``tokenizer`` that has ``word_starts``, chunks end between words and
                hold at most ``m`` tokens.
            embedder: frozen chunk embedder (see :class:`~.embedders.Embedder`);
                default :class:`~.embedders.HashingEmbedder`.
            index: ``"auto"``, ``"flat"``, ``"ivf"``, ``"ivfpq"`` (compressed: 40 bytes
                per chunk) or a FAISS factory string (see :mod:`~.index`).
            nlist, nprobe: IVF parameters; ``nprobe`` can be changed later with
                :meth:`set_nprobe` or per call of :meth:`search`.
            pq_m, opq: ``index="ivfpq"``: PQ code bytes per chunk (default 32) and
                the OPQ rotation (default on; False trains about 20x faster, lower recall).
            embeddings: precomputed chunk embeddings ``(n_chunks, d)`` in chunk order
                (e.g. from a GPU pipeline); ``embedder`` then only embeds queries.
            keep_vectors: keep the chunk vectors as float16 (saved as a memory-mapped
                file, ``2 * dim`` bytes per chunk on disk) for ``search(..., rerank=R)``.
            batch_size: chunks per embedder call.
            progress: show progress on stderr; default: for 50,000 chunks or more.
            seed: IVF training seed.
            tokenizer: kept with the database to turn texts into tokens and back
                (:meth:`query`, ``zoo retro``) and to cut chunks between words;
                :meth:`from_texts` sets it. An embedder that decodes tokens
                (:class:`~.embedders.MiniLMEmbedder`) must use the same tokenizer.
        """
        if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        tokens, offsets = as_documents(documents)
        embedder = embedder if embedder is not None else HashingEmbedder()
        own = getattr(embedder, "tokenizer", None)
        if own is not None and tokenizer is not None and hasattr(own, "config") and hasattr(tokenizer, "config") \
                and own.config() != tokenizer.config():
            raise ValueError(f"the embedder decodes tokens with {own!r} but the documents are tokenized with "
                             f"{tokenizer!r}; build the embedder with the same tokenizer "
                             f"(e.g. MiniLMEmbedder(tokenizer=tokenizer))")
        words = getattr(tokenizer, "word_starts", None)
        store = ChunkStore(tokens, offsets, int(chunk_size),
                           chunk_starts(offsets, int(chunk_size), words(tokens) if words else None))
        db = cls(store=store, index=None, index_info={"kind": "none"}, embedder=embedder, tokenizer=tokenizer)
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
        db.vectors = emb.astype(np.float16) if keep_vectors else None
        db.index, db.index_info = build_index(emb, index, nlist=nlist, nprobe=nprobe, pq_m=pq_m, opq=opq, seed=seed,
                                              progress=show)
        note(f"retro: built {db!r} in {time.perf_counter() - start:.1f}s", enabled=show)
        return db

    @classmethod
    def from_texts(cls, texts: Iterable[str], *, tokenizer: Any = None, **kwargs: Any) -> RetroDatabase:
        """:meth:`build` from texts, one per document (default :class:`ByteTokenizer`)."""
        tokenizer = tokenizer or ByteTokenizer()
        return cls.build((tokenizer.encode(t) for t in texts), tokenizer=tokenizer, **kwargs)

    def set_nprobe(self, nprobe: int) -> None:
        """IVF lists searched per query (more: better recall, slower). Saved with the database."""
        _index.set_nprobe(self.index, self.index_info, nprobe)

    # ---------------------------------------------------------------- chunks

    def chunk_tokens(self, ids: Any) -> np.ndarray:
        """Tokens of chunks ``ids`` (any shape): int64 ``(*ids.shape, m)``, ``-1`` past the chunk's end."""
        return self.store.chunk_tokens(ids)

    def neighbours(self, ids: Any, *, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Chunk plus continuation (the ``2m`` tokens from its start, within its document)
        for chunk ``ids`` (any shape; ``-1`` = none). Returns ``tokens (*ids.shape, 2m)``
        with ``pad_id`` past the document's end and ``mask`` (True = real token)."""
        return self.store.neighbours(ids, pad_id=pad_id)

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

    def search(self, queries: Any, k: int, *, exclude_docs: Any = None, nprobe: int | None = None,
               rerank: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest chunks of each query vector.

        Args:
            queries: float ``(n, dim)`` vectors.
            k: neighbours per query.
            exclude_docs: optional ``(n,)`` document ids: chunks of ``exclude_docs[i]``
                are never returned for query ``i`` (``-1``: exclude nothing).
            nprobe: IVF lists searched for this call only (default: the database's).
            rerank: take this many candidates from the (compressed) index and return
                the ``k`` nearest by exact distance to their stored vectors (needs a
                database built with ``keep_vectors=True``).

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
        if rerank is not None:
            if self.vectors is None:
                raise ValueError("rerank needs the chunk vectors: build the database with keep_vectors=True "
                                 "(zoo retro build --keep-vectors)")
            if isinstance(rerank, bool) or not isinstance(rerank, (int, np.integer)) or rerank < 1:
                raise ValueError(f"rerank must be a positive integer (candidates to re-score), got {rerank!r}")
        if nprobe is not None and nprobe != self.index_info.get("nprobe"):
            saved = self.index_info["nprobe"] if self.index_info.get("nlist") else None
            _index.set_nprobe(self.index, self.index_info, nprobe)
            try:
                return self.search(q, k, exclude_docs=exclude_docs, rerank=rerank)
            finally:
                _index.set_nprobe(self.index, self.index_info, saved)
        knn = self.index.search if rerank is None else (lambda x, kk: self._reranked(x, kk, int(rerank)))
        if exclude_docs is None:
            d, i = knn(q, int(min(k, total)))
            dist[:, : d.shape[1]], ids[:, : i.shape[1]] = d, i
            dist[ids < 0] = np.inf
            return dist, ids
        ex = np.asarray(exclude_docs, dtype=np.int64).reshape(-1)
        if ex.shape != (n,):
            raise ValueError(f"exclude_docs must have one document id per query ({n}), got shape {np.shape(exclude_docs)}")
        todo = np.arange(n)
        fetch = int(min(total, 2 * k + 16))
        while todo.size:
            d, i = knn(q[todo], fetch)
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

    def _reranked(self, q: np.ndarray, k: int, rerank: int) -> tuple[np.ndarray, np.ndarray]:
        """The index's ``max(k, rerank)`` best, re-scored exactly with the stored vectors; the ``k`` best."""
        _, cand = self.index.search(q, int(min(max(k, rerank), self.index.ntotal)))
        return _index.rescore(q, cand, self.vectors, k)

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

    def query(self, text: str | Sequence[int], k: int = 2, *, exclude_doc: int | None = None,
              rerank: int | None = None) -> list[dict[str, Any]]:
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
        k = min(k, self.n_chunks) if isinstance(k, int) and k >= 1 else k  # never more than there are
        dist, ids = self.search(self.embed(tokens.reshape(1, -1)), k, exclude_docs=ex, rerank=rerank)
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
        sizes and sha256, and a checksum of every setting) is replaced only once they
        are complete, and the previous version's files are deleted only after that.
        Saves and loads of one directory take a lock: concurrent saves run one after
        the other. A crash or error mid-save leaves the previous database loadable.
        See :mod:`~attention_zoo_plugins.retro.storage`.

        Raises:
            ValueError: ``path`` is a file.
            storage.DatabaseBusyError: another process held the lock too long.
        """
        return storage.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, *, embedder: Any = None, verify: bool = True,
             mmap: bool = False) -> RetroDatabase:
        """Read a database written by :meth:`save`.

        Args:
            path: its directory.
            embedder: the embedder for queries; default: rebuilt from the manifest
                (built-in embedders); a custom one must be passed again.
            verify: check every file's sha256 (sizes and the settings checksum are
                always checked).
            mmap: keep an IVF index's inverted lists on disk, mapped from the index
                file: a search reads only the lists it probes (databases larger than
                RAM). The tokens are memory-mapped either way.

        Raises:
            ValueError: naming the file (and the manifest field), when the directory,
                the manifest or a file is missing, truncated, corrupt, edited or
                inconsistent.
        """
        return cls(**storage.load(path, embedder=embedder, verify=verify, mmap=mmap))

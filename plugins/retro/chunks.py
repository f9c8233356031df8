"""The RETRO database's chunk store: documents as one token array, cut into chunks.

Documents are concatenated into ``tokens (T,)`` with ``doc_offsets (D+1,)``; chunk
``i`` starts at ``chunk_starts[i]`` and holds at most ``m = chunk_size`` tokens of
one document. Without a tokenizer every ``m`` tokens start a chunk (RETRO's fixed
chunks). With one, a chunk starts only where a word starts (the tokenizer's
``word_starts``): each chunk takes as many whole words as fit in ``m`` tokens, so
no chunk shown to a person begins mid-word; a single word longer than ``m``
tokens is cut. A neighbour is a chunk *plus its continuation*: the ``2m`` tokens
from its start, within its document.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any

import numpy as np

from attention_zoo_plugins.retro.tokenizer import PAD

__all__ = ["ChunkStore", "as_documents", "chunk_starts"]


def as_documents(documents: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate token sequences; return ``tokens (T,)`` and ``doc_offsets (D+1,)``.

    Raises:
        ValueError: a document that is not a 1-D sequence of integer ids >= 0, or no
            tokens at all.
    """
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


def chunk_starts(doc_offsets: np.ndarray, chunk_size: int, word_starts: np.ndarray | None = None) -> np.ndarray:
    """Where each chunk starts: int64 ``(n_chunks,)``, rising.

    Args:
        doc_offsets: ``(D+1,)`` document boundaries in the token array.
        chunk_size: at most this many tokens per chunk (m).
        word_starts: optional bool ``(T,)``, True where a token may start a chunk;
            ``None``: every ``m`` tokens (fixed chunks).
    """
    m = int(chunk_size)
    lengths = np.diff(doc_offsets)
    if word_starts is None:
        per_doc = (lengths + m - 1) // m
        docs = np.repeat(np.arange(lengths.size, dtype=np.int64), per_doc)
        first = np.cumsum(per_doc) - per_doc
        return doc_offsets[docs] + (np.arange(docs.size, dtype=np.int64) - first[docs]) * m
    allowed = np.flatnonzero(word_starts).tolist()
    starts: list[int] = []
    for lo, hi in zip(doc_offsets[:-1].tolist(), doc_offsets[1:].tolist()):
        s = lo
        while s < hi:
            starts.append(s)
            if hi - s <= m:
                break
            j = bisect.bisect_right(allowed, s + m) - 1  # the last word start <= s + m
            s = allowed[j] if j >= 0 and allowed[j] > s else s + m  # none: cut the long word
    return np.asarray(starts, dtype=np.int64)


class ChunkStore:
    """Token array, document offsets and chunk starts, with the lookups retrieval needs.

    Args:
        tokens: ``(T,)`` integer token ids.
        doc_offsets: int64 ``(D+1,)``, rising from 0 to ``T``.
        chunk_size: at most this many tokens per chunk (m).
        starts: int64 ``(n_chunks,)`` chunk starts (see :func:`chunk_starts`).
    """

    def __init__(self, tokens: np.ndarray, doc_offsets: np.ndarray, chunk_size: int, starts: np.ndarray) -> None:
        self.tokens, self.doc_offsets, self.chunk_size = tokens, doc_offsets, int(chunk_size)
        self.chunk_starts = np.asarray(starts, dtype=np.int64)
        docs = np.searchsorted(doc_offsets, self.chunk_starts, side="right").astype(np.int64) - 1
        self.chunk_docs = np.clip(docs, 0, max(0, doc_offsets.size - 2))  # clipped: problems() reports
        doc_end = doc_offsets[self.chunk_docs + 1] if self.chunk_starts.size else self.chunk_starts
        nxt = np.append(self.chunk_starts[1:], tokens.size)
        self.chunk_ends = np.minimum(nxt, doc_end)

    @property
    def n_chunks(self) -> int:
        return int(self.chunk_starts.size)

    @property
    def n_docs(self) -> int:
        return int(self.doc_offsets.size - 1)

    def problems(self) -> str | None:
        """What is inconsistent in the arrays (for loading a file), or ``None``."""
        t, off, s, m = self.tokens, self.doc_offsets, self.chunk_starts, self.chunk_size
        if t.ndim != 1 or not np.issubdtype(t.dtype, np.integer):
            return f"tokens must be a 1-D integer array, got {t.dtype} {t.shape}"
        if off.ndim != 1 or off.dtype != np.int64 or off.size < 2:
            return f"doc_offsets must be a 1-D int64 array of at least 2, got {off.dtype} {off.shape}"
        if off[0] != 0 or off[-1] != t.size or (np.diff(off) < 0).any():
            return "doc_offsets must rise from 0 to the number of tokens"
        if t.size and t.min() < 0:
            return "token ids must be >= 0"
        if s.ndim != 1 or (s.size and (s[0] != 0 or (np.diff(s) <= 0).any() or s[-1] >= t.size)):
            return "chunk_starts must rise strictly from 0 and stay inside the tokens"
        nonempty = np.flatnonzero(np.diff(off) > 0)
        if not np.isin(off[nonempty], s).all():
            return "every non-empty document must start a chunk"
        if s.size and (((self.chunk_ends - s) > m).any() or (self.chunk_ends <= s).any()):
            return f"a chunk is longer than chunk_size={m}"
        return None

    def check_ids(self, ids: Any, *, allow_missing: bool) -> np.ndarray:
        """``ids`` as int64, checked to be chunk ids (``-1`` too when ``allow_missing``)."""
        a = np.asarray(ids)
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"chunk ids must be integers, got dtype {a.dtype}")
        a = a.astype(np.int64, copy=False)
        lo = -1 if allow_missing else 0
        if a.size and (a.min() < lo or a.max() >= self.n_chunks):
            raise ValueError(f"chunk ids must be in [{lo}, {self.n_chunks}), got range [{a.min()}, {a.max()}]")
        return a

    def chunk_tokens(self, ids: Any) -> np.ndarray:
        """Tokens of chunks ``ids`` (any shape): int64 ``(*ids.shape, m)``, ``-1`` past the chunk's end."""
        ids = self.check_ids(ids, allow_missing=False)
        return self.window(ids, self.chunk_size, PAD, self.chunk_ends)[0]

    def neighbours(self, ids: Any, *, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Chunk plus continuation (the ``2m`` tokens from its start, within its document)
        for chunk ``ids`` (any shape; ``-1`` = none). Returns ``tokens (*ids.shape, 2m)``
        with ``pad_id`` past the document's end and ``mask`` (True = real token)."""
        ids = self.check_ids(ids, allow_missing=True)
        doc_ends = self.doc_offsets[self.chunk_docs + 1]
        return self.window(ids, 2 * self.chunk_size, pad_id, doc_ends)

    def window(self, ids: np.ndarray, width: int, pad: int, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``width`` tokens from each chunk's start, ``pad`` from ``ends[id]`` on."""
        flat = ids.reshape(-1)
        ok_id = flat >= 0
        safe = np.where(ok_id, flat, 0)
        pos = self.chunk_starts[safe][:, None] + np.arange(width, dtype=np.int64)
        ok = ok_id[:, None] & (pos < ends[safe][:, None])
        out = np.where(ok, self.tokens[np.minimum(pos, self.tokens.size - 1)], pad).astype(np.int64)
        return out.reshape(*ids.shape, width), ok.reshape(*ids.shape, width)

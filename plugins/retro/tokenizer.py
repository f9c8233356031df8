"""A dependency-free, reversible tokenizer: UTF-8 bytes.

Token ids are the bytes ``0..255`` of the UTF-8 encoding, so every text round-trips
exactly and the vocabulary (256) needs no training and no file. ``-1`` is the
padding id used inside chunk arrays handed to embedders (:data:`PAD`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ByteTokenizer", "PAD"]

PAD = -1
"""Padding id in chunk arrays passed to embedders (positions past a document's end)."""


class ByteTokenizer:
    """Text <-> UTF-8 byte ids (``vocab_size = 256``); exact round trip.

    Example::

        >>> tok = ByteTokenizer()
        >>> ids = tok.encode("héllo")
        >>> ids.tolist()
        [104, 195, 169, 108, 108, 111]
        >>> tok.decode(ids)
        'héllo'
    """

    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        """``text`` -> int32 array of UTF-8 bytes."""
        if not isinstance(text, str):
            raise TypeError(f"encode() expects a str, got {type(text).__name__}")
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

    def decode(self, tokens: Any) -> str:
        """Token ids -> text; negative ids (padding) are skipped, a byte sequence cut
        in the middle of a character decodes with U+FFFD."""
        arr = np.asarray(tokens).reshape(-1)
        arr = arr[arr >= 0]
        if arr.size and arr.max() > 255:
            raise ValueError(f"ByteTokenizer.decode: ids must be in 0..255, got max {int(arr.max())}")
        return arr.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def config(self) -> dict[str, Any]:
        """JSON-able description, stored in a database's manifest."""
        return {"kind": "bytes"}

    def __repr__(self) -> str:
        return "ByteTokenizer()"


def tokenizer_from_config(cfg: dict[str, Any] | None) -> ByteTokenizer | None:
    if cfg is None:
        return None
    if cfg.get("kind") == "bytes":
        return ByteTokenizer()
    raise ValueError(f"unknown tokenizer in the database manifest: {cfg!r}")

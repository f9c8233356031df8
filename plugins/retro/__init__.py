"""``retro``: RETRO's chunked cross-attention and the retrieval machinery that feeds it.

Borgeaud et al., "Improving language models by retrieving from trillions of
tokens", 2021, arXiv:2112.04426.

- the layer: ``zoo.create("retro", query_dim=..., chunk_size=64)``
  (:class:`~attention_zoo_plugins.retro.layer.ChunkedCrossAttention`);
- the retrieval database: :class:`RetroDatabase` (a chunk store plus a FAISS
  index, saved and loaded atomically), chunk embedders (:class:`HashingEmbedder`,
  dependency-free, matching character n-grams; :class:`MiniLMEmbedder`, a frozen
  BERT-family sentence encoder matching meaning, optional extra
  ``attention-zoo[retro]``), :class:`ByteTokenizer` and :class:`WordPieceTokenizer`;
- the command line: ``zoo retro build CORPUS OUT`` and ``zoo retro query DB TEXT...``.

Importing this package is cheap: FAISS and the database code load on first use
(the names below are resolved lazily).
"""

from __future__ import annotations

from typing import Any

import zoo

from attention_zoo_plugins.retro.layer import SPEC, ChunkedCrossAttention, RetroConfig

__all__ = [
    "SPEC",
    "ChunkedCrossAttention",
    "RetroConfig",
    "RetroDatabase",
    "Retrieved",
    "Embedder",
    "HashingEmbedder",
    "MiniLMEmbedder",
    "ByteTokenizer",
    "WordPieceTokenizer",
    "embedder_from_config",
    "corpus_path",
]

_LAZY = {
    "RetroDatabase": "attention_zoo_plugins.retro.database",
    "Retrieved": "attention_zoo_plugins.retro.database",
    "Embedder": "attention_zoo_plugins.retro.embedders",
    "HashingEmbedder": "attention_zoo_plugins.retro.embedders",
    "MiniLMEmbedder": "attention_zoo_plugins.retro.embedders",
    "embedder_from_config": "attention_zoo_plugins.retro.embedders",
    "ByteTokenizer": "attention_zoo_plugins.retro.tokenizer",
    "WordPieceTokenizer": "attention_zoo_plugins.retro.tokenizer",
    "corpus_path": "attention_zoo_plugins.retro.corpus",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # Only what is loaded: pluggy scans dir(plugin) for hooks and getattr()s every
    # name, which must not import FAISS at plugin-discovery time.
    return sorted(globals())


@zoo.hookimpl
def zoo_register_commands(subparsers):
    from attention_zoo_plugins.retro.cli import add_commands

    add_commands(subparsers)

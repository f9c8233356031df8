"""The ``retrieval`` task of ``zoo compare``: next-token loss with RETRO neighbours.

The corpus is built so that retrieval can help and nothing else can: every passage is
a random string of 16 letters (unpredictable from its own past beyond letter
frequencies) that appears in *two* documents, as text repeats across the web. A
:class:`~attention_zoo_plugins.retro.RetroDatabase` (hashing embedder, exact index,
``chunk_size`` 8) holds every document; each sequence's neighbours are retrieved with
its own document excluded, so they come from the other copy, chunk plus continuation.

The model is a token and position embedding, the layer reading the encoded neighbours
(a token, position and rank embedding of each neighbour token), and a linear readout.
The floor (no layer) can learn letter frequencies only: about ``ln 16`` nats.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import zoo.compare as zc

__all__ = ["Retrieval"]

D, CHUNK, CHUNKS, K, LETTERS = 32, 8, 4, 2, 16
N = CHUNK * CHUNKS  # tokens the model reads; a passage has one more chunk (the targets' tail)
FIRST = ord("a")
RETRO = "retro"  # the variant whose plugin builds the retrieval database
SIZES = {True: (512, 128, 256), False: (4096, 512, 1024)}  # train / val / test passages, quick / full


class _LM(nn.Module):
    def __init__(self, cond: nn.Module | None, vocab: int = 256) -> None:
        super().__init__()
        self.tok, self.pos, self.out = nn.Embedding(vocab, D), nn.Embedding(CHUNK, D), nn.Linear(D, vocab)
        self.cond = cond
        if cond is not None:  # the neighbour encoder belongs to the conditioning path
            self.nb_tok, self.nb_pos, self.nb_rank = nn.Embedding(vocab, D), nn.Embedding(2 * CHUNK, D), nn.Embedding(K, D)

    def forward(self, batch):
        x = batch["x"]
        h = self.tok(x) + self.pos(torch.arange(x.shape[1], device=x.device) % CHUNK)
        if self.cond is not None:
            nb = batch["neighbours"]  # (B, L, K, R)
            r = nb.shape[-1]
            ctx = (self.nb_tok(nb) + self.nb_pos(torch.arange(r, device=x.device))
                   + self.nb_rank(torch.arange(nb.shape[2], device=x.device))[:, None])
            h = h + self.cond(h, ctx, batch["neighbours_mask"])
        return self.out(h)


def _retro_plugin():
    """The plugin that registered ``retro`` (its database and embedders), reached through
    the registry: the task names the variant it reads neighbours for, never imports it."""
    from zoo.registry import default_registry

    registry = default_registry()
    plugin = registry.plugin_of(registry.get(RETRO).name)
    if plugin is None or not hasattr(plugin, "RetroDatabase"):
        raise ValueError(f"the retrieval task needs the plugin that registers {RETRO!r} with its "
                         f"RetroDatabase (attention-zoo's built-in); variant {RETRO!r} came from "
                         f"{registry.provenance(RETRO)}")
    return plugin


class _RetrievalProblem(zc.Problem):
    query_len, context_len, context_form = N, 2 * CHUNK, "neighbours"

    def __init__(self, seed: int, quick: bool) -> None:
        retro = _retro_plugin()
        RetroDatabase, HashingEmbedder = retro.RetroDatabase, retro.HashingEmbedder
        rng = np.random.default_rng(seed)
        n_train, n_val, n_test = SIZES[quick]
        total = n_train + n_val + n_test
        passages = FIRST + rng.integers(0, LETTERS, size=(total, N + CHUNK))
        docs = np.repeat(passages, 2, axis=0)  # passage i is documents 2i and 2i+1
        db = RetroDatabase.build(list(docs), chunk_size=CHUNK, embedder=HashingEmbedder(dim=256),
                                 index="flat", progress=False)
        got = db.retrieve(passages[:, :N], k=K, exclude_docs=2 * np.arange(total))
        self.pool = {"tokens": torch.as_tensor(passages, dtype=torch.long)}
        self.pool["neighbours"], self.pool["neighbours_mask"] = got.to_torch()
        self.splits = {"train": (0, n_train), "val": (n_train, n_train + n_val),
                       "test": (n_train + n_val, total)}

    def batch(self, gen, size, split="train"):
        lo, hi = self.splits[split]
        if split == "train":
            idx = torch.randint(lo, hi, (size,), generator=gen)
        else:  # the whole held-out split (size is an upper bound)
            idx = torch.arange(lo, min(hi, lo + size))
        tokens = self.pool["tokens"][idx]
        return {"x": tokens[:, :N], "target": tokens[:, 1 : N + 1],
                "neighbours": self.pool["neighbours"][idx], "neighbours_mask": self.pool["neighbours_mask"][idx]}

    def model(self, cond):
        return _LM(cond)

    def loss(self, pred, batch):
        return F.cross_entropy(pred.flatten(0, 1), batch["target"].flatten())

    def score(self, pred, batch):
        return float(self.loss(pred, batch))


class Retrieval(zc.Task):
    """Next-token loss (nats) on passages of random letters that the retrieval database
    holds a second copy of; neighbours (K=2, chunk plus continuation) are retrieved
    chunk by chunk with the sequence's own document excluded. Only a layer that reads
    chunk-causal neighbours ``(B, L, K, R, Dc)`` can take them."""

    name = "retrieval"
    summary = "next-token loss on text whose neighbours (from a RetroDatabase) hold its continuation"
    metric = "loss"
    higher_is_better = False
    chance = math.log(LETTERS)
    layer_fields = {"query_dim": D, "context_dim": D, "heads": 4, "dim_head": 8, "chunk_size": CHUNK}

    def build(self, seed, *, quick):
        return _RetrievalProblem(seed, quick)

"""The synthetic ``zoo compare`` tasks: ``recall``, ``global``, ``aligned``, ``memory``.

Each is a seeded generator plus a tiny model in which the conditioning layer is the only
trainable part: items are fixed random embeddings (unit-length on average, drawn from
the task seed), the prediction is ``x + cond(x, context)`` read out by a fixed random
matrix (classification) or taken as is (regression). The floor (no layer) therefore
has nothing to learn and sits at chance by construction; whatever a variant scores
above it came through its layer. Sizes are small enough for a CPU in seconds.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

import zoo.compare as zc

__all__ = ["Recall", "Global", "Aligned", "Memory"]

D = 32  # query_dim and context_dim of every synthetic task


def _table(gen: torch.Generator, n: int, d: int = D) -> Tensor:
    """``n`` fixed random embeddings of width ``d`` (squared norm 1 on average)."""
    return torch.randn(n, d, generator=gen) / math.sqrt(d)


def _derangement(gen: torch.Generator, b: int, n: int) -> Tensor:
    """``(b, n)`` permutations with no fixed point (resampled rows until none is left)."""
    perm = torch.rand(b, n, generator=gen).argsort(dim=1)
    bad = (perm == torch.arange(n)).any(dim=1)
    while bad.any():
        perm[bad] = torch.rand(int(bad.sum()), n, generator=gen).argsort(dim=1)
        bad = (perm == torch.arange(n)).any(dim=1)
    return perm


class _Residual(nn.Module):
    """``pred = readout(x + cond(x, context))``; ``readout`` is fixed (a buffer) or identity."""

    def __init__(self, cond: nn.Module | None, readout: Tensor | None) -> None:
        super().__init__()
        self.cond = cond
        self.register_buffer("readout", readout if readout is not None else torch.empty(0))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        h = batch["x"]
        if self.cond is not None:
            h = h + self.cond(h, batch["context"])
        return h @ self.readout.T if self.readout.numel() else h


class _Classify(zc.Problem):
    """Shared parts of the classification tasks: fixed readout, cross-entropy, accuracy."""

    readout: Tensor

    def model(self, cond):
        return _Residual(cond, self.readout)

    def loss(self, pred, batch):
        return F.cross_entropy(pred.flatten(0, -2), batch["target"].flatten())

    def score(self, pred, batch):
        return float((pred.argmax(-1) == batch["target"]).float().mean())


# ----------------------------------------------------------------------------- recall


class _RecallProblem(_Classify):
    keys, values, pairs, query_len = 32, 16, 16, 8

    def __init__(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.context_len = self.pairs
        self.key_emb, self.value_emb = _table(g, self.keys), _table(g, self.values)
        self.readout = _table(g, self.values)

    def batch(self, gen, size, split="train"):
        keys = torch.rand(size, self.keys, generator=gen).argsort(dim=1)[:, : self.pairs]  # distinct keys
        values = torch.randint(0, self.values, (size, self.pairs), generator=gen)
        which = torch.randint(0, self.pairs, (size, self.query_len), generator=gen)
        return {"x": self.key_emb[keys.gather(1, which)],
                "context": self.key_emb[keys] + self.value_emb[values],
                "target": values.gather(1, which)}


class Recall(zc.Task):
    """Conditioning MQAR: the context holds 16 key-value pairs (one token each, key plus
    value embedding); each of the 8 query tokens is a key and must output its value (16
    classes). A pooled context cannot say which value belongs to which key."""

    name = "recall"
    summary = "each query token must fetch the value paired with its key in the context (MQAR)"
    metric = "accuracy"
    chance = 1 / 16
    layer_fields = {"query_dim": D, "context_dim": D, "heads": 4, "dim_head": 8}

    def build(self, seed, *, quick):
        return _RecallProblem(seed)


# ----------------------------------------------------------------------------- global


class _GlobalProblem(zc.Problem):
    functions, query_len, context_len, noise = 16, 8, 4, 0.5

    def __init__(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        z, w = torch.randn(self.functions, D, generator=g), torch.randn(self.functions, D, generator=g)
        # centred over the functions: the best predictor that ignores the context is y = x
        self.scale = 1 + 0.5 * (z - z.mean(0))
        self.shift = 0.5 * (w - w.mean(0))
        self.name_emb = _table(g, self.functions)

    def batch(self, gen, size, split="train"):
        f = torch.randint(0, self.functions, (size,), generator=gen)
        x = torch.randn(size, self.query_len, D, generator=gen)
        names = self.name_emb[f][:, None].expand(size, self.context_len, D)
        context = names + self.noise / math.sqrt(D) * torch.randn(size, self.context_len, D, generator=gen)
        return {"x": x, "context": context, "target": x * self.scale[f][:, None] + self.shift[f][:, None]}

    def model(self, cond):
        return _Residual(cond, None)

    def loss(self, pred, batch):
        return F.mse_loss(pred, batch["target"])

    def score(self, pred, batch):
        # R^2 against the best context-free predictor (y = x, since scales average 1, shifts 0)
        base = F.mse_loss(batch["x"], batch["target"])
        return float(1 - F.mse_loss(pred, batch["target"]) / base)


class Global(zc.Task):
    """The target is x changed by one of 16 per-feature scale-and-shift functions, the
    same for every position of a sequence; the 4 context tokens name it (a fixed
    embedding of its id plus noise). Metric: R² against the best predictor that
    ignores the context (0 = no use of the context, 1 = exact)."""

    name = "global"
    summary = "the target is x scaled and shifted per feature by a sequence-wide function the context names"
    metric = "r2"
    chance = 0.0
    layer_fields = {"query_dim": D, "context_dim": D, "heads": 4, "dim_head": 8}

    def build(self, seed, *, quick):
        return _GlobalProblem(seed)


# ----------------------------------------------------------------------------- aligned


class _AlignedProblem(_Classify):
    contents, labels, query_len = 16, 16, 8

    def __init__(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.context_len = self.query_len
        self.content_emb, self.ask_emb = _table(g, self.contents), _table(g, self.labels)
        self.label_emb, self.readout = _table(g, self.labels), _table(g, self.contents)

    def batch(self, gen, size, split="train"):
        n = self.query_len
        content = torch.randint(0, self.contents, (size, n), generator=gen)
        label = torch.rand(size, self.labels, generator=gen).argsort(dim=1)[:, :n]  # item j's label
        src = _derangement(gen, size, n)  # item i asks for the item src[i] != i
        return {"x": self.content_emb[content] + self.ask_emb[label.gather(1, src)],
                "context": self.label_emb[label],
                "target": content.gather(1, src)}


class Aligned(zc.Task):
    """8 items, x and context aligned item by item. x_i holds the item's content (16
    classes) and the label it asks for; the context holds each item's own label (a
    random permutation, seen nowhere else). The target of item i is the content of the
    item whose label i asks for (never i itself): x's own content, routed by relations
    only the context reveals."""

    name = "aligned"
    summary = "the target of item i is x's content at the item whose context label item i asks for"
    metric = "accuracy"
    chance = 1 / 16
    layer_fields = {"query_dim": D, "context_dim": D, "heads": 4, "dim_head": 8}

    def build(self, seed, *, quick):
        return _AlignedProblem(seed)


# ----------------------------------------------------------------------------- memory


class _MemoryProblem(_Classify):
    # more keys than dimensions: a linear map of x cannot hold a random table of them
    keys, values, query_len = 4 * D, 16, 8

    def __init__(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.context_len = self.query_len
        self.key_emb = _table(g, self.keys)
        self.readout = _table(g, self.values)
        self.table = torch.randint(0, self.values, (self.keys,), generator=g)  # the same for every sequence

    def batch(self, gen, size, split="train"):
        keys = torch.randint(0, self.keys, (size, self.query_len), generator=gen)
        # fresh Gaussian noise: tokens from a fixed vocabulary could serve as memory slots
        noise = torch.randn(size, self.context_len, D, generator=gen) / math.sqrt(D)
        return {"x": self.key_emb[keys], "context": noise, "target": self.table[keys]}


class Memory(zc.Task):
    """A fixed table maps 128 keys (4x the width, so no linear map of x can hold it) to
    16 values, the same for every sequence; x holds 8 keys, the context 8 vectors of
    fresh Gaussian noise that carry nothing. Only a layer with its own learned slots
    can hold the table."""

    name = "memory"
    summary = "a fixed key-to-value table, the same for every sequence; the context is noise"
    metric = "accuracy"
    chance = 1 / 16
    layer_fields = {"query_dim": D, "context_dim": D, "heads": 4, "dim_head": 8}

    def build(self, seed, *, quick):
        return _MemoryProblem(seed)

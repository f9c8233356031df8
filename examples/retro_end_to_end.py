"""RETRO end to end: a retrieval database, neighbours, an encoder and a RETRO block.

Borgeaud et al., "Improving language models by retrieving from trillions of
tokens", 2021, arXiv:2112.04426. This script walks the whole path on the small
corpus shipped with the ``retro`` plugin, in a few seconds on two CPU cores:

1. **Build the database**: the corpus (26 short documents) is tokenised into
   UTF-8 bytes, cut into chunks of ``m = 64`` tokens, embedded by a frozen
   embedder (dependency-free character n-gram hashing by default: spelling, not meaning; ``--embedder minilm``
   uses the frozen all-MiniLM-L6-v2 sentence encoder if ``attention-zoo[retro]``
   is installed) and indexed with FAISS (exact flat index: the corpus is small).
   It is saved to a temporary directory and loaded back, as a training job would.
2. **Retrieve**: for a batch of ``B = 4`` sequences of ``N = 288`` tokens (4 full
   chunks and half a chunk), the ``K = 2`` nearest chunks of every complete chunk
   are fetched *with their continuations* (``R = 2m = 128`` tokens each), excluding
   each sequence's own document. Result: tokens and mask ``(B, L=4, K=2, R=128)``.
3. **Encode** the neighbours with a small bidirectional encoder (byte embedding,
   positions, one masked self-attention layer built with ``zoo.create("cross")``)
   to ``(B, L, K, R, 64)``.
4. **Run a RETRO block**: causal self-attention, then chunked cross-attention
   ``zoo.create("retro", chunk_size=64, ...)`` over the encoded neighbours, then a
   feed-forward layer; a byte-level language-model loss; backward; an optimiser
   step. Timings are printed for every stage.

Run it::

    python examples/retro_end_to_end.py            # about 5 s on 2 cores
    python examples/retro_end_to_end.py --steps 10 --embedder minilm

The same database can be built and queried from the shell::

    zoo retro build builtin /tmp/retro-db
    zoo retro query /tmp/retro-db "how do bees tell each other where flowers are?"
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import zoo
from attention_zoo_plugins.retro import HashingEmbedder, MiniLMEmbedder, RetroDatabase
from attention_zoo_plugins.retro.corpus import load_corpus

VOCAB = 256  # byte tokens


class NeighbourEncoder(nn.Module):
    """Encode neighbour tokens ``(..., R)`` to ``(..., R, dim)``: bidirectional, masked.

    (RETRO's encoder also cross-attends to the retrieving chunk; one masked
    self-attention layer keeps this example small.)
    """

    def __init__(self, dim: int, length: int, heads: int = 4) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, dim)
        self.pos = nn.Parameter(torch.randn(length, dim) * 0.02)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = zoo.create("cross", query_dim=dim, heads=heads, dim_head=dim // heads)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lead, r = tokens.shape[:-1], tokens.shape[-1]
        h = self.tok(tokens.reshape(-1, r)) + self.pos
        m = mask.reshape(-1, r)
        h = h + self.attn(self.norm1(h), None, context_mask=m)  # self-attention over real tokens only
        h = h + self.ff(self.norm2(h))
        return h.reshape(*lead, r, -1)


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class RetroBlock(nn.Module):
    """Pre-norm decoder block with RETRO's chunked cross-attention between
    self-attention and the feed-forward layer."""

    def __init__(self, dim: int, enc_dim: int, heads: int, chunk_size: int) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads)
        self.cca = zoo.create("retro", query_dim=dim, context_dim=enc_dim, heads=heads,
                              dim_head=dim // heads, chunk_size=chunk_size)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x, neighbours, neighbour_mask):
        x = x + self.attn(self.norm1(x))
        x = x + self.cca(self.norm2(x), neighbours, context_mask=neighbour_mask)
        return x + self.ff(self.norm3(x))


class TinyRetro(nn.Module):
    def __init__(self, *, dim: int = 128, enc_dim: int = 64, heads: int = 4, chunk_size: int = 64,
                 max_len: int = 512) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, dim)
        self.pos = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        self.encoder = NeighbourEncoder(enc_dim, 2 * chunk_size)
        self.block = RetroBlock(dim, enc_dim, heads, chunk_size)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, VOCAB)

    def forward(self, tokens, neighbour_tokens, neighbour_mask):
        encoded = self.encoder(neighbour_tokens, neighbour_mask)  # (B, L, K, R, enc_dim)
        x = self.tok(tokens) + self.pos[: tokens.shape[1]]
        x = self.block(x, encoded, neighbour_mask)
        return self.head(self.norm(x))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="training steps (forward + backward + update)")
    parser.add_argument("--embedder", choices=("hashing", "minilm"), default="hashing")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    m, n_seq, batch, k = 64, 288, 4, 2

    # 1. build, save and reload the database
    t0 = time.perf_counter()
    docs = load_corpus()
    embedder = MiniLMEmbedder() if args.embedder == "minilm" else HashingEmbedder()
    db = RetroDatabase.from_texts(docs, chunk_size=m, embedder=embedder)
    with tempfile.TemporaryDirectory() as tmp:
        db.save(tmp)
        db = RetroDatabase.load(tmp, embedder=embedder)
    t_build = time.perf_counter() - t0
    print(f"database: {db!r}  [{t_build:.2f}s incl. save+load]")

    # 2. retrieve neighbours (chunk + continuation) for a batch, excluding each sequence's document
    doc_ids = np.array([0, 4, 14, 21])
    seqs = np.stack([db.tokenizer.encode(docs[d])[:n_seq] for d in doc_ids])
    t0 = time.perf_counter()
    got = db.retrieve(seqs, k=k, exclude_docs=doc_ids)
    t_retrieve = time.perf_counter() - t0
    print(f"retrieved neighbours {got.tokens.shape} (B, L, K, R) in {t_retrieve * 1000:.1f} ms; "
          f"real tokens {got.mask.mean():.0%}")
    first = db.tokenizer.decode(got.tokens[0, 0, 0][got.mask[0, 0, 0]])
    print(f"  chunk 0 of document {doc_ids[0]}: {db.tokenizer.decode(seqs[0, :m])!r}")
    print(f"  its nearest neighbour (document {db.chunk_docs[got.chunk_ids[0, 0, 0]]}): {first[:m]!r}...")

    # 3 + 4. encode the neighbours and run the RETRO block, forward and backward
    model = TinyRetro(chunk_size=m, max_len=n_seq)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    tokens = torch.as_tensor(seqs, dtype=torch.long)
    ntok, nmask = got.to_torch()
    losses, t_fwd, t_bwd = [], [], []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        logits = model(tokens, ntok, nmask)  # (B, N, vocab): causal, so position p predicts p+1
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        t2 = time.perf_counter()
        losses.append(loss.item())
        t_fwd.append(t1 - t0)
        t_bwd.append(t2 - t1)
    cca_grad = model.block.cca.to_k.weight.grad
    print(f"RETRO block: x {tuple(tokens.shape)} -> logits {tuple(logits.shape)}; "
          f"neighbours encoded to {(batch, n_seq // m, k, 2 * m, 64)}")
    print(f"  loss {losses[0]:.3f} -> {losses[-1]:.3f} over {args.steps} steps; "
          f"forward {1000 * np.median(t_fwd):.0f} ms, backward+step {1000 * np.median(t_bwd):.0f} ms (median)")
    print(f"  CCA key-projection gradient norm {cca_grad.norm().item():.3e}")
    return {"build_s": t_build, "retrieve_s": t_retrieve, "forward_s": t_fwd, "backward_s": t_bwd,
            "losses": losses, "neighbours_shape": got.tokens.shape, "logits_shape": tuple(logits.shape),
            "cca_grad_norm": cca_grad.norm().item()}


if __name__ == "__main__":
    main()

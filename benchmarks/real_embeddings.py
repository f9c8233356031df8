"""Real all-MiniLM-L6-v2 embeddings of up to ~1.4M chunks of real English text, offline,
for the retrieval benchmark at scale (``benchmarks/retrieval_scale.py --real-cache``).

Text: the corpus ``benchmarks/offline_corpus.py`` writes from what is installed (Python,
site-packages and /usr/share/doc documentation, then docstrings), cut into documents at
blank lines as ``zoo retro build --split paragraph`` does, tokenised with MiniLM's
WordPiece tokenizer and cut into 64-token chunks between words (the database's own
chunking). Chunks under ``--min-tokens`` (default 32) are dropped and exact duplicates (licences, boilerplate)
kept once, so exact search has no ties; the rest are shuffled with a seed. The first 1,000
are the queries (never indexed).

Embedding: the library's :class:`MiniLMEmbedder` with the WordPiece tokenizer (the chunk's
ids go to the model as they are) at ``--precision`` (default bfloat16: about 3x float32 on
this AMX CPU); ``--check`` compares a sample with float32 (cosine similarity, reported).
Written in blocks of 50,000 so a stopped run resumes where it was.

    python benchmarks/offline_corpus.py /work/scratch-retro/corpus-big --mb 400  # all there is: 86 MB
    python benchmarks/real_embeddings.py /work/scratch-retro/corpus-big /work/scratch-retro/real-381k \\
        --n 381000 --min-tokens 16
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

BLOCK = 50_000


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {msg}", file=sys.stderr, flush=True)


def chunk_corpus(corpus: Path, min_tokens: int = 32):
    """The corpus's chunk store, the ids of its distinct chunks of at least ``min_tokens``
    word pieces, the tokenizer and counts."""
    from attention_zoo_plugins.retro import WordPieceTokenizer
    from attention_zoo_plugins.retro.chunks import ChunkStore, as_documents, chunk_starts
    from attention_zoo_plugins.retro.corpus import split_documents

    tok = WordPieceTokenizer()
    docs = [d for f in sorted(corpus.glob("*.txt")) for d in split_documents(f.read_text(encoding="utf-8"))]
    tokens, offsets = as_documents(tok.encode(d) for d in docs)
    store = ChunkStore(tokens, offsets, 64, chunk_starts(offsets, 64, tok.word_starts(tokens)))
    keep, seen = [], set()
    for c in np.flatnonzero(store.chunk_ends - store.chunk_starts >= min_tokens):
        h = hashlib.blake2b(tokens[store.chunk_starts[c] : store.chunk_ends[c]].tobytes(), digest_size=12).digest()
        if h not in seen:
            seen.add(h)
            keep.append(c)
    info = {"documents": len(docs), "tokens": int(tokens.size), "chunks": int(store.n_chunks),
            "distinct_chunks_min_tokens": len(keep), "min_tokens": min_tokens}
    return store, np.asarray(keep), tok, info


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("corpus", type=Path)
    p.add_argument("out", type=Path, help="folder for the blocks, ids and the merged .npy")
    p.add_argument("--n", type=int, default=1_001_000, help="chunks to embed (the first 1,000 are the queries)")
    p.add_argument("--min-tokens", type=int, default=32, help="shorter chunks are left out")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="bfloat16")
    p.add_argument("--check", type=int, default=200, help="chunks compared with the float32 embedder")
    p.add_argument("--speed", type=int, default=0, metavar="N",
                   help="also time MiniLMEmbedder on N chunks, 1 thread, float32 and bfloat16 (chunks/s per core)")
    args = p.parse_args(argv)
    import torch

    from attention_zoo_plugins.retro import MiniLMEmbedder

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    store, keep, tok, info = chunk_corpus(args.corpus, args.min_tokens)
    log(f"{info['documents']:,} documents, {info['tokens']:,} tokens, {info['chunks']:,} chunks, "
        f"{len(keep):,} distinct of >= {args.min_tokens} tokens ({time.perf_counter() - t0:.0f} s)")
    chosen = np.random.default_rng(0).permutation(keep)[: args.n]
    if len(chosen) < args.n:
        raise SystemExit(f"the corpus has only {len(chosen):,} usable chunks, asked for {args.n:,}")
    np.save(args.out / "chunk-ids.npy", chosen)
    embedder = MiniLMEmbedder(tokenizer=tok, batch_size=args.batch, precision=args.precision)
    embed_s, done = 0.0, 0
    for b, lo in enumerate(range(0, args.n, BLOCK)):
        path = args.out / f"block-{b:03d}.npy"
        if path.exists():
            continue
        t0 = time.perf_counter()
        block = store.chunk_tokens(chosen[lo : lo + BLOCK])
        np.save(path.with_suffix(".tmp.npy"), embedder(block))
        os.replace(path.with_suffix(".tmp.npy"), path)
        embed_s += time.perf_counter() - t0
        done += block.shape[0]
        log(f"block {b}: {lo + block.shape[0]:,}/{args.n:,} ({done / embed_s:,.0f} chunks/s on {args.threads} threads)")
    merged = np.concatenate([np.load(args.out / f"block-{b:03d}.npy") for b in range((args.n + BLOCK - 1) // BLOCK)])
    np.save(args.out / "embeddings.npy", merged)
    if done:
        info.update(embedded=args.n, embed_chunks_per_s=done / embed_s, threads=args.threads, batch=args.batch,
                    precision=args.precision, corpus=str(args.corpus))
    if args.check:
        sample = np.arange(0, args.n, args.n // args.check)[: args.check]
        cos = (MiniLMEmbedder(tokenizer=tok)(store.chunk_tokens(chosen[sample])) * merged[sample]).sum(1)
        info.update(check_chunks=len(sample), check_cosine_mean=float(cos.mean()), check_cosine_min=float(cos.min()))
        log(f"against float32: cosine mean {cos.mean():.4f}, min {cos.min():.4f}")
    if args.speed:
        torch.set_num_threads(1)
        block = store.chunk_tokens(chosen[: args.speed])
        for precision in ("float32", "bfloat16"):
            emb = MiniLMEmbedder(tokenizer=tok, batch_size=args.batch, precision=precision)
            emb(block[:64])  # loads the model
            t0 = time.perf_counter()
            emb(block)
            info[f"chunks_per_s_per_core_{precision}"] = args.speed / (time.perf_counter() - t0)
            log(f"MiniLMEmbedder {precision}, 1 thread: {info[f'chunks_per_s_per_core_{precision}']:,.0f} chunks/s")
    old = json.loads((args.out / "info.json").read_text()) if (args.out / "info.json").exists() else {}
    (args.out / "info.json").write_text(json.dumps({**old, **info}, indent=1) + "\n")


if __name__ == "__main__":
    main()

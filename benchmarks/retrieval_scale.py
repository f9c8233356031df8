"""RETRO's database at scale (issue 24): bytes per chunk, build throughput, and queries
per second against recall@10 for the compressed ``ivfpq`` index, from 100k real chunks to
10M chunks.

Data:

- **Real** (``--real``, made by ``benchmarks/real_embeddings.py``): all-MiniLM-L6-v2
  embeddings of every distinct chunk of the English documentation installed on the machine
  (381,000 chunks); the first 1,000 are the queries and are never indexed. Sizes up to
  the number of real chunks use the real embeddings only.
- **Generated** (sizes above that): the real embeddings first, then points drawn on edges
  of their 10-nearest-neighbour graph, ``a * e_i + (1 - a) * e_j`` (``e_j`` one of real
  chunk ``i``'s 10 nearest real chunks, ``a`` uniform in [0.5, 1]) plus isotropic Gaussian
  noise (``--sigma`` per dimension), renormalised: new points fill the space between real
  neighbours, as a larger corpus would. ``--calibrate`` chooses ``--sigma``: it grows a
  quarter of the real chunks to the full real size with each sigma and compares the
  queries' neighbour distances and recall with the real data of that size. Vectors are
  generated in blocks of 1M from a seed, so 10M never sit in RAM; exact ground truth
  (float32 flat search) is computed block by block as they are added.
- **Rerank** (``--rerank``): the index returns that many candidates, re-scored exactly
  (``index.rescore``, as ``RetroDatabase.search(..., rerank=R)``) with the chunks'
  float16 vectors memory-mapped from disk (768 bytes per chunk *on disk*; the index in
  RAM stays at its code size).

recall@10 = |approximate top 10 ∩ exact top 10| / 10, averaged over the queries;
"top1@10" = fraction of queries whose exact nearest neighbour is in the approximate top 10
(FAISS's R@10).

Run (one at a time, on an otherwise idle machine)::

    python benchmarks/real_embeddings.py CORPUS /work/scratch-retro/real-381k --n 381000 --min-tokens 16
    python benchmarks/retrieval_scale.py --real /work/scratch-retro/real-381k --calibrate
    python benchmarks/retrieval_scale.py --real /work/scratch-retro/real-381k \\
        --json benchmarks/results/retrieval-scale.json
    python benchmarks/retrieval_scale.py --render benchmarks/results/retrieval-scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
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


def knn_graph(base: np.ndarray, k: int = 10) -> np.ndarray:
    """Each real embedding's ``k`` nearest others (IVF-approximate above 20k rows: it only
    chooses which pairs new points are drawn between)."""
    import faiss

    n, d = base.shape
    if n <= 20_000:
        return faiss.knn(base, base, k + 1)[1][:, 1:]
    nlist = int(np.sqrt(n))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
    ivf.train(base[np.random.default_rng(0).choice(n, 50 * nlist, replace=False)])
    ivf.add(base)
    ivf.nprobe = 16
    nb = np.concatenate([ivf.search(base[lo : lo + 50_000], k + 1)[1] for lo in range(0, n, 50_000)])
    self_first = np.argsort(nb == np.arange(n)[:, None], axis=1, kind="stable")  # self (if found) moves last
    nb = np.take_along_axis(nb, self_first, 1)[:, :k]
    if (nb < 0).any():
        raise RuntimeError("knn graph: a vector found fewer than k neighbours; raise nprobe")
    return nb


def scaled_block(base: np.ndarray, nb: np.ndarray, lo: int, hi: int, sigma: float, seed: int) -> np.ndarray:
    """Vectors lo..hi-1, rounded to float16 (as stored for re-scoring): the real embeddings
    first, then points on edges of their kNN graph ``nb`` plus noise."""
    if hi <= len(base):
        return base[lo:hi].astype(np.float16)
    rng = np.random.default_rng([seed, lo])
    rows = np.arange(lo, hi)
    i = rows % len(base)
    j = nb[i, rng.integers(0, nb.shape[1], hi - lo)]
    a = rng.uniform(0.5, 1.0, (hi - lo, 1)).astype(np.float32)
    x = a * base[i] + (1 - a) * base[j]
    if sigma:
        x += rng.normal(0, sigma, x.shape).astype(np.float32)
    real = rows < len(base)
    x[real] = base[rows[real]]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float16)


def merge_topk(d0, i0, d1, i1, k):
    d, i = np.concatenate([d0, d1], 1), np.concatenate([i0, i1], 1)
    o = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, o, 1), np.take_along_axis(i, o, 1)


BLOCK = 1_000_000


def make_vectors(n, base, nb, queries, args, faiss):
    """Write the ``n`` database vectors (float16) to scratch, block by block, with the exact top 10."""
    k = 10
    gd = np.full((len(queries), k), np.inf, np.float32)
    gi = np.full((len(queries), k), -1, np.int64)
    path = Path(args.scratch) / f"vectors-{n}.npy"
    vecs = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, base.shape[1]))
    faiss.omp_set_num_threads(args.threads)
    t0 = time.perf_counter()
    for lo in range(0, n, BLOCK):
        x = scaled_block(base, nb, lo, min(n, lo + BLOCK), args.sigma, 1)
        vecs[lo : lo + len(x)] = x
        d, i = faiss.knn(queries, x.astype(np.float32), k)
        gd, gi = merge_topk(gd, gi, d, i + lo, k)
    vecs.flush()
    del vecs
    log(f"n={n:,}: vectors and exact top 10 in {time.perf_counter() - t0:.0f} s")
    return path, gi


def bench_index(n, code, vec_path, gi, queries, args, faiss, index_mod) -> list[dict]:
    vecs = np.load(vec_path, mmap_mode="r")
    nlist = args.nlist.get(n) or index_mod.default_nlist(n)
    factory = code.format(ivf=f"IVF{nlist}") if "{ivf}" in code else f"IVF{nlist},{code}"
    rows = index_mod.training_rows(n, factory, None, 0)
    faiss.omp_set_num_threads(args.threads)
    log(f"n={n:,}: training {factory} on {len(rows):,}")
    t0 = time.perf_counter()
    index, _ = index_mod.train_index(np.asarray(vecs[rows], np.float32), factory, n)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for lo in range(0, n, BLOCK):
        index.add(np.asarray(vecs[lo : lo + BLOCK], np.float32))
    add_s = time.perf_counter() - t0
    log(f"  added {n:,} in {add_s:.0f} s (rss {rss_mb():.0f} MB)")
    path = Path(args.scratch) / f"index-{n}.faiss"
    faiss.write_index(index, str(path))
    disk = path.stat().st_size
    del index
    rss0 = rss_mb()
    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP if args.mmap else 0)
    rss_index = rss_mb() - rss0
    ivf = faiss.extract_index_ivf(index)
    fixed = {"n": n, "data": "real" if n <= args.n_real else "generated", "sigma": None if n <= args.n_real else args.sigma,
             "factory": factory, "nlist": nlist, "train_vectors": len(rows), "train_s": train_s,
             "add_vectors_per_s": n / add_s, "threads": args.threads, "bytes_per_chunk": ivf.code_size + 8,
             "index_file_bytes": disk, "index_rss_mb": rss_index, "mmap": args.mmap}
    out = []
    for nprobe in (p for p in args.nprobes if p <= nlist):
        ivf.nprobe = nprobe
        for rr in [0, *args.rerank]:
            def once():
                if not rr:
                    return index.search(queries, 10)[1]
                return index_mod.rescore(queries, index.search(queries, rr)[1], vecs, 10)[1]

            once()
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                found = once()
                times.append(time.perf_counter() - t0)
            out.append({**fixed, **scores(found, gi), "nprobe": nprobe, "rerank": rr,
                        "qps_batched": len(queries) / statistics.median(times), "load": os.getloadavg()[0]})
            r = out[-1]
            log(f"  nprobe {nprobe} rerank {rr}: {r['qps_batched']:,.0f} QPS, recall@10 {r['recall_at_10']:.3f}")
    path.unlink()
    return out


def scores(found: np.ndarray, gi: np.ndarray) -> dict:
    k = gi.shape[1]
    return {"recall_at_10": float(np.mean([len(set(f[:k]) & set(t)) / k for f, t in zip(found, gi)])),
            "top1_in_10": float(np.mean([t[0] in set(f[:k]) for f, t in zip(found, gi)]))}


def calibrate(base, queries, args, faiss, index_mod) -> dict:
    """Grow a quarter of the real chunks to the real size with each sigma; compare with the real data."""
    n, quarter = len(base), base[: len(base) // 4]
    nb = knn_graph(quarter)
    out = {"real_n": n, "grown_from": len(quarter), "rows": []}
    code = args.codes[0]
    for sigma in [None, *args.sigmas]:
        x = base if sigma is None else scaled_block(quarter, nb, 0, n, sigma, 1).astype(np.float32)
        d, gi = faiss.knn(queries, np.ascontiguousarray(x, np.float32), 10)
        index, _ = index_mod.train_index(x[index_mod.training_rows(n, f"IVF{args.nlist_cal},{code}", None, 0)],
                                         f"IVF{args.nlist_cal},{code}", n)
        index.add(np.ascontiguousarray(x, np.float32))
        faiss.extract_index_ivf(index).nprobe = 16
        found = index.search(queries, 10)[1]
        reranked = index_mod.rescore(queries, index.search(queries, 100)[1], x.astype(np.float16), 10)[1]
        row = {"data": "real" if sigma is None else "grown", "sigma": sigma,
               "median_d1": float(np.median(np.sqrt(np.maximum(d[:, 0], 0)))),
               "median_d10": float(np.median(np.sqrt(np.maximum(d[:, 9], 0)))),
               "recall_pq": scores(found, gi)["recall_at_10"], "recall_rerank100": scores(reranked, gi)["recall_at_10"]}
        out["rows"].append(row)
        log(f"calibrate {row}")
    return out


def render(r: dict) -> str:
    """The markdown tables of a result (as in benchmarks/RESULTS-retrieval.md)."""
    out = ["| chunks | data | index | bytes/chunk (codes+id) | index file | nprobe | rerank | QPS batched | recall@10 "
           "| top1@10 | load |", "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for x in r["rows"]:
        out.append(f"| {x['n']:,} | {x['data']} | `{x['factory']}` | {x['bytes_per_chunk']} "
                   f"| {x['index_file_bytes'] / 1e6:,.1f} MB | {x['nprobe']} | {x['rerank'] or '-'} "
                   f"| {x['qps_batched']:,.0f} | {x['recall_at_10']:.3f} | {x['top1_in_10']:.3f} | {x['load']:.1f} |")
    out += ["", f"| chunks | index | train vectors | train (s) | add vectors/s ({r['args']['threads']} threads) |",
            "| ---: | --- | ---: | ---: | ---: |"]
    seen = set()
    for x in r["rows"]:
        if (x["n"], x["factory"]) not in seen:
            seen.add((x["n"], x["factory"]))
            out.append(f"| {x['n']:,} | `{x['factory']}` | {x['train_vectors']:,} | {x['train_s']:.1f} "
                       f"| {x['add_vectors_per_s']:,.0f} |")
    return "\n".join(out)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--real", type=Path, help="folder written by benchmarks/real_embeddings.py")
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 380_000, 1_000_000, 10_000_000])
    p.add_argument("--codes", nargs="+", default=["PQ32np"],
                   help="FAISS code strings after 'IVF{nlist},', or a whole factory string with '{ivf}' "
                        "where the IVF part goes ('OPQ32,{ivf},PQ32np')")
    p.add_argument("--nprobes", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--rerank", type=int, nargs="*", default=[100, 200], help="candidates re-scored exactly")
    p.add_argument("--sigma", type=float, default=0.01, help="noise per dimension of generated points (--calibrate)")
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.005, 0.01], help="tried by --calibrate")
    p.add_argument("--calibrate", action="store_true")
    p.add_argument("--mmap", action="store_true", help="search the saved index with on-disk inverted lists")
    p.add_argument("--threads", type=int, default=2, help="FAISS threads (training, adding, searching)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--scratch", default="/work/scratch-retro")
    p.add_argument("--json", default=None)
    p.add_argument("--render", default=None, metavar="JSON", help="print the markdown tables of a saved result")
    args = p.parse_args(argv)
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return {}
    if args.real is None:
        p.error("--real FOLDER (made by benchmarks/real_embeddings.py) is required")
    args.nlist = {1_000_000: 1024, 10_000_000: 4096}
    import faiss

    from attention_zoo_plugins.retro import index as index_mod

    Path(args.scratch).mkdir(parents=True, exist_ok=True)
    real = np.load(args.real / "embeddings.npy")
    base, queries = real[1000:], np.ascontiguousarray(real[:1000])
    args.n_real = len(base)
    args.nlist_cal = index_mod.default_nlist(len(base))
    result = {"machine": {"python": platform.python_version(), "faiss": faiss.__version__, "cpus": os.cpu_count(),
                          "numpy": np.__version__, "cpu": platform.processor() or platform.machine()},
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_start": os.getloadavg()[0],
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "nlist"},
              "embedding": json.loads((args.real / "info.json").read_text()), "rows": []}
    faiss.omp_set_num_threads(args.threads)
    if args.calibrate:
        result["calibration"] = calibrate(base, queries, args, faiss, index_mod)
    else:
        nb = None
        if max(args.sizes) > len(base):
            cached = Path(args.scratch) / f"knn-graph-{len(base)}.npy"  # 5 minutes at 380,000 on 2 cores
            nb = np.load(cached) if cached.exists() else knn_graph(base)
            np.save(cached, nb)
        for n in args.sizes:
            vec_path, gi = make_vectors(n, base, nb, queries, args, faiss)
            for code in args.codes:
                result["rows"] += bench_index(n, code, vec_path, gi, queries, args, faiss, index_mod)
                if args.json:
                    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
            vec_path.unlink()
    result["load_end"] = os.getloadavg()[0]
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()

"""Benchmark the RETRO retrieval database and the ``retro`` layer.

Three sections (all on by default; pick with ``--only``):

``index``
    For each size (default 100,000 and 1,000,000 chunks) of synthetic, clustered,
    L2-normalised embeddings of width 384 (all-MiniLM-L6-v2's width): build time
    (train + add) of the exact flat index and of IVF, queries per second (one
    batch of ``--queries`` queries, and one query at a time), and recall@k of IVF
    against the exact flat results for a sweep of ``nprobe``.
``e2e``
    :meth:`RetroDatabase.build` end to end on synthetic byte documents (chunking,
    the default hashing embedder, the index) for ``--e2e-chunks`` chunks, then
    save and load times.
``layer``
    The ``retro`` layer against a bare chunked-SDPA layer written below (the same
    math, the same weights, no validation or masks), and against retro-pytorch's
    ``ChunkedCrossAttention`` when it can be imported, at RETRO's shape: B=2,
    N=2048, chunks of 64, K=2 neighbours of R=128 tokens, width 512, 8 heads of 64.
    Interleaved rounds, medians; forward (no_grad) and forward+backward.

The synthetic embeddings: one of 100 topic centres, plus a point of a
16-dimensional subspace, plus a little isotropic noise, normalised: low intrinsic
dimension inside a 384-wide space, like sentence embeddings (uniform random
vectors would be the worst case for IVF and unlike real data; well separated
clusters would flatter it). With ``nlist = sqrt(n)`` this gives the familiar
recall curve of SIFT-like data (about 0.2 at nprobe=1, 0.85 at 16, 0.99 at 64).
Queries are fresh draws from the same distribution.

Run::

    python benchmarks/retrieval.py                      # everything (several minutes)
    python benchmarks/retrieval.py --quick              # 10k and 100k chunks, fewer rounds
    python benchmarks/retrieval.py --only layer --rounds 21
    python benchmarks/retrieval.py --json out.json

Results of a run on the project's machine are in benchmarks/RESULTS-retrieval.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data


def synthetic_embeddings(n: int, dim: int, *, seed: int, topics: int = 100, latent: int = 16,
                         noise: float = 0.3, block: int = 100_000) -> np.ndarray:
    """Unit vectors ``(n, dim)`` float32 (see the module docstring): a topic centre,
    plus a point of a ``latent``-dimensional subspace shared by all topics, plus a
    little isotropic noise; then L2-normalised."""
    rng = np.random.default_rng(1234)  # the same topics and subspace for database and queries
    scale = np.float32(1.0 / np.sqrt(dim))
    centres = rng.standard_normal((topics, dim), dtype=np.float32) * scale
    basis = rng.standard_normal((latent, dim), dtype=np.float32) * scale
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        x = centres[rng.integers(0, topics, size=hi - lo)]
        x += rng.standard_normal((hi - lo, latent), dtype=np.float32) @ basis
        x += noise * scale * rng.standard_normal((hi - lo, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[lo:hi] = x
    return out


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def qps(index, queries: np.ndarray, k: int, single: int) -> tuple[float, float, tuple]:
    """(batched QPS, one-at-a-time QPS, batched results)."""
    index.search(queries[:8], k)  # warm
    res, dt = timed(index.search, queries, k)
    t0 = time.perf_counter()
    done = 0
    while done < single and (done < 10 or time.perf_counter() - t0 < 10.0):  # at most ~10 s
        index.search(queries[done : done + 1], k)
        done += 1
    dt1 = time.perf_counter() - t0
    return len(queries) / dt, done / dt1, res


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true k nearest found among the returned k."""
    k = truth.shape[1]
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found.tolist(), truth.tolist())]))


# --------------------------------------------------------------------------- sections


def bench_index(sizes, dim, n_queries, k, nprobes, single, nlist_for) -> list[dict]:
    import faiss

    from attention_zoo_plugins.retro.database import build_index, default_nlist, default_nprobe

    rows = []
    queries = synthetic_embeddings(n_queries, dim, seed=999)
    for n in sizes:
        log(f"[index] {n:,} x {dim}: generating embeddings")
        emb = synthetic_embeddings(n, dim, seed=n)
        (flat, _), t_flat = timed(build_index, emb, "flat")
        q_b, q_1, (_, truth) = qps(flat, queries, k, single)
        rows.append({"size": n, "index": "flat", "build_s": round(t_flat, 3), "qps_batch": round(q_b, 1),
                     "qps_single": round(q_1, 1), "recall_at_k": 1.0, "k": k})
        log(f"[index] flat: build {t_flat:.2f}s, {q_b:,.0f} q/s batched, {q_1:,.0f} q/s single")
        del flat
        gc.collect()
        nlist = nlist_for(n) if nlist_for else default_nlist(n)
        (ivf, info), t_ivf = timed(build_index, emb, "ivf", nlist=nlist, nprobe=1)
        del emb
        gc.collect()
        log(f"[index] ivf nlist={nlist}: build {t_ivf:.2f}s (train + add)")
        ivf_index = faiss.extract_index_ivf(ivf)
        sweep = sorted({p for p in (*nprobes, default_nprobe(nlist)) if p <= nlist})
        for p in sweep:
            ivf_index.nprobe = p
            q_b, q_1, (_, got) = qps(ivf, queries, k, single)
            r = recall(got, truth)
            rows.append({"size": n, "index": "ivf", "nlist": nlist, "nprobe": p,
                         "default_nprobe": p == default_nprobe(nlist), "build_s": round(t_ivf, 3),
                         "qps_batch": round(q_b, 1), "qps_single": round(q_1, 1), "recall_at_k": round(r, 4), "k": k})
            log(f"[index] ivf nprobe={p}: {q_b:,.0f} q/s batched, {q_1:,.0f} q/s single, recall@{k} {r:.3f}")
        del ivf
        gc.collect()
    return rows


def bench_e2e(n_chunks: int, chunk_size: int = 64) -> dict:
    from attention_zoo_plugins.retro import RetroDatabase

    rng = np.random.default_rng(0)
    # documents of 1..32 chunks of bytes drawn from a small "word" vocabulary (text-like n-grams)
    words = [bytes(rng.integers(97, 123, size=rng.integers(2, 9))) for _ in range(5000)]
    docs, total = [], 0
    while total < n_chunks:
        n_c = int(min(rng.integers(1, 33), n_chunks - total))
        text = b" ".join(words[i] for i in rng.integers(0, len(words), size=n_c * chunk_size // 5 + 8))
        docs.append(np.frombuffer(text[: n_c * chunk_size], dtype=np.uint8).astype(np.int32))
        total += n_c
    log(f"[e2e] {len(docs):,} documents, {n_chunks:,} chunks of {chunk_size}: building")
    db, t_build = timed(RetroDatabase.build, docs, chunk_size=chunk_size, progress=True)
    with tempfile.TemporaryDirectory() as tmp:
        _, t_save = timed(db.save, Path(tmp) / "db")
        size = sum(p.stat().st_size for p in (Path(tmp) / "db").iterdir())
        loaded, t_load = timed(RetroDatabase.load, Path(tmp) / "db")
    seqs = np.stack([np.resize(d, 2048) for d in docs[:8]])
    _, t_ret = timed(loaded.retrieve, seqs, 2, exclude_docs=np.arange(8))
    row = {"chunks": db.n_chunks, "docs": db.n_docs, "index": db.index_info, "embedder": db.embedder_cfg,
           "build_s": round(t_build, 2), "save_s": round(t_save, 2), "load_s": round(t_load, 2),
           "disk_mib": round(size / 2**20, 1), "retrieve_8x2048_ms": round(1000 * t_ret, 1)}
    log(f"[e2e] {row}")
    return row


def bare_chunked_sdpa(layer, x, context):
    """The same math as the ``retro`` layer, by hand: shift by m-1, fold the chunks
    into the batch, one SDPA call, unfold, shift back (the paper's listing)."""
    import torch.nn.functional as F

    m, h = layer.chunk_size, layer.heads
    b, n, _ = x.shape
    _, l, k, r, dc = context.shape
    q = F.linear(x, layer.to_q.weight)
    q = F.pad(q[:, m - 1 : l * m], (0, 0, 0, m - 1)).reshape(b * l, m, h, -1).transpose(1, 2)
    c = context.reshape(b * l, k * r, dc)
    kk = F.linear(c, layer.to_k.weight).view(b * l, k * r, h, -1).transpose(1, 2)
    vv = F.linear(c, layer.to_v.weight).view(b * l, k * r, h, -1).transpose(1, 2)
    o = F.scaled_dot_product_attention(q, kk, vv).transpose(1, 2).reshape(b, l * m, -1)
    o = F.linear(o, layer.to_out[0].weight, layer.to_out[0].bias)
    return F.pad(o, (0, 0, m - 1, n - l * m))[:, :n]


def _retro_pytorch_cca(path: str | None):
    """retro-pytorch's ChunkedCrossAttention, or None. Its package __init__ pulls
    autofaiss (training code); the layer itself needs only torch and einops, so
    the retrieval module is stubbed when the package cannot import whole."""
    import importlib
    import importlib.util
    import types

    try:
        return importlib.import_module("retro_pytorch.retro_pytorch")
    except Exception:
        pass
    if path is None:
        return None
    pkg = Path(path) / "retro_pytorch"
    if not (pkg / "retro_pytorch.py").is_file():
        return None
    stub = types.ModuleType("retro_pytorch")
    stub.__path__ = [str(pkg)]
    retrieval = types.ModuleType("retro_pytorch.retrieval")
    retrieval.BERT_VOCAB_SIZE = 28996
    sys.modules.setdefault("retro_pytorch", stub)
    sys.modules.setdefault("retro_pytorch.retrieval", retrieval)
    spec = importlib.util.spec_from_file_location("retro_pytorch.retro_pytorch", pkg / "retro_pytorch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def bench_layer(rounds: int, retro_pytorch_path: str | None) -> list[dict]:
    import torch

    import zoo

    torch.manual_seed(0)
    b, n, m, k, r, dim, heads, dh = 2, 2048, 64, 2, 128, 512, 8, 64
    layer = zoo.create("retro", query_dim=dim, context_dim=dim, heads=heads, dim_head=dh, chunk_size=m)
    x = torch.randn(b, n, dim)
    ctx = torch.randn(b, n // m, k, r, dim)
    with torch.no_grad():
        err = (layer(x, ctx) - bare_chunked_sdpa(layer, x, ctx))[:, m - 1:].abs().max().item()
    log(f"[layer] zoo vs bare max |diff| {err:.2e} (positions >= m-1)")
    cands = {"zoo": lambda a, c: layer(a, c), "bare": lambda a, c: bare_chunked_sdpa(layer, a, c)}
    params = {"zoo": list(layer.parameters()), "bare": list(layer.parameters())}
    rp = _retro_pytorch_cca(retro_pytorch_path)
    if rp is not None:
        cca = rp.ChunkedCrossAttention(chunk_size=m, dim=dim, heads=heads, dim_head=dh, context_dim=dim)
        rot = rp.RotaryEmbedding(min(dh, 32))
        q_pos = rot(m, device=x.device, offset=m - 1)
        k_pos = rot(r, device=x.device)
        cands["retro-pytorch"] = lambda a, c: cca(a, context=c, pos_emb=(q_pos, k_pos))
        params["retro-pytorch"] = list(cca.parameters())
    rows = []
    for mode in ("fwd", "fwd+bwd"):
        xg, cg = x.clone().requires_grad_(True), ctx.clone().requires_grad_(True)
        go = torch.randn_like(x)

        def make(name, f):
            if mode == "fwd":
                def run():
                    with torch.no_grad():
                        f(x, ctx)
            else:
                def run():
                    f(xg, cg).backward(go)
                    xg.grad = cg.grad = None
                    for p in params[name]:
                        p.grad = None
            return run

        fns = {name: make(name, f) for name, f in cands.items()}
        for f in fns.values():
            f()
        times = {name: [] for name in fns}
        for i in range(rounds):
            order = list(fns) if i % 2 == 0 else list(fns)[::-1]
            for name in order:
                t0 = time.perf_counter()
                fns[name]()
                times[name].append(time.perf_counter() - t0)
        med = {name: statistics.median(v) for name, v in times.items()}
        for name, v in med.items():
            rows.append({"impl": name, "pass": mode, "ms": round(1000 * v, 1), "ratio_to_bare": round(v / med["bare"], 3)})
        log(f"[layer] {mode}: " + ", ".join(f"{nm} {1000 * v:.1f} ms ({v / med['bare']:.2f}x)" for nm, v in med.items()))
    return rows


# --------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", choices=("index", "e2e", "layer"), help="sections to run (repeatable)")
    ap.add_argument("--sizes", default="100000,1000000", help="database sizes in chunks (comma-separated)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=1000, help="queries for QPS and recall")
    ap.add_argument("--single", type=int, default=200, help="queries timed one at a time (at most ~10 s)")
    ap.add_argument("-k", type=int, default=10, help="neighbours per query (recall@k)")
    ap.add_argument("--nprobe", default="1,4,16,64", help="IVF nprobe sweep (the default nprobe is added)")
    ap.add_argument("--nlist", type=int, default=None, help="IVF lists (default: about sqrt(size))")
    ap.add_argument("--e2e-chunks", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=11, help="interleaved rounds for the layer timing")
    ap.add_argument("--retro-pytorch", default=None, metavar="DIR",
                    help="a directory holding the retro_pytorch package (e.g. an unpacked wheel), if not installed")
    ap.add_argument("--faiss-threads", type=int, default=None,
                    help="faiss.omp_set_num_threads (default: FAISS's own, one per core)")
    ap.add_argument("--blas-threshold", type=int, default=None,
                    help="faiss.cvar.distance_compute_blas_threshold: batches of at least this many queries "
                         "use BLAS for exact distances (FAISS 1.15 default 128000; 20 in older releases)")
    ap.add_argument("--quick", action="store_true", help="sizes 10k,100k, e2e 20k chunks, 5 rounds")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.e2e_chunks, args.rounds, args.queries, args.single = "10000,100000", 20_000, 5, 500, 100
    only = set(args.only or ("index", "e2e", "layer"))
    import os

    import faiss
    import torch

    if args.faiss_threads:
        faiss.omp_set_num_threads(args.faiss_threads)
    if args.blas_threshold:
        faiss.cvar.distance_compute_blas_threshold = args.blas_threshold
    out: dict = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                             "faiss": faiss.__version__, "numpy": np.__version__,
                             "cpu": platform.processor() or platform.machine(),
                             "torch_threads": torch.get_num_threads(), "faiss_threads": faiss.omp_get_max_threads(),
                             "blas_threshold": faiss.cvar.distance_compute_blas_threshold,
                             "load_average_at_start": [round(v, 2) for v in os.getloadavg()]},
                 "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if "index" in only:
        sizes = [int(s) for s in args.sizes.split(",") if s]
        nprobes = [int(p) for p in args.nprobe.split(",") if p]
        out["index"] = bench_index(sizes, args.dim, args.queries, args.k, nprobes, args.single,
                                   (lambda n: args.nlist) if args.nlist else None)
    if "e2e" in only:
        out["e2e"] = bench_e2e(args.e2e_chunks)
    if "layer" in only:
        out["layer"] = bench_layer(args.rounds, args.retro_pytorch)
    out["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    text = json.dumps(out, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return out


if __name__ == "__main__":
    main()

"""Zoo layers against the same layer in other libraries, when those are installed.

    python benchmarks/peers.py            # the issue's shapes, float32, 7 rounds
    python benchmarks/peers.py --quick    # short sequences (smoke run)

Peers (each skipped with a message when its library is missing or fails to import):

- diffusers ``Attention`` (``AttnProcessor2_0``, SDPA) vs ``cross`` at the Stable
  Diffusion shape: the state dict loads strictly, so the weights are the same.
- x-transformers ``Attention(num_mem_kv=16)`` vs ``persistent`` at the long shape:
  ``mem_k``/``mem_v`` copy into ``memory_k``/``memory_v``; both the default path
  (``flash=False``) and ``flash=True``.
- retro-pytorch ``ChunkedCrossAttention`` vs ``retro`` at the RETRO shape: it adds
  rotary embeddings and a learned null key/value, so it computes a different
  function; only times are compared.

Every peer is timed interleaved with the zoo layer and the bare SDPA baseline of
the variant's ``BenchSpec`` (its ``baseline``) in the same rounds; outputs are checked equal where the
mathematics is the same. Results: a table on stdout and
``benchmarks/results/peers-cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

import zoo
from zoo.bench.cases import build as build_case
from zoo.bench.cases import layer_fields, workload
from zoo.bench.timing import interleaved

HERE = Path(__file__).resolve().parent


def _workload(variant: str, key: str, size: str):
    """The variant's own benchmark workload named ``key`` (from its spec's BenchSpec)."""
    spec = zoo.get_variant(variant)
    return next(s for s in spec.bench.shapes if s.name == key).at(size)


def _diffusers(wl, dtype):
    from diffusers.models.attention_processor import Attention

    cfg = wl.config
    peer = Attention(query_dim=cfg["query_dim"], cross_attention_dim=cfg["context_dim"], heads=cfg["heads"],
                     dim_head=cfg["dim_head"], bias=False, out_bias=True)
    layer = zoo.create("cross", **layer_fields(zoo.get_variant("cross"), wl))
    layer.load_state_dict(peer.state_dict(), strict=True)
    peer, layer = peer.to(dtype), layer.to(dtype)
    return "cross", layer, lambda x, c: peer(x, encoder_hidden_states=c), list(peer.parameters()), True


def _x_transformers(flash):
    def build(wl, dtype):
        from x_transformers.x_transformers import Attention

        cfg = wl.config
        peer = Attention(dim=cfg["query_dim"], dim_context=cfg["context_dim"], heads=cfg["heads"],
                         dim_head=cfg["dim_head"], num_mem_kv=16, flash=flash)
        fields = layer_fields(zoo.get_variant("persistent"), wl)
        layer = zoo.create("persistent", **fields, num_memory=16, out_bias=False)
        with torch.no_grad():
            for ours, theirs in (("to_q", "to_q"), ("to_k", "to_k"), ("to_v", "to_v"), ("to_out.0", "to_out")):
                layer.get_submodule(ours).weight.copy_(peer.get_submodule(theirs).weight)
            layer.memory_k.copy_(peer.mem_k)
            layer.memory_v.copy_(peer.mem_v)
        peer, layer = peer.to(dtype), layer.to(dtype)
        return "persistent", layer, lambda x, c: peer(x, context=c), list(peer.parameters()), True

    return build


def _import_retro_pytorch_layers():
    """``retro_pytorch.retro_pytorch`` (the layers). Its package ``__init__`` imports the
    retrieval pipeline (autofaiss, which pins numpy < 2); when that is missing, load
    the layer module alone: from the retrieval module it needs one constant."""
    try:
        from retro_pytorch import retro_pytorch as mod

        return mod
    except ImportError as exc:
        if "autofaiss" not in str(exc) and "faiss" not in str(exc):
            raise
    import importlib.util
    import types

    spec = importlib.util.find_spec("retro_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("retro_pytorch is not installed")
    root = Path(list(spec.submodule_search_locations)[0])
    for name in [n for n in sys.modules if n == "retro_pytorch" or n.startswith("retro_pytorch.")]:
        del sys.modules[name]
    pkg = types.ModuleType("retro_pytorch")
    pkg.__path__ = [str(root)]
    retrieval = types.ModuleType("retro_pytorch.retrieval")
    retrieval.BERT_VOCAB_SIZE = 28996  # the only name retro_pytorch.retro_pytorch takes from it
    sys.modules.update({"retro_pytorch": pkg, "retro_pytorch.retrieval": retrieval})
    layer_spec = importlib.util.spec_from_file_location("retro_pytorch.retro_pytorch", root / "retro_pytorch.py")
    mod = importlib.util.module_from_spec(layer_spec)
    sys.modules["retro_pytorch.retro_pytorch"] = mod
    layer_spec.loader.exec_module(mod)
    return mod


def _retro_pytorch(wl, dtype):
    rp = _import_retro_pytorch_layers()
    ChunkedCrossAttention, RotaryEmbedding = rp.ChunkedCrossAttention, rp.RotaryEmbedding

    cfg = wl.config
    peer = ChunkedCrossAttention(chunk_size=cfg["chunk_size"], dim=cfg["query_dim"], heads=cfg["heads"],
                                 dim_head=cfg["dim_head"], context_dim=cfg["context_dim"]).to(dtype)
    rotary = RotaryEmbedding(cfg["dim_head"])
    layer = zoo.create("retro", **layer_fields(zoo.get_variant("retro"), wl)).to(dtype)
    q_pos = rotary(cfg["chunk_size"], device="cpu").to(dtype)
    k_pos = rotary(wl.context_len // 2, device="cpu").to(dtype)  # R: context_len is K * R with K = 2

    def call(x, c):
        # retro-pytorch takes neighbours as (B, L, K, R, Dc), like the zoo
        return peer(x, context=c, pos_emb=(q_pos, k_pos))

    return "retro", layer, call, list(peer.parameters()), False


PEERS = {
    "diffusers Attention": ("cross", "sd", _diffusers),
    "x-transformers Attention(num_mem_kv=16)": ("persistent", "long", _x_transformers(False)),
    "x-transformers Attention(num_mem_kv=16, flash=True)": ("persistent", "long", _x_transformers(True)),
    "retro-pytorch ChunkedCrossAttention": ("retro", "retro", _retro_pytorch),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--json", default=str(HERE / "results" / "peers-cpu.json"))
    args = ap.parse_args(argv)
    size = "quick" if args.quick else "full"
    repeat = args.repeat or (3 if args.quick else 7)
    rows, skipped = [], []
    for dtype_name in args.dtype.split(","):
        dtype = getattr(torch, dtype_name)
        for peer_name, (owner, key, build) in PEERS.items():
            try:
                wl = _workload(owner, key, size)
                torch.manual_seed(0)
                variant, layer, peer_call, peer_params, same_math = build(wl, dtype)
            except Exception as exc:  # noqa: BLE001 - an optional peer must not stop the run
                skipped.append(f"{peer_name}: {type(exc).__name__}: {exc}")
                print(f"skip {peer_name}: {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            spec = zoo.get_variant(variant)
            bare = spec.bench.baseline
            _, inputs = build_case(spec, wl, dtype=dtype)
            x, c = inputs["x"], inputs["context"]
            layer.eval()
            diff = None
            try:
                with torch.no_grad():
                    theirs = peer_call(x, c)
                    if same_math:
                        diff = (layer(x, c).float() - theirs.float()).abs().max().item()
            except Exception as exc:  # noqa: BLE001
                skipped.append(f"{peer_name} ({dtype_name}): {type(exc).__name__}: {exc}")
                print(f"skip {peer_name} ({dtype_name}): {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            params = list(layer.parameters())
            for p in ("fwd", "fwd+bwd"):
                print(f"{peer_name} {key} {dtype_name} {p} ...", file=sys.stderr)
                s = interleaved({
                    "zoo": workload(layer, params, inputs, p),
                    "bare": workload(lambda **kw: bare(layer, **kw), params, inputs, p),
                    "peer": workload(lambda x, context: peer_call(x, context), peer_params, inputs, p),
                }, repeat=repeat, warmup=1)
                rows.append({
                    "peer": peer_name, "variant": variant, "shape": key, "dtype": dtype_name, "pass": p,
                    "zoo_ms": round(s["zoo"].ms, 3), "baseline_ms": round(s["bare"].ms, 3),
                    "peer_ms": round(s["peer"].ms, 3),
                    "peer_over_baseline": round(s["peer"].median / s["bare"].median, 3),
                    "zoo_over_baseline": round(s["zoo"].median / s["bare"].median, 3),
                    "peer_over_zoo": round(s["peer"].median / s["zoo"].median, 3),
                    "max_abs_diff": diff,
                })
    from zoo.text import format_table

    print(format_table(("peer", "shape", "dtype", "pass", "zoo ms", "bare ms", "peer ms", "peer/bare",
                        "zoo/bare", "same output"),
                       [(r["peer"], r["shape"], r["dtype"], r["pass"], f"{r['zoo_ms']:.1f}", f"{r['baseline_ms']:.1f}",
                         f"{r['peer_ms']:.1f}", f"{r['peer_over_baseline']:.2f}", f"{r['zoo_over_baseline']:.2f}",
                         "-" if r["max_abs_diff"] is None else f"max diff {r['max_abs_diff']:.1e}") for r in rows],
                       wrap_last=False))
    for s in skipped:
        print(f"skipped: {s}")
    doc = {"schema": "zoo-bench-peers/1", "torch": torch.__version__, "machine": platform.platform(),
           "threads": torch.get_num_threads(), "size": size, "repeat": repeat, "results": rows, "skipped": skipped}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

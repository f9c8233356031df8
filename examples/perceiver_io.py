"""A tiny Perceiver IO that learns to count, built from the zoo's ``perceiver`` layer.

Jaegle et al., "Perceiver IO: A General Architecture for Structured Inputs & Outputs",
2021, arXiv:2107.14795. The three steps of the architecture, each one ``perceiver`` layer:

1. **Encode**: a learned latent array ``(L, D)`` reads the input array ``(M, D)``
   (cross-attention; the cost is L x M, linear in the input size).
2. **Process**: the latents attend to each other (``context=None``: Perceiver IO's
   latent self-attention block, the same module).
3. **Decode**: output queries, one per thing to predict, read the latents.

The task: the input is a bag of ``M`` symbols from a vocabulary of ``V``; the output
query for symbol ``s`` must say how many times ``s`` occurs (a class in 0..M). The
answer does not depend on the order of the inputs, and neither does the model: the
input array carries no positions and the ``perceiver`` layer ignores input order.

Run it::

    python examples/perceiver_io.py               # 300 steps, about 20 s on one core
    python examples/perceiver_io.py --steps 50
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import zoo


class TinyPerceiverIO(nn.Module):
    """Encode (latents read the inputs), process (latent self-attention), decode (queries read latents)."""

    def __init__(self, vocab: int, max_count: int, width: int = 32, latents: int = 8, heads: int = 4):
        super().__init__()
        attn = {"heads": heads, "dim_head": width // heads, "widening_factor": 2}
        self.embed = nn.Embedding(vocab, width)
        self.latents = nn.Parameter(torch.randn(latents, width) * 0.5)  # the learned latent array
        self.encode = zoo.create("perceiver", query_dim=width, **attn)
        self.process = zoo.create("perceiver", query_dim=width, **attn)
        self.output_queries = nn.Parameter(torch.randn(vocab, width) * 0.5)  # one per symbol
        self.decode = zoo.create("perceiver", query_dim=width, **attn)
        self.head = nn.Linear(width, max_count + 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b = tokens.shape[0]
        inputs = self.embed(tokens)  # (B, M, D): the input array
        z = self.encode(self.latents.expand(b, -1, -1), inputs)  # (B, L, D): L latents whatever M is
        z = self.process(z)  # (B, L, D): latent self-attention
        out = self.decode(self.output_queries.expand(b, -1, -1), z)  # (B, V, D)
        return self.head(out)  # (B, V, M + 1): logits of each symbol's count


def batch(size: int, vocab: int, length: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    # skewed symbol frequencies, so that counts vary a lot from symbol to symbol
    probs = torch.rand(size, vocab, generator=generator) ** 2
    tokens = torch.multinomial(probs, length, replacement=True, generator=generator)
    counts = torch.nn.functional.one_hot(tokens, vocab).sum(1)  # (B, V)
    return tokens, counts


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--vocab", type=int, default=6)
    parser.add_argument("--length", type=int, default=12, help="input array length M")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = TinyPerceiverIO(args.vocab, args.length)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    tokens, counts = batch(2, args.vocab, args.length, gen)
    print(f"input array {tuple(tokens.shape)} -> embedded {(2, args.length, 32)}; latents "
          f"{tuple(model.latents.shape)}; output queries {tuple(model.output_queries.shape)}; "
          f"logits {tuple(model(tokens).shape)}")

    losses, start = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        tokens, counts = batch(64, args.vocab, args.length, gen)
        logits = model(tokens)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), counts.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step == 1 or step % max(1, args.steps // 10) == 0:
            acc = (logits.argmax(-1) == counts).float().mean().item()
            print(f"step {step:4d}  loss {loss.item():.3f}  exact-count accuracy {acc:.2f}")

    model.eval()
    with torch.no_grad():
        tokens, counts = batch(512, args.vocab, args.length, gen)
        accuracy = (model(tokens).argmax(-1) == counts).float().mean().item()
        shuffled = model(tokens[:, torch.randperm(args.length, generator=gen)])
        order_free = (shuffled - model(tokens)).abs().max().item()
    print(f"held-out exact-count accuracy {accuracy:.2f} (chance about {1 / (args.length + 1):.2f}); "
          f"shuffling the inputs changes the logits by {order_free:.1e}; {time.perf_counter() - start:.1f} s")
    return {"losses": losses, "accuracy": accuracy, "order_free": order_free}


if __name__ == "__main__":
    main()

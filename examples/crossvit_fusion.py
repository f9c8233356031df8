"""A two-branch CrossViT with the zoo's ``crossvit`` layer as its fusion block.

Chen, Fan, Panda, "CrossViT: Cross-Attention Multi-Scale Vision Transformer for Image
Classification", 2021, arXiv:2103.14899. An image is cut into patches twice: small
patches (many tokens, narrow) and large patches (few tokens, wide). Each branch runs its
own self-attention; then the fusion block exchanges information through the CLS tokens
only, in both directions:

- the small branch's CLS, projected to the large branch's width, attends to itself and
  the large branch's *patch* tokens (``crossvit(query_dim=Ds, context_dim=Dl)``), and
- the large branch's CLS does the same with the small branch's patches.

Each layer returns a tensor of its branch's shape that is zero except row 0, so
``branch + layer(branch, other)`` updates the CLS token and leaves the patches as they
are. The cost is linear in the number of patches (one query per branch).

The walk-through prints every shape; then the model learns a small task on synthetic
8 x 8 images (which quadrant is brightest) and prints its loss going down.

Run it::

    python examples/crossvit_fusion.py             # 150 steps, about 10 s on one core
    python examples/crossvit_fusion.py --steps 30
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import zoo


class Branch(nn.Module):
    """Patch embedding, CLS token, positions, one self-attention block (a ``cross`` layer with
    ``context=None``) and a feed-forward layer."""

    def __init__(self, patch: int, width: int, image: int = 8, heads: int = 2):
        super().__init__()
        self.patch = patch
        tokens = (image // patch) ** 2
        self.embed = nn.Linear(patch * patch, width)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.randn(1, 1 + tokens, width) * 0.1)
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = zoo.create("cross", query_dim=width, heads=heads, dim_head=width // heads)
        self.ff = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        b, h, w = images.shape
        p = self.patch
        patches = images.reshape(b, h // p, p, w // p, p).transpose(2, 3).reshape(b, -1, p * p)
        x = torch.cat([self.cls.expand(b, -1, -1), self.embed(patches)], dim=1)
        return x + self.pos

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ff(self.norm2(x))


class FusionBlock(nn.Module):
    """CrossViT's cross-attention fusion, both directions, from the tokens before the exchange."""

    def __init__(self, small: int, large: int, heads: int = 2, dim_head: int = 8):
        super().__init__()
        self.small_reads_large = zoo.create("crossvit", query_dim=small, context_dim=large, heads=heads,
                                            dim_head=dim_head)
        self.large_reads_small = zoo.create("crossvit", query_dim=large, context_dim=small, heads=heads,
                                            dim_head=dim_head)

    def forward(self, xs: torch.Tensor, xl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return xs + self.small_reads_large(xs, xl), xl + self.large_reads_small(xl, xs)


class TinyCrossViT(nn.Module):
    def __init__(self, classes: int = 4, small: int = 16, large: int = 24):
        super().__init__()
        self.small, self.large = Branch(2, small), Branch(4, large)
        self.fusion = FusionBlock(small, large)
        self.head_s, self.head_l = nn.Linear(small, classes), nn.Linear(large, classes)

    def forward(self, images: torch.Tensor, verbose: bool = False) -> torch.Tensor:
        xs, xl = self.small.tokens(images), self.large.tokens(images)
        xs, xl = self.small(xs), self.large(xl)
        new_s, new_l = self.fusion(xs, xl)
        if verbose:
            b = images.shape[0]
            print(f"images                    {tuple(images.shape)}")
            print(f"small branch (2x2 patches) {tuple(xs.shape)}: CLS + {xs.shape[1] - 1} patch tokens, width "
                  f"{xs.shape[2]}")
            print(f"large branch (4x4 patches) {tuple(xl.shape)}: CLS + {xl.shape[1] - 1} patch tokens, width "
                  f"{xl.shape[2]}")
            delta = self.fusion.small_reads_large(xs, xl)
            print(f"crossvit(small CLS -> large patches): query {(b, 1, xl.shape[2])} (CLS projected to the "
                  f"large width), keys/values {(b, xl.shape[1], xl.shape[2])} (itself + {xl.shape[1] - 1} "
                  f"large patches), output {tuple(delta.shape)}, nonzero rows: "
                  f"{int(delta.abs().sum(-1).gt(0).sum(1)[0])}")
            print(f"after fusion: small {tuple(new_s.shape)}, large {tuple(new_l.shape)}; patch tokens "
                  f"unchanged: {torch.equal(new_s[:, 1:], xs[:, 1:]) and torch.equal(new_l[:, 1:], xl[:, 1:])}")
        return (self.head_s(new_s[:, 0]) + self.head_l(new_l[:, 0])) / 2


def batch(size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """8 x 8 noise with one brighter 4 x 4 quadrant; the label is that quadrant."""
    images = torch.rand(size, 8, 8, generator=generator)
    labels = torch.randint(0, 4, (size,), generator=generator)
    for q in range(4):
        r, c = divmod(q, 2)
        images[labels == q, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 0.3
    return images, labels


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = TinyCrossViT()
    with torch.no_grad():
        model(batch(2, gen)[0], verbose=True)

    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses, start = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        images, labels = batch(64, gen)
        logits = model(images)
        loss = nn.functional.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step == 1 or step % max(1, args.steps // 10) == 0:
            acc = (logits.argmax(-1) == labels).float().mean().item()
            print(f"step {step:4d}  loss {loss.item():.3f}  accuracy {acc:.2f}")
    model.eval()
    with torch.no_grad():
        images, labels = batch(512, gen)
        accuracy = (model(images).argmax(-1) == labels).float().mean().item()
    print(f"held-out accuracy {accuracy:.2f} (chance 0.25); {time.perf_counter() - start:.1f} s")
    return {"losses": losses, "accuracy": accuracy}


if __name__ == "__main__":
    main()

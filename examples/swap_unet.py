"""Swap a tiny Stable-Diffusion-style UNet's cross-attention to ``persistent`` and train it.

A ``diffusers.UNet2DConditionModel`` (built from a config: nothing is downloaded) gets
its ``attn2`` modules (the text cross-attention) replaced by zoo's persistent-memory
attention, widths and q/k/v/output weights carried over. It is then trained for a few
steps on a toy conditioning task: from pure noise, draw the pattern that the "prompt"
(a short sequence of token embeddings, padded and masked) names. Only the
cross-attention tells the model which pattern is wanted, so the loss with the right
prompts falls below the loss with shuffled prompts once it reads them::

    python examples/swap_unet.py                      # persistent, 60 steps
    python examples/swap_unet.py --variant cross --steps 40
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch.nn import functional as F

import zoo

CLASSES, TOKENS, WIDTH = 4, 6, 32


def build_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=16, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=WIDTH, attention_head_dim=4, norm_num_groups=8,
    )


def toy_task(generator):
    """Patterns (one per class), a token table, and a sampler of (noise, prompt, mask, target)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    patterns = torch.stack([xx.sign(), yy.sign(), (xx * yy).sign(), ((xx**2 + yy**2) < 0.5).float() * 2 - 1])
    table = torch.randn(CLASSES, WIDTH, generator=generator)

    def sample(batch):
        labels = torch.randint(0, CLASSES, (batch,), generator=generator)
        lengths = torch.randint(2, TOKENS + 1, (batch,), generator=generator)
        mask = torch.arange(TOKENS)[None] < lengths[:, None]
        prompt = table[labels][:, None] + 0.1 * torch.randn(batch, TOKENS, WIDTH, generator=generator)
        prompt = torch.where(mask[..., None], prompt, torch.randn_like(prompt) * 5)  # padding is noise: mask it
        noise = torch.randn(batch, 1, 16, 16, generator=generator)
        return noise, prompt, mask.long(), patterns[labels][:, None]

    return sample


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="persistent")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    unet = build_unet()
    report = zoo.swap(unet, args.variant, where="cross")
    print(report)
    sample = toy_task(generator)
    timestep = torch.zeros(args.batch, dtype=torch.long)
    opt = torch.optim.AdamW(unet.parameters(), lr=2e-3)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        noise, prompt, mask, target = sample(args.batch)
        loss = F.mse_loss(unet(noise, timestep, prompt, encoder_attention_mask=mask).sample, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 1 or step % max(1, args.steps // 4) == 0:
            print(f"step {step:4d}  loss {loss.item():.4f}")
    print(f"trained {args.steps} steps in {time.perf_counter() - start:.1f} s")

    unet.eval()
    noise, prompt, mask, target = sample(64)
    with torch.no_grad():
        right = F.mse_loss(unet(noise, timestep[:1].expand(64), prompt, encoder_attention_mask=mask).sample, target)
        perm = torch.roll(torch.arange(64), 1)
        shuffled = F.mse_loss(unet(noise, timestep[:1].expand(64), prompt[perm],
                                   encoder_attention_mask=mask[perm]).sample, target)
    print(f"held-out loss: right prompts {right.item():.4f}, shuffled prompts {shuffled.item():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

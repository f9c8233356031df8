"""The worked example of the docs (seed 000): a 2x2 RGB image attends to the caption
"I love mountains".

Docs-side, not part of the library: ``docs/hooks.py`` inserts
:func:`worked_example_markdown` into the guide and passes :func:`picture_example` to
:func:`zoo.catalog.build_catalog`, so every variant that accepts these inputs is
drawn on them in the catalog. ``tests/test_catalog.py`` checks the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zoo.catalog import PictureExample
from zoo.catalog.text import cell, table

__all__ = ["WorkedExample", "worked_example", "worked_example_markdown", "picture_example"]


@dataclass(frozen=True)
class WorkedExample:
    """A 2x2 RGB image (4 pixel tokens x 3 channels) attending to the caption
    "I love mountains" (3 tokens x 6 dims), projected to 2 dimensions. For variants
    whose context is aligned with ``x`` (N = M), ``block_caption`` gives one word per pixel.

    The numbers are made up but small enough to follow by hand. ``W_q (3, 2)``,
    ``W_k (6, 2)``, ``W_v (6, 2)`` and ``W_o (2, 3)`` are written the way the maths
    reads (``Q = x W_q``); a ``torch.nn.Linear`` stores the transpose.
    """

    pixels: tuple[str, ...] = ("sky", "sky, light", "snow", "rock")
    words: tuple[str, ...] = ("I", "love", "mountains")
    image: tuple[tuple[float, ...], ...] = (
        (0.2, 0.4, 0.9),
        (0.5, 0.7, 1.0),
        (0.9, 0.9, 0.9),
        (0.4, 0.3, 0.2),
    )
    caption: tuple[tuple[float, ...], ...] = (
        (0.9, 0.1, 0.0, 0.3, 0.0, 0.2),
        (0.1, 0.8, 0.3, 0.0, 0.5, 0.1),
        (0.0, 0.2, 0.9, 0.7, 0.1, 0.8),
    )
    blocks: tuple[str, ...] = ("blue", "pale", "white", "grey")
    block_caption: tuple[tuple[float, ...], ...] = (
        (0.1, 0.2, 0.9, 0.1, 0.0, 0.3),
        (0.3, 0.1, 0.6, 0.5, 0.2, 0.1),
        (0.9, 0.8, 0.1, 0.4, 0.0, 0.2),
        (0.2, 0.9, 0.3, 0.0, 0.7, 0.6),
    )
    W_q: tuple[tuple[float, ...], ...] = ((-1.0, 1.5), (1.5, 0.5), (1.5, -0.5))
    W_k: tuple[tuple[float, ...], ...] = (
        (0.5, 1.0), (-1.0, 1.5), (1.5, -1.0), (1.5, -1.0), (0.5, 0.5), (0.0, 0.0),
    )
    W_v: tuple[tuple[float, ...], ...] = (
        (1.0, 0.0), (0.0, 1.0), (0.5, 0.5), (0.0, 0.5), (1.0, 0.0), (0.5, 1.0),
    )
    W_o: tuple[tuple[float, ...], ...] = ((0.5, 0.5, 0.0), (0.0, 0.5, 1.0))

    def tensors(self, dtype: Any = None) -> dict[str, Any]:
        """``x (1, 4, 3)``, ``context (1, 3, 6)`` and the four weight matrices as tensors."""
        import torch

        dtype = dtype or torch.float64
        t = lambda v: torch.tensor(v, dtype=dtype)  # noqa: E731
        return {
            "x": t(self.image)[None], "context": t(self.caption)[None],
            "blocks": t(self.block_caption)[None],
            "W_q": t(self.W_q), "W_k": t(self.W_k), "W_v": t(self.W_v), "W_o": t(self.W_o),
        }

    def layer(self):
        """The zoo's ``cross`` layer with exactly these weights (1 head of width 2)."""
        import torch

        import zoo

        t = self.tensors()
        layer = zoo.create("cross", query_dim=3, context_dim=6, heads=1, dim_head=2, out_bias=False)
        layer = layer.double().eval()
        with torch.no_grad():
            layer.to_q.weight.copy_(t["W_q"].T)
            layer.to_k.weight.copy_(t["W_k"].T)
            layer.to_v.weight.copy_(t["W_v"].T)
            layer.to_out[0].weight.copy_(t["W_o"].T)
        return layer


def worked_example() -> dict[str, Any]:
    """Every intermediate of the worked example, computed by the zoo's ``cross`` layer
    and checked against the maths written out: ``Q, K, V, scores, A, O, out, y``."""
    import torch

    ex = WorkedExample()
    t = ex.tensors()
    x, c = t["x"][0], t["context"][0]
    Q, K, V = x @ t["W_q"], c @ t["W_k"], c @ t["W_v"]
    scores = Q @ K.T / math.sqrt(2)
    A = torch.softmax(scores, dim=-1)
    O = A @ V
    out = O @ t["W_o"]
    with torch.no_grad():
        layer_out = ex.layer()(t["x"], t["context"])[0]
    if not torch.allclose(layer_out, out, atol=1e-12):
        raise AssertionError("the cross layer disagrees with the worked example's maths")
    return {"example": ex, "x": x, "context": c, "Q": Q, "K": K, "V": V, "scores": scores,
            "A": A, "O": O, "out": layer_out, "y": x + layer_out}


def _matrix_md(m: Any, rows: Sequence[str], cols: Sequence[str], digits: int = 2) -> str:
    body = [[f"**{cell(r)}**"] + [f"{float(v):.{digits}f}" for v in row] for r, row in zip(rows, m.tolist())]
    return table(["", *[cell(c) for c in cols]], body)


def worked_example_markdown() -> str:
    """The worked example's numbers as markdown tables (inserted into the guide at build time)."""
    w = worked_example()
    ex: WorkedExample = w["example"]
    px, words = ex.pixels, ex.words
    d2 = ("dim 1", "dim 2")
    rgb = ("R", "G", "B")
    a = w["A"]
    top = [f"**{px[i]}** attends {', '.join(f'{100 * a[i, j]:.0f} % to *{words[j]}*' for j in range(3))}"
           for i in range(4)]
    def grid(*cells: tuple[str, str]) -> list[str]:
        out = ['<div class="zoo-grid" markdown>', ""]
        for title, table in cells:
            out += ["<div markdown>", "", title, "", table, "", "</div>", ""]
        return out + ["</div>", ""]

    parts = [
        "**Inputs**: the image and the caption.", "",
        *grid(("`x` (4 pixels x RGB)", _matrix_md(w["x"], px, rgb)),
              ("`c` (3 tokens x 6 dims)", _matrix_md(w["context"], words, [f"e{i}" for i in range(1, 7)]))),
        "**Projections** to 2 dimensions:", "",
        *grid(("`Q = x W_q` (4 x 2)", _matrix_md(w["Q"], px, d2)),
              ("`K = c W_k` (3 x 2)", _matrix_md(w["K"], words, d2)),
              ("`V = c W_v` (3 x 2)", _matrix_md(w["V"], words, d2))),
        "**Scores** and, after a softmax over each row, the **attention** (every row sums to 1):", "",
        *grid(("`Q K^T / sqrt(2)` (4 pixels x 3 words)", _matrix_md(w["scores"], px, words)),
              ("`A = softmax(...)`", _matrix_md(a, px, words))),
        *[f"- {line}" for line in top], "",
        "**Weighted values**, **projected back** to RGB, and **added to the image** (the skip connection):", "",
        *grid(("`O = A V` (4 x 2)", _matrix_md(w["O"], px, d2)),
              ("`O W_o` (4 x 3): the layer's output", _matrix_md(w["out"], px, rgb)),
              ("`y = x + O W_o`", _matrix_md(w["y"], px, rgb))),
    ]
    return "\n".join(parts) + "\n"


def picture_example() -> PictureExample:
    """The worked example as the catalog's picture inputs: 1 head of width 2 and the
    weights above for every variant with diffusers' projection names."""
    ex = WorkedExample()
    t = ex.tensors()
    return PictureExample(
        x=t["x"], context=t["context"], row_labels=ex.pixels, col_labels=ex.words,
        config={"query_dim": 3, "context_dim": 6, "heads": 1, "dim_head": 2},
        weights={"to_q.weight": t["W_q"].T, "to_k.weight": t["W_k"].T, "to_v.weight": t["W_v"].T,
                 "to_out.0.weight": t["W_o"].T},
        aligned_context=t["blocks"], aligned_labels=ex.blocks, description="the worked example",
    )

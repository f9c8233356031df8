"""``crossvit``: CrossViT's CLS-token cross-attention between two branches.

Chen, Fan, Panda, "CrossViT: Cross-Attention Multi-Scale Vision Transformer for Image
Classification", ICCV 2021, arXiv:2103.14899 (official code: ``CrossAttention``,
``CrossAttentionBlock``, ``MultiScaleBlock``).
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn

import zoo
from zoo.nn import MultiHeadBase, MultiHeadFields, attend, split_heads
from zoo.oracle import heads_merge, heads_view, linear, naive_attention
from zoo.testing import expect


class CrossViTConfig(MultiHeadFields):
    """Config of :class:`CrossViTAttention`."""


class CrossViTAttention(MultiHeadBase):
    r"""CrossViT's cross-attention: x's CLS token reads the other branch's patch tokens.

    .. math:: y_0 = g\Big(\mathrm{softmax}\big(d^{-1/2}\, (f(x_0) W_q)\,[f(x_0); c_{1:}]W_k^\top\big)
        [f(x_0); c_{1:}] W_v\, W_o\Big), \qquad y_{1:} = 0

    ``f`` (``proj``) projects x's CLS token (position 0) into the other branch's width
    ``Dc``; it is the only query, and its keys and values are itself and the other
    branch's *patch* tokens (context positions 1..M-1: the other CLS is never attended,
    nor are x's own patch tokens). The result is projected back by ``g``
    (``revert_proj``). Row 0 of the output is that fusion and rows 1..N-1 are exactly
    zero, so ``x + layer(x, c)`` updates x's CLS token and leaves its patches as they
    are. Cost: O(M) per image (one query), linear in the number of patches.

    Differences from the official ``MultiScaleBlock``: there ``f`` and ``g`` are
    ``LayerNorm, GELU, Linear``, the fused token gets a pre-norm and a residual inside the
    block, and the new CLS *replaces* the old; here ``f`` and ``g`` are plain Linear
    layers and the residual is the caller's (``x + layer(x, c)``, like every zoo layer).

    Args:
        query_dim: width of x's branch (Dq).
        context_dim: width of the other branch (Dc); ``None`` means ``query_dim``.
        heads, dim_head, bias, out_bias, dropout: of the attention, which runs in width Dc.

    Shape:
        - x: ``(B, N, Dq)``, x's CLS token at position 0, then its patch tokens
        - context: ``(B, M, Dc)``, M >= 2: the other branch's CLS at position 0, then its patches
        - context_mask: bool ``(B, M)``, True = may be attended (position 0 is never attended)
        - output: ``(B, N, Dq)``, zero except row 0

        Parameters: ``proj`` Linear(Dq, Dc); ``to_q``, ``to_k``, ``to_v`` Linear(Dc, h*d);
        ``to_out.0`` Linear(h*d, Dc); ``revert_proj`` Linear(Dc, Dq).
    """

    def __init__(self, *, query_dim: int, context_dim: int | None, **fields) -> None:  # CrossViTConfig's fields
        width = context_dim or query_dim
        super().__init__(query_dim=width, context_dim=width, **fields)  # attention in width Dc
        self.query_dim = query_dim
        self.proj = nn.Linear(query_dim, width)
        self.revert_proj = nn.Linear(width, query_dim)

    def forward(self, x: Tensor, context: Tensor | None = None, *, context_mask: Tensor | None = None) -> Tensor:
        if context is None:
            raise ValueError(
                "context is None, but crossvit needs the other branch's tokens (B, M, context_dim) "
                "with its CLS token at position 0; pass them as context"
            )
        context = self.check_context(x, context, context_mask)
        if context.shape[1] < 2:
            raise ValueError(
                f"context has {context.shape[1]} token(s) (shape {tuple(context.shape)}) but crossvit "
                f"needs the other branch's CLS token and at least one patch token (M >= 2)"
            )
        cls = self.proj(x[:, :1])  # (B, 1, Dc)
        kv_in = torch.cat([cls, context[:, 1:]], dim=1)  # itself and the other branch's patches
        mask = None
        if context_mask is not None:
            mask = torch.cat([context_mask.new_ones(x.shape[0], 1), context_mask[:, 1:]], dim=1)
        q = split_heads(self.to_q(cls), self.heads)
        k = split_heads(self.to_k(kv_in), self.heads)
        v = split_heads(self.to_v(kv_in), self.heads)
        fused = self.revert_proj(self.project_out(attend(q, k, v, mask)))  # (B, 1, Dq)
        return torch.cat([fused, fused.new_zeros(x.shape[0], x.shape[1] - 1, x.shape[2])], dim=1)


def make_inputs(module, *, batch, query_len, context_len, generator, dtype):
    """x ``(B, N, Dq)`` and the other branch ``(B, 1 + context_len, Dc)``: CLS plus patches."""
    cfg = module.config
    x = torch.randn(batch, query_len, cfg.query_dim, generator=generator, dtype=dtype)
    context = torch.randn(batch, 1 + context_len, cfg.context_dim or cfg.query_dim, generator=generator,
                          dtype=dtype)
    return {"x": x, "context": context}


def reference(module: CrossViTAttention, x: Tensor, context: Tensor, *, context_mask=None) -> Tensor:
    """Naive oracle: the one CLS query and its keys written out, the score row materialised."""
    cls = linear(x[:, :1], module.proj)
    kv_in = torch.cat([cls, context[:, 1:]], dim=1)
    h = module.heads
    q = heads_view(linear(cls, module.to_q), h)
    k, v = heads_view(linear(kv_in, module.to_k), h), heads_view(linear(kv_in, module.to_v), h)
    mask = None
    if context_mask is not None:
        mask = context_mask.clone()
        mask[:, 0] = True  # position 0 now holds x's own projected CLS: always attended
    fused = linear(linear(heads_merge(naive_attention(q, k, v, mask)), module.to_out[0]), module.revert_proj)
    out = torch.zeros_like(x)
    out[:, :1] = fused
    return out


def bare(m: CrossViTAttention, x: Tensor, context: Tensor) -> Tensor:
    """The bench's bare twin: the CLS projection, one SDPA call with one query, projection back."""
    b, n, dq = x.shape
    cls = F.linear(x[:, :1], m.proj.weight, m.proj.bias)
    kv = torch.cat([cls, context[:, 1:]], dim=1)
    mc = kv.shape[1]
    q = F.linear(cls, m.to_q.weight, m.to_q.bias).view(b, 1, m.heads, -1).transpose(1, 2)
    k = F.linear(kv, m.to_k.weight, m.to_k.bias).view(b, mc, m.heads, -1).transpose(1, 2)
    v = F.linear(kv, m.to_v.weight, m.to_v.bias).view(b, mc, m.heads, -1).transpose(1, 2)
    o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, 1, -1)
    fused = F.linear(F.linear(o, m.to_out[0].weight, m.to_out[0].bias), m.revert_proj.weight, m.revert_proj.bias)
    return torch.cat([fused, fused.new_zeros(b, n - 1, dq)], dim=1)

def _setup(spec, fields, generator):
    layer = zoo.create(spec, **{**fields, "dropout": 0.0}).double().eval()
    x = torch.randn(2, 6, layer.query_dim, generator=generator, dtype=torch.float64)
    c = torch.randn(2, 9, layer.context_dim, generator=generator, dtype=torch.float64)
    return layer, x, c


def _changed(layer, x, c, x2, c2):
    with torch.no_grad():
        return (layer(x, c) - layer(x2, c2)).abs().max().item()


def _law_only_cls_row(spec, fields, generator):
    """Rows 1..N-1 of the output are exactly zero; row 0 is not."""
    layer, x, c = _setup(spec, fields, generator)
    with torch.no_grad():
        out = layer(x, c)
    rest = out[:, 1:].abs().max().item()
    expect(rest == 0.0, f"rows 1..N-1 (x's patch tokens) must be exactly zero, got up to {rest:.2e}")
    expect(out[:, 0].abs().max().item() > 0, "row 0 (the CLS fusion) is zero")


def _law_x_patches_not_attended(spec, fields, generator):
    """x's own patch tokens (positions 1..N-1) have no influence on the output."""
    layer, x, c = _setup(spec, fields, generator)
    x2 = x.clone()
    x2[:, 1:] = torch.randn(x2[:, 1:].shape, generator=generator, dtype=x.dtype) * 10
    err = _changed(layer, x, c, x2, c)
    expect(err == 0.0,
           f"changing x's patch tokens changed the output by {err:.2e}: they must not be attended")


def _law_other_cls_not_attended(spec, fields, generator):
    """The other branch's CLS token (context position 0) has no influence on the output."""
    layer, x, c = _setup(spec, fields, generator)
    c2 = c.clone()
    c2[:, 0] = torch.randn(c2[:, 0].shape, generator=generator, dtype=c.dtype) * 10
    err = _changed(layer, x, c, x, c2)
    expect(err == 0.0, f"changing the other branch's CLS token changed the output by {err:.2e}")


def _law_patch_order_ignored(spec, fields, generator):
    """Shuffling the other branch's patch tokens (positions 1..M-1) leaves the output unchanged."""
    layer, x, c = _setup(spec, fields, generator)
    perm = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(c.shape[1] - 1, generator=generator)])
    err = _changed(layer, x, c, x, c[:, perm])
    expect(err < 1e-10, f"shuffling the other branch's patch tokens changed the output by {err:.2e}")


#: CrossViT-B's fusion (240 px images): the small branch (12 px patches: CLS + 400 tokens of
#: width 384) reads the large one (16 px patches: CLS + 196 tokens of width 768), 12 heads of 64.
BENCH_SHAPES = (
    zoo.BenchShape("crossvit-b", "CrossViT-B: CLS + 400 small-branch tokens read CLS + 196 large-branch tokens",
                   full=zoo.Workload(32, 401, 196, {"query_dim": 384, "context_dim": 768, "heads": 12,
                                                    "dim_head": 64}),
                   quick=zoo.Workload(8, 401, 196, {"query_dim": 384, "context_dim": 768, "heads": 12,
                                                    "dim_head": 64}),
                   tiny=zoo.Workload(1, 5, 8, {"query_dim": 32, "context_dim": 48, "heads": 2, "dim_head": 8})),
)

SPEC = zoo.declare_variant(
    CrossViTAttention, "crossvit",
    aliases=("crossvit-cls", "cls-cross-attention"),
    config=CrossViTConfig,
    summary="CrossViT's fusion: x's CLS token alone attends to the other branch's patch tokens.",
    paper=(
        'Chen, Fan, Panda, "CrossViT: Cross-Attention Multi-Scale Vision Transformer for Image '
        'Classification", 2021, arXiv:2103.14899'
    ),
    make_inputs=make_inputs,
    examples=(
        {"query_dim": 32, "context_dim": 24, "heads": 4, "dim_head": 8},
        {"query_dim": 16, "heads": 2, "dim_head": 8, "bias": True, "dropout": 0.25},
    ),
    reference=reference,
    capabilities=zoo.Capabilities(query_order_equivariant=False,
                                  context_order_invariant=False),
    laws=(
        zoo.Law("only-cls-row", "rows 1..N-1 of the output are exactly zero: only x's CLS token changes",
                _law_only_cls_row),
        zoo.Law("x-patches-not-attended", "x's own patch tokens have no influence",
                _law_x_patches_not_attended),
        zoo.Law("other-cls-not-attended", "the other branch's CLS token (context position 0) has no influence",
                _law_other_cls_not_attended),
        zoo.Law("patch-order-ignored", "shuffling the other branch's patch tokens changes nothing",
                _law_patch_order_ignored),
    ),
    equation=(
        r"y_0 = g\left(\mathrm{softmax}\left(\frac{(f(x_0)W_q)\,([f(x_0);\,c_{1:}]W_k)^\top}{\sqrt{d}}\right)"
        r"[f(x_0);\,c_{1:}]W_v\,W_o\right),\quad y_{1:} = 0"
    ),
    complexity="O(M·h·d) time and memory: one query per image, linear in the patches",
    context_shape="(B, M, Dc), M >= 2: the other branch's tokens, its CLS at position 0",
    bench=zoo.BenchSpec(shapes=BENCH_SHAPES, baseline=bare, target=1.05),
)



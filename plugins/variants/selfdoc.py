"""``selfdoc``: SelfDoc cross-modality attention (Q and V from x, K from the other modality).

Li et al., "SelfDoc: Self-Supervised Document Representation Learning", CVPR 2021,
arXiv:2106.03331 (no public code). Both sequences index the same document blocks
(the text and the visual feature of each block), so ``context`` must be exactly as
long as ``x``; the other modality only decides *how* x's own values are mixed.
"""

from __future__ import annotations


import torch
from torch import Tensor

import zoo
from zoo.functional import attend, split_heads, validate_mask

from zoo.nn import MultiHeadAttention, MultiHeadBase, MultiHeadFields, bare_multihead
from zoo.oracle import heads_merge, heads_view, linear, naive_attention
from zoo.testing import expect


class SelfDocConfig(MultiHeadFields):
    """Config of :class:`SelfDocAttention` (the fields of ``cross``)."""


class SelfDocAttention(MultiHeadBase):
    r"""SelfDoc cross-modality attention: queries and values from ``x``, keys from ``context``.

    .. math:: \operatorname{softmax}\!\big(d^{-1/2} (x W_q)(c W_k)^\top\big)(x W_v)\,W_o

    The score matrix is N x M but multiplies x's own values (N rows), so the two
    sequences must be aligned block by block: ``context[:, j]`` is the other
    modality's view of block ``j`` of ``x`` (SelfDoc: the visual feature and the text
    of the same document block). Block ``j`` supplies key ``c_j W_k`` and value
    ``x_j W_v``; ``context_mask[:, j] = False`` removes block ``j`` as a whole from
    what the queries attend to. SelfDoc's symmetric pair (language side and vision
    side) is two such layers with the roles of ``x`` and ``context`` swapped.

    With ``context = x`` (or ``context=None``) and the same weights this is ordinary
    multi-head self-attention (the ``cross`` layer with ``context=None``).

    Parameter names follow diffusers' ``Attention`` (``to_q``, ``to_k``, ``to_v``,
    ``to_out.0``), except that ``to_v`` reads ``x``: ``Linear(query_dim, heads*dim_head)``.

    Args:
        query_dim: width of ``x`` (Dq).
        context_dim: width of ``context`` (Dc); ``None`` means ``query_dim``.
        heads: number of heads (h).
        dim_head: width of each head (d).
        bias: bias in the q/k/v projections.
        out_bias: bias in the output projection.
        dropout: dropout after the output projection, in training.

    Shape:
        - x: ``(B, N, Dq)``
        - context: ``(B, N, Dc)`` -- the same N as ``x`` (aligned blocks); ``None``
          means ``context = x`` (self-attention; needs ``Dc == Dq``)
        - context_mask: bool ``(B, N)``, True = the block may be attended
        - output: ``(B, N, Dq)``

        where B is the batch size and N the number of blocks.

    Paper:
        Li et al., "SelfDoc: Self-Supervised Document Representation Learning",
        CVPR 2021, arXiv:2106.03331.
    """

    def __init__(self, **fields) -> None:  # the fields of SelfDocConfig, validated by it
        # values come from x, not the context: to_v is Linear(query_dim, heads*dim_head)
        super().__init__(**fields, value_dim=fields["query_dim"])

    def _check(self, x: Tensor, context: Tensor | None, context_mask: Tensor | None) -> Tensor:
        context = self.check_context(x, context, None, length="N")
        _validate_equal_lengths(x, context)
        if context_mask is not None:
            validate_mask("context_mask", context_mask, context.shape[:-1], "(B, N): one flag per aligned block ",
                          like=context)
        return context

    def forward(self, x: Tensor, context: Tensor | None = None, *, context_mask: Tensor | None = None) -> Tensor:
        context = self._check(x, context, context_mask)
        q = split_heads(self.to_q(x), self.heads)
        k = split_heads(self.to_k(context), self.heads)
        v = split_heads(self.to_v(x), self.heads)
        return self.project_out(attend(q, k, v, context_mask))


def _validate_equal_lengths(x: Tensor, context: Tensor) -> None:
    n, m = x.shape[1], context.shape[1]
    if n != m:
        raise ValueError(
            f"selfdoc needs context as long as x (aligned blocks: context[:, j] describes "
            f"block j of x), but x has length N={n} and context has length M={m}: "
            f"x {tuple(x.shape)}, context {tuple(context.shape)}; pair the two modalities "
            f"block by block (for unaligned sequences use the 'cross' variant)"
        )


def reference(module: SelfDocAttention, x: Tensor, context: Tensor | None = None, *, context_mask=None) -> Tensor:
    """Naive oracle: every step written out, the N x N score matrix materialised."""
    c = x if context is None else context
    h = module.heads
    q = heads_view(linear(x, module.to_q), h)
    k = heads_view(linear(c, module.to_k), h)
    v = heads_view(linear(x, module.to_v), h)
    return linear(heads_merge(naive_attention(q, k, v, context_mask)), module.to_out[0])


def make_inputs(module, *, batch, query_len, context_len, generator, dtype):
    """``x (B, N, Dq)`` and an aligned ``context (B, N, Dc)``: ``context_len`` is ignored."""
    cfg = module.config
    context_dim = cfg.context_dim or cfg.query_dim
    x = torch.randn(batch, query_len, cfg.query_dim, generator=generator, dtype=dtype)
    context = torch.randn(batch, query_len, context_dim, generator=generator, dtype=dtype)
    return {"x": x, "context": context}


def _law_context_x_is_self_attention(spec, fields, generator):
    """selfdoc(x, context=x) equals multi-head self-attention with the same q/k/v/out weights."""
    fields = {**fields, "dropout": 0.0, "context_dim": None}
    layer = zoo.create(spec, **fields).double().eval()
    self_attn = MultiHeadAttention(**fields).double().eval()
    self_attn.load_state_dict(layer.state_dict())  # same keys; to_k is the self-attention key projection
    x = torch.randn(3, 6, layer.query_dim, generator=generator, dtype=torch.float64)
    mask = torch.rand(3, 6, generator=generator, dtype=torch.float64) > 0.4
    mask[0] = True
    with torch.no_grad():
        ours = layer(x, x)
        theirs = self_attn(x)
        err = (ours - theirs).abs().max().item()
        expect(err < 1e-10, (
            f"selfdoc(x, context=x) differs from self-attention with the same weights by {err:.2e}"
        ))
        ours_masked = layer(x, x, context_mask=mask)
        theirs_masked = reference_self_attention(self_attn, x, mask)
        err = (ours_masked - theirs_masked).abs().max().item()
        expect(err < 1e-10, (
            f"selfdoc(x, context=x, context_mask) differs from masked self-attention with the "
            f"same weights by {err:.2e}"
        ))


def reference_self_attention(layer, x: Tensor, key_mask: Tensor | None) -> Tensor:
    """Plain multi-head self-attention over x, written out (keys and values both from x)."""
    h = layer.heads
    q, k, v = (heads_view(linear(x, lin), h) for lin in (layer.to_q, layer.to_k, layer.to_v))
    return linear(heads_merge(naive_attention(q, k, v, key_mask)), layer.to_out[0])


def _law_uniform_context_averages_x(spec, fields, generator):
    """When every block's context is the same, the keys carry no preference: each query
    gets the plain mean of x's (unmasked) values -- the context only decides the mixing."""
    layer = zoo.create(spec, **{**fields, "dropout": 0.0}).double().eval()
    b, n = 2, 5
    x = torch.randn(b, n, layer.query_dim, generator=generator, dtype=torch.float64)
    row = torch.randn(b, 1, layer.context_dim, generator=generator, dtype=torch.float64)
    context = row.expand(b, n, layer.context_dim).contiguous()
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, :2] = False
    with torch.no_grad():
        out = layer(x, context, context_mask=mask)
        values = linear(x, layer.to_v)  # (B, N, h*d)
        w = mask.to(values.dtype)[..., None]
        mean = (values * w).sum(1, keepdim=True) / w.sum(1, keepdim=True)
        expected = linear(mean, layer.to_out[0]).expand_as(out)
    err = (out - expected).abs().max().item()
    expect(err < 1e-10, (
        f"with identical context blocks the output should be W_o applied to the mean of x's "
        f"unmasked values, but differs from it by {err:.2e}"
    ))


# --------------------------------------------------------------------------- benchmark (`zoo bench`)


def bare_sdpa(m: SelfDocAttention, x: Tensor, context: Tensor, **_) -> Tensor:
    """SelfDoc by hand: queries and values from ``x``, keys from the aligned context, one
    ``scaled_dot_product_attention`` call on the same weights (the toolkit's multi-head twin, values from x)."""
    return bare_multihead(m, x, context, values=x)


# N == M: only the long workload applies
SPEC = zoo.declare_variant(
    SelfDocAttention, "selfdoc",
    aliases=("selfdoc-attention", "cross-modality"),
    config=SelfDocConfig,
    summary="SelfDoc cross-modality attention: Q and V from x, K from an aligned context (N == M).",
    paper=(
        'Li et al., "SelfDoc: Self-Supervised Document Representation Learning", '
        "CVPR 2021, arXiv:2106.03331"
    ),
    make_inputs=make_inputs,
    examples=(
        {"query_dim": 32, "context_dim": 24, "heads": 4, "dim_head": 8},
        {"query_dim": 16, "heads": 2, "dim_head": 8, "bias": True, "dropout": 0.25},
    ),
    reference=reference,
    capabilities=zoo.Capabilities(
        self_attention=True,  # context=None means context = x
        context_order_invariant=False,  # values come from x: permuting the context alone changes the pairing
        equal_lengths=True,
    ),
    laws=(
        zoo.Law(
            "context-x-is-self-attention",
            "with context = x (and to_k the self-attention key projection) it equals "
            "multi-head self-attention with the same weights",
            _law_context_x_is_self_attention,
        ),
        zoo.Law(
            "uniform-context-averages-x",
            "identical context blocks give uniform weights: the output is W_o applied to "
            "the mean of x's unmasked values",
            _law_uniform_context_averages_x,
        ),
    ),
    equation=r"\mathrm{softmax}\left(\frac{(xW_q)(cW_k)^\top}{\sqrt{d}}\right)(xW_v)\,W_o",
    complexity="O(N²·h·d) time, O(N·h·d) memory (fused kernel)",
    context_shape="(B, N, Dc), aligned with x",
    bench=zoo.BenchSpec(
        shapes=tuple(s for s in zoo.STANDARD_SHAPES if s.name == "long"), baseline=bare_sdpa),
)

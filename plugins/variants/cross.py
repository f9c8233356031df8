"""``cross``: standard multi-head cross-attention (Stable Diffusion's text conditioning).

Vaswani et al., "Attention Is All You Need", 2017, arXiv:1706.03762; the layer
Stable Diffusion conditions on text with (Rombach et al., 2022, arXiv:2112.10752).
"""

from __future__ import annotations


import torch
from torch import Tensor, nn

import zoo
from zoo.nn import MultiHeadAttention, MultiHeadFields, bare_multihead
from zoo.oracle import multihead_reference
from zoo.testing import expect


class CrossConfig(MultiHeadFields):
    """Config of :class:`CrossAttention`."""


class CrossAttention(MultiHeadAttention):
    r"""Multi-head cross-attention: queries from ``x``, keys and values from ``context``.

    .. math:: \operatorname{softmax}\!\big(d^{-1/2} (x W_q)(c W_k)^\top\big)(c W_v)\,W_o

    Parameter names are diffusers' ``Attention`` (``to_q``, ``to_k``, ``to_v``,
    ``to_out.0``), so its state dict loads strictly.

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
        - context: ``(B, M, Dc)``, or ``None`` for self-attention over ``x``
        - context_mask: bool ``(B, M)``, True = may be attended
        - output: ``(B, N, Dq)``

        where B is the batch size, N the query length, M the context length.

    ``forward`` is :class:`zoo.nn.MultiHeadAttention`'s: the toolkit's plain multi-head attention.
    """


def reference(module: CrossAttention, x: Tensor, context: Tensor | None = None, *, context_mask=None) -> Tensor:
    """Naive oracle: every step written out, the score matrix materialised."""
    return multihead_reference(module, x, context, context_mask=context_mask)


def _law_matches_multihead_attention(spec, fields, generator):
    """Same weights in torch.nn.MultiheadAttention (kdim/vdim) give the same output."""
    # MultiheadAttention's queries and output have its embed_dim = h*d, so compare on a
    # layer with query_dim = h*d built from the example's other fields.
    example = spec.config.model_validate(fields)  # the example's sizes, defaults filled
    inner = example.heads * example.dim_head
    layer = zoo.create(spec, **{**fields, "query_dim": inner, "dropout": 0.0}).double().eval()
    mha = nn.MultiheadAttention(inner, layer.heads, kdim=layer.context_dim, vdim=layer.context_dim,
                                batch_first=True, bias=True, dtype=torch.float64)
    with torch.no_grad():
        if mha.in_proj_weight is not None:  # kdim == vdim == embed_dim: one packed matrix
            mha.in_proj_weight.copy_(torch.cat([layer.to_q.weight, layer.to_k.weight, layer.to_v.weight]))
        else:
            mha.q_proj_weight.copy_(layer.to_q.weight)
            mha.k_proj_weight.copy_(layer.to_k.weight)
            mha.v_proj_weight.copy_(layer.to_v.weight)
        zeros = torch.zeros(inner, dtype=torch.float64)
        mha.in_proj_bias.copy_(torch.cat([
            layer.to_q.bias if layer.to_q.bias is not None else zeros,
            layer.to_k.bias if layer.to_k.bias is not None else zeros,
            layer.to_v.bias if layer.to_v.bias is not None else zeros,
        ]))
        mha.out_proj.weight.copy_(layer.to_out[0].weight)
        mha.out_proj.bias.copy_(layer.to_out[0].bias if layer.to_out[0].bias is not None else zeros)
    x = torch.randn(2, 5, layer.query_dim, generator=generator, dtype=torch.float64)
    c = torch.randn(2, 7, layer.context_dim, generator=generator, dtype=torch.float64)
    mask = torch.rand(2, 7, generator=generator) > 0.3
    mask[:, 0] = True
    ours = layer(x, c, context_mask=mask)
    theirs, _ = mha(x, c, c, key_padding_mask=~mask, need_weights=False)
    err = (ours - theirs).abs().max().item()
    expect(err < 1e-10, f"differs from torch.nn.MultiheadAttention with the same weights by {err:.2e}")


# --------------------------------------------------------------------------- benchmark (`zoo bench`)


def bare_sdpa(m: CrossAttention, x: Tensor, context: Tensor, **_) -> Tensor:
    """What a user writes by hand: diffusers' ``Attention`` on the same weights, with
    ``F.linear``, views and one ``scaled_dot_product_attention`` call (no validation)."""
    return bare_multihead(m, x, context)


SPEC = zoo.declare_variant(
    CrossAttention, "cross",
    aliases=("cross-attention", "crossattention"),
    config=CrossConfig,
    summary="Standard multi-head cross-attention: Q from x, K and V from the context.",
    paper='Vaswani et al., "Attention Is All You Need", 2017, arXiv:1706.03762',
    examples=(
        {"query_dim": 32, "context_dim": 24, "heads": 4, "dim_head": 8},
        {"query_dim": 16, "heads": 2, "dim_head": 8, "bias": True, "dropout": 0.25},
    ),
    reference=reference,
    laws=(zoo.Law("matches-multihead-attention",
                  "equals torch.nn.MultiheadAttention(kdim, vdim) given the same weights",
                  _law_matches_multihead_attention),),
    equation=r"\mathrm{softmax}\left(\frac{(xW_q)(cW_k)^\top}{\sqrt{d}}\right)(cW_v)\,W_o",
    complexity="O(N·M·h·d) time, O((N+M)·h·d) memory",
    context_shape="(B, M, Dc)",
    bench=zoo.BenchSpec(shapes=zoo.STANDARD_SHAPES, baseline=bare_sdpa, system=True),
)

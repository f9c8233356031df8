"""``perceiver``: Perceiver IO's cross-attention module (latents read the input array).

Jaegle et al., "Perceiver IO: A General Architecture for Structured Inputs & Outputs",
2021, arXiv:2107.14795 (and "Perceiver", arXiv:2103.03206).
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

import zoo
from zoo.nn import MultiHeadBase, MultiHeadFields, attend, split_heads
from zoo.oracle import heads_merge, heads_view, linear, naive_attention
from zoo.testing import expect


class PerceiverConfig(MultiHeadFields):
    """Config of :class:`PerceiverAttention`."""

    widening_factor: int = Field(
        1, gt=0, description="Hidden width of the residual MLP as a multiple of query_dim "
                             "(Perceiver IO's cross-attention uses 1, its self-attention 4).")
    query_residual: bool = Field(
        True, description="Add the queries back after attention (x + Attn); Perceiver IO turns it "
                          "off in some decoders whose output queries carry no content.")


class PerceiverAttention(MultiHeadBase):
    r"""Perceiver IO's cross-attention module: a latent array reads an input array.

    .. math:: z = x + \mathrm{Attn}(\mathrm{LN}(x), \mathrm{LN}(c)), \qquad y = z + \mathrm{MLP}(\mathrm{LN}(z))

    ``x`` is the latent (or output-query) array, ``context`` the input array. The
    output has x's shape: N latents stay N latents whatever M is, so with N fixed the
    encoder is linear in the input size. The layer includes its residuals (unlike
    ``cross``): with every weight zero it is the identity. ``context=None`` is Perceiver
    IO's latent self-attention block (one layer norm for queries, keys and values).

    Args:
        query_dim, context_dim, heads, dim_head, bias, out_bias, dropout: as ``cross``
            (dropout acts after the attention's output projection and after the MLP).
        widening_factor: MLP hidden width = ``widening_factor * query_dim``.
        query_residual: add ``x`` to the attention term.

    Shape:
        - x: ``(B, N, Dq)``, the latents or output queries
        - context: ``(B, M, Dc)``, the input array, or ``None`` (self-attention)
        - context_mask: bool ``(B, M)``, True = may be attended
        - output: ``(B, N, Dq)``

        Parameters: as ``cross`` (``to_q``, ``to_k``, ``to_v``, ``to_out.0``), plus the
        layer norms ``norm_q``, ``norm_context``, ``norm_mlp`` and ``mlp.0``, ``mlp.2``
        (Linear, GELU, Linear).
    """

    def __init__(self, *, widening_factor: int, query_residual: bool, **fields) -> None:  # PerceiverConfig's
        super().__init__(**fields)
        query_dim, dropout = self.query_dim, fields["dropout"]
        self.query_residual = query_residual
        self.norm_q = nn.LayerNorm(query_dim)
        self.norm_context = nn.LayerNorm(self.context_dim)
        self.norm_mlp = nn.LayerNorm(query_dim)
        hidden = widening_factor * query_dim
        self.mlp = nn.Sequential(nn.Linear(query_dim, hidden), nn.GELU(), nn.Linear(hidden, query_dim),
                                 nn.Dropout(dropout))

    @property
    def output_includes_x(self) -> bool:
        """True with the query residual: ``forward`` returns ``x`` plus an update, so
        :func:`zoo.swap` uses ``forward(x, c) - x`` in place of an attention branch (the
        model's own residual is not added twice)."""
        return self.query_residual

    def forward(self, x: Tensor, context: Tensor | None = None, *, context_mask: Tensor | None = None) -> Tensor:
        self_attention = context is None
        context = self.check_context(x, context, context_mask)
        xn = self.norm_q(x)
        cn = xn if self_attention else self.norm_context(context)
        q = split_heads(self.to_q(xn), self.heads)
        k = split_heads(self.to_k(cn), self.heads)
        v = split_heads(self.to_v(cn), self.heads)
        z = self.project_out(attend(q, k, v, context_mask))
        if self.query_residual:
            z = x + z
        return z + self.mlp(self.norm_mlp(z))


def _layer_norm(t: Tensor, norm: nn.LayerNorm) -> Tensor:
    mean = t.mean(-1, keepdim=True)
    var = ((t - mean) ** 2).mean(-1, keepdim=True)
    return (t - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def _gelu(t: Tensor) -> Tensor:
    return 0.5 * t * (1.0 + torch.erf(t / 2.0 ** 0.5))


def reference(module: PerceiverAttention, x: Tensor, context: Tensor | None = None, *,
              context_mask=None) -> Tensor:
    """Naive oracle: layer norms, GELU and attention written out."""
    xn = _layer_norm(x, module.norm_q)
    cn = xn if context is None else _layer_norm(context, module.norm_context)
    h = module.heads
    q, k, v = (heads_view(linear(t, lin), h) for t, lin in ((xn, module.to_q), (cn, module.to_k), (cn, module.to_v)))
    z = linear(heads_merge(naive_attention(q, k, v, context_mask)), module.to_out[0])
    if module.query_residual:
        z = x + z
    hidden = _gelu(linear(_layer_norm(z, module.norm_mlp), module.mlp[0]))
    return z + linear(hidden, module.mlp[2])


def _law_n_latents_whatever_m(spec, fields, generator):
    """N latents in, N latents out, for inputs of any length M (1 to 300)."""
    layer = zoo.create(spec, **{**fields, "dropout": 0.0}).double().eval()
    x = torch.randn(2, 4, layer.query_dim, generator=generator, dtype=torch.float64)
    for m in (1, 3, 17, 300):
        c = torch.randn(2, m, layer.context_dim, generator=generator, dtype=torch.float64)
        with torch.no_grad():
            out = layer(x, c)
        expect(tuple(out.shape) == tuple(x.shape),
               f"with {m} inputs the output has shape {tuple(out.shape)}, not the latents' {tuple(x.shape)}")


def _law_input_order_ignored(spec, fields, generator):
    """Shuffling the input array (with its mask) leaves every latent unchanged."""
    layer = zoo.create(spec, **{**fields, "dropout": 0.0}).double().eval()
    x = torch.randn(2, 4, layer.query_dim, generator=generator, dtype=torch.float64)
    c = torch.randn(2, 23, layer.context_dim, generator=generator, dtype=torch.float64)
    mask = torch.rand(2, 23, generator=generator) > 0.3
    perm = torch.randperm(23, generator=generator)
    with torch.no_grad():
        a = layer(x, c, context_mask=mask)
        b = layer(x, c[:, perm], context_mask=mask[:, perm])
    err = (a - b).abs().max().item()
    expect(err < 1e-10, f"shuffling the input array changed the latents by {err:.2e}")


def _law_zero_weights_is_identity(spec, fields, generator):
    """Every weight zero: the output is x itself (query residual, zero attention and MLP)."""
    layer = zoo.create(spec, **{**fields, "dropout": 0.0, "query_residual": True}).double().eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.zero_()
    x = torch.randn(2, 5, layer.query_dim, generator=generator, dtype=torch.float64)
    c = torch.randn(2, 7, layer.context_dim, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        out = layer(x, c)
    err = (out - x).abs().max().item()
    expect(err == 0.0, f"with every weight zero the output differs from x by {err:.2e} (no query residual?)")


def bare(m: PerceiverAttention, x: Tensor, context: Tensor) -> Tensor:
    """The bench's bare twin: layer norms, F.linear, one SDPA call, residuals and the MLP by hand."""
    b, n, dq = x.shape
    mc = context.shape[1]
    xn = F.layer_norm(x, (dq,), m.norm_q.weight, m.norm_q.bias, m.norm_q.eps)
    cn = F.layer_norm(context, (context.shape[-1],), m.norm_context.weight, m.norm_context.bias, m.norm_context.eps)
    q = F.linear(xn, m.to_q.weight, m.to_q.bias).view(b, n, m.heads, -1).transpose(1, 2)
    k = F.linear(cn, m.to_k.weight, m.to_k.bias).view(b, mc, m.heads, -1).transpose(1, 2)
    v = F.linear(cn, m.to_v.weight, m.to_v.bias).view(b, mc, m.heads, -1).transpose(1, 2)
    o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
    z = F.linear(o, m.to_out[0].weight, m.to_out[0].bias)
    if m.query_residual:
        z = x + z
    h = F.layer_norm(z, (dq,), m.norm_mlp.weight, m.norm_mlp.bias, m.norm_mlp.eps)
    h = F.linear(F.gelu(F.linear(h, m.mlp[0].weight, m.mlp[0].bias)), m.mlp[2].weight, m.mlp[2].bias)
    return z + h


def _dims(qd: int, cd: int, h: int, d: int) -> dict[str, int]:
    return {"query_dim": qd, "context_dim": cd, "heads": h, "dim_head": d}


#: Perceiver IO's encoder: a few latents read a long input array (N small, M large).
BENCH_SHAPES = (
    zoo.BenchShape("encode", "Perceiver IO encoder: 256 latents of width 512 read 8192 inputs of width 256",
                   full=zoo.Workload(2, 256, 8192, _dims(512, 256, 8, 64)),
                   quick=zoo.Workload(1, 128, 1024, _dims(512, 256, 8, 64)),
                   tiny=zoo.Workload(1, 8, 32, _dims(32, 16, 2, 16))),
)

SPEC = zoo.declare_variant(
    PerceiverAttention, "perceiver",
    aliases=("perceiver-io", "perceiverio"),
    config=PerceiverConfig,
    summary="Perceiver IO's cross-attention module: N latents read an input array of any length M.",
    paper=(
        'Jaegle et al., "Perceiver IO: A General Architecture for Structured Inputs & Outputs", 2021, '
        "arXiv:2107.14795"
    ),
    examples=(
        {"query_dim": 32, "context_dim": 24, "heads": 4, "dim_head": 8},
        {"query_dim": 16, "heads": 2, "dim_head": 8, "bias": True, "dropout": 0.25, "widening_factor": 2},
        {"query_dim": 16, "context_dim": 8, "heads": 2, "dim_head": 8, "query_residual": False},
    ),
    reference=reference,
    laws=(
        zoo.Law("n-latents-whatever-m", "N latents in, N latents out, for any input length M",
                _law_n_latents_whatever_m),
        zoo.Law("input-order-ignored", "shuffling the input array (with its mask) changes no latent",
                _law_input_order_ignored),
        zoo.Law("zero-weights-is-identity",
                "with every weight zero the layer is the identity (query residual)",
                _law_zero_weights_is_identity),
    ),
    equation=(
        r"z = x + \mathrm{softmax}\left(\frac{(\bar x W_q)(\bar c W_k)^\top}{\sqrt{d}}\right)(\bar c W_v)\,W_o,"
        r"\quad y = z + \mathrm{MLP}(\mathrm{LN}(z)),\quad \bar x = \mathrm{LN}(x),\ \bar c = \mathrm{LN}(c)"
    ),
    complexity="O(N·M·h·d) time: linear in the input size M for a fixed number N of latents",
    context_shape="(B, M, Dc): the input array; x is the latent array. None: latent self-attention",
    bench=zoo.BenchSpec(shapes=BENCH_SHAPES, baseline=bare,
        baseline_label="SDPA, norms and MLP by hand", target=1.05),
)



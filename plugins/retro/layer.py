"""``retro``: RETRO's chunked cross-attention (CCA) over retrieved neighbours.

Borgeaud et al., "Improving language models by retrieving from trillions of
tokens", 2021, arXiv:2112.04426 (ICML 2022).

The sequence of ``N`` tokens is split into ``L = N // m`` chunks of ``m`` tokens.
Each chunk ``u`` has ``K`` retrieved neighbours of ``R`` tokens each (RETRO: the
neighbour chunk and its continuation, ``R = 2m``), already encoded to width
``Dc``. Position ``p`` (0-indexed) attends, over all ``K*R`` neighbour tokens of
one chunk jointly, to the neighbours of chunk ``u = (p - m + 1) // m`` when
``p >= m - 1``: the last token of chunk ``u`` and the first ``m - 1`` tokens of
chunk ``u + 1``. Retrieval for chunk ``u`` uses chunk ``u`` itself, so a
position never sees the neighbours of a chunk that is not yet complete.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

import zoo
from zoo.functional import attend, validate_mask, validate_tensor

from zoo.nn import MultiHeadAttention, MultiHeadBase, MultiHeadFields
from zoo.oracle import heads_merge, heads_view, linear, naive_attention
from zoo.testing import expect

__all__ = ["RetroConfig", "ChunkedCrossAttention", "reference", "make_inputs", "SPEC"]


class RetroConfig(MultiHeadFields):
    """Config of :class:`ChunkedCrossAttention`."""

    chunk_size: int = Field(
        64, gt=0, description="Tokens per chunk (m); neighbours are retrieved per chunk (RETRO: 64)."
    )


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


class ChunkedCrossAttention(MultiHeadBase):
    r"""RETRO's chunked cross-attention: each position attends to the neighbours
    retrieved for the last *completed* chunk.

    .. math::
        \mathrm{CCA}(x, E)_p = \begin{cases}
            0 & p < m - 1 \\
            \operatorname{softmax}\!\big(d^{-1/2} (x_p W_q)(E_u W_k)^\top\big)(E_u W_v)\,W_o
              & p \ge m - 1,\ u = \lfloor (p - m + 1) / m \rfloor
        \end{cases}

    where ``E_u`` is the ``(K*R, Dc)`` matrix of all neighbour tokens of chunk ``u``
    (the ``K`` neighbours are attended jointly). Equivalently (the paper's listing):
    shift ``x`` left by ``m - 1``, pad it to ``L*m`` positions, fold it into ``L``
    chunks, cross-attend chunk ``u`` to ``E_u``, unfold and shift back right.

    Exactly causal: changing the neighbours of chunk ``u`` never changes a
    position before ``(u + 1) m - 1`` (the last token of chunk ``u``).

    Positions ``p < m - 1`` output **exactly zero**: the whole output row, output
    projection bias included (they are zeroed after the projection, not merely
    given a zero attention term). When ``N`` is not a multiple of ``m``, the
    trailing ``N - L*m`` positions still attend to the neighbours of chunk
    ``L - 1`` (they are part of its window); when ``N < m`` there is no complete
    chunk, ``L = 0``, context has shape ``(B, 0, K, R, Dc)`` and the output is all
    zero. A chunk whose neighbours are all masked out gives its window an attention
    term of zero (the output is then the projection bias, as for ``cross``).

    Runs on the fused path: chunks are folded into the batch axis, so the whole
    layer is one :func:`zoo.functional.attend` call (no Python loop over chunks).
    Parameter names are diffusers' ``Attention`` (``to_q``, ``to_k``, ``to_v``,
    ``to_out.0``), as for ``cross``; a ``cross`` state dict loads strictly.

    Args:
        query_dim: width of ``x`` (Dq).
        context_dim: width of the encoded neighbours (Dc); ``None`` means ``query_dim``.
        heads: number of heads (h).
        dim_head: width of each head (d).
        bias: bias in the q/k/v projections.
        out_bias: bias in the output projection.
        dropout: dropout after the output projection, in training.
        chunk_size: tokens per chunk (m).

    Shape:
        - x: ``(B, N, Dq)``
        - context: ``(B, L, K, R, Dc)`` with ``L = N // m``: the encoded neighbours
          of every complete chunk. Required (``None`` raises ``ValueError``).
        - context_mask: bool ``(B, L, K, R)``, True = may be attended (False for
          padding of a short neighbour, or a missing neighbour)
        - output: ``(B, N, Dq)``

        where B is the batch size, N the sequence length, m the chunk size, L the
        number of complete chunks, K the neighbours per chunk, R the tokens per
        neighbour (RETRO: ``2m``, chunk plus continuation).

    Paper: Borgeaud et al., "Improving language models by retrieving from
    trillions of tokens", 2021, arXiv:2112.04426.
    """

    def __init__(self, *, chunk_size: int, **fields) -> None:  # the fields of RetroConfig, validated by it
        super().__init__(**fields)
        self.chunk_size = chunk_size

    def extra_repr(self) -> str:
        return f"chunk_size={self.chunk_size}"

    def _check(self, x: Tensor, context: Tensor | None, context_mask: Tensor | None) -> None:
        w = self.to_q.weight
        m = self.chunk_size
        self.check_x(x)
        b, n, _ = x.shape
        legend = f"(B={b}, L=N//chunk_size={n // m}, K, R, context_dim={self.context_dim})"
        if context is None:
            raise ValueError(
                f"context is required: retro cross-attends to retrieved neighbours {legend}; "
                f"it has no self-attention fallback (retrieve neighbours with "
                f"attention_zoo_plugins.retro.RetroDatabase.retrieve and encode them)"
            )
        if isinstance(context, Tensor) and context.ndim == 5 and context.shape[1] != n // m:
            raise ValueError(
                f"context must hold the neighbours of every complete chunk: shape {legend}, i.e. "
                f"L={n // m} chunks for N={n} and chunk_size={m}; got L={context.shape[1]} in shape "
                f"{_shape(context)} (retrieve neighbours for chunks 0..L-1 of x only)"
            )
        if isinstance(context, Tensor) and context.ndim == 5 and context.shape[1] == 0:
            # N < chunk_size: no complete chunk, so no neighbours (L = 0). Check everything
            # validate_tensor would, except that the tensor is empty.
            if not context.is_floating_point():
                raise TypeError(f"context must be a floating-point tensor {legend}, got dtype {context.dtype}")
            if context.shape[-1] != self.context_dim:
                raise ValueError(
                    f"context must have last dimension {self.context_dim} {legend}, got shape {_shape(context)}"
                )
            if context.dtype != w.dtype or context.device != w.device:
                raise ValueError(
                    f"context has dtype {context.dtype} on {context.device} but the layer's weights "
                    f"are {w.dtype} on {w.device}; cast or move one of them"
                )
        else:
            validate_tensor("context", context, ndim=5, last_dim=self.context_dim, like=w, legend=legend)
        if context.shape[0] != b:
            raise ValueError(f"context has batch size {context.shape[0]} but x has {b}: x {_shape(x)}, context {_shape(context)}")
        if context_mask is not None:
            validate_mask("context_mask", context_mask, context.shape[:-1], "(B, L, K, R) = ", like=w)

    def forward(self, x: Tensor, context: Tensor | None = None, *, context_mask: Tensor | None = None) -> Tensor:
        self._check(x, context, context_mask)
        m, h = self.chunk_size, self.heads
        b, n, _ = x.shape
        _, l, k, r, dc = context.shape
        if l == 0:
            # No complete chunk: every position is before the first window. Kept on the
            # autograd graph (zero gradients) so that backward works as for any input.
            empty = self.to_out[0](self.to_q(x[:, :0]))
            return F.pad(empty, (0, 0, n, 0))
        rows = n - (m - 1)  # positions p >= m - 1: they attend (rows >= 1 since L >= 1)
        # The paper's shift: position p goes to slot p - (m - 1) of L chunks of m slots.
        # Project only the positions that attend, padded up to L*m slots (one copy).
        xs = x[:, m - 1:]
        if rows < l * m:
            xs = F.pad(xs, (0, 0, 0, l * m - rows))
        q = self.to_q(xs).view(b * l, m, h, -1).transpose(1, 2)  # (B*L, h, m, d)
        del xs  # the padded copy is not needed past the projection: lower peak memory
        ctx = context.reshape(b * l, k * r, dc)
        kk = self.to_k(ctx).view(b * l, k * r, h, -1).transpose(1, 2)  # (B*L, h, K*R, d)
        vv = self.to_v(ctx).view(b * l, k * r, h, -1).transpose(1, 2)
        mask = None if context_mask is None else context_mask.reshape(b * l, k * r)
        att = attend(q, kk, vv, mask)  # (B*L, h, m, d)
        del q, kk, vv  # release the projections before the output projection (peak memory)
        out = self.to_out[1](self.to_out[0](att.transpose(1, 2).reshape(b, l * m, -1)))  # (B, L*m, Dq)
        del att
        # Shift back right: rows p < m - 1 are exactly zero (bias included); drop the padding.
        return F.pad(out[:, :rows], (0, 0, m - 1, 0))


def reference(module: ChunkedCrossAttention, x: Tensor, context: Tensor | None = None, *, context_mask=None) -> Tensor:
    """Naive oracle: one query position at a time, written from the definition.

    For each position ``p >= m - 1`` it finds ``u = (p - m + 1) // m``, flattens the
    neighbours of chunk ``u`` to ``K*R`` keys and runs textbook attention; earlier
    positions are zero. Never calls ``module.forward``; no shifting or folding.
    """
    if context is None:
        raise ValueError("retro needs context (B, L, K, R, Dc)")
    m, h = module.chunk_size, module.heads
    b, n, _ = x.shape
    _, l, k, r, dc = context.shape
    if l != n // m:
        raise ValueError(f"context must hold L = N // chunk_size = {n // m} chunks, got {l}")
    out = torch.zeros(b, n, module.query_dim, dtype=x.dtype, device=x.device)
    for p in range(m - 1, n):
        u = (p - m + 1) // m  # < L for every p < N when L == N // m
        c = context[:, u].reshape(b, k * r, dc)
        q = heads_view(linear(x[:, p : p + 1], module.to_q), h)  # (B, h, 1, d)
        kk = heads_view(linear(c, module.to_k), h)
        vv = heads_view(linear(c, module.to_v), h)
        mask = None if context_mask is None else context_mask[:, u].reshape(b, k * r)
        out[:, p : p + 1] = linear(heads_merge(naive_attention(q, kk, vv, mask)), module.to_out[0])
    return out


def _neighbour_shape(context_len: int) -> tuple[int, int]:
    """K neighbours of R tokens with K*R close to ``context_len``: K = 2 as in RETRO."""
    k = 2 if context_len >= 2 else 1
    return k, max(1, context_len // k)


def make_inputs(module, *, batch, query_len, context_len, generator, dtype):
    """``x (B, N, Dq)`` and neighbours ``context (B, L, K, R, Dc)`` with ``L = N // m``.

    ``K = 2`` (RETRO's training setting; 1 when ``context_len < 2``) and
    ``R = context_len // K``, so each chunk sees about ``context_len`` neighbour
    tokens. When ``query_len < chunk_size``, ``L = 0`` and the context is empty.
    """
    cfg = module.config
    m = cfg.chunk_size
    dc = cfg.context_dim or cfg.query_dim
    k, r = _neighbour_shape(context_len)
    x = torch.randn(batch, query_len, cfg.query_dim, generator=generator, dtype=dtype)
    context = torch.randn(batch, query_len // m, k, r, dc, generator=generator, dtype=dtype)
    return {"x": x, "context": context}


# --------------------------------------------------------------------------- laws


def _law_causality(spec, fields, generator):
    """Perturbing the neighbours of chunk u (or their mask) leaves every position
    before (u+1)m - 1 unchanged, and does change the window of chunk u."""
    layer = zoo.create(spec, **{**fields, "dropout": 0.0}).double().eval()
    m = layer.chunk_size
    n = 3 * m + max(1, m // 2)  # 3 complete chunks and a remainder
    inputs = spec.make_inputs(layer, batch=2, query_len=n, context_len=6, generator=generator, dtype=torch.float64)
    x, ctx = inputs["x"], inputs["context"]
    l = ctx.shape[1]
    mask = torch.rand(ctx.shape[:-1], generator=generator) > 0.3
    mask[..., 0, 0] = True
    with torch.no_grad():
        base = layer(x, ctx, context_mask=mask)
        perturbed = []
        for u in range(l):
            ctx2 = ctx.clone()
            ctx2[:, u] += torch.randn(ctx2[:, u].shape, generator=generator, dtype=torch.float64)
            mask2 = mask.clone()
            mask2[:, u] = True
            perturbed.append((layer(x, ctx2, context_mask=mask), layer(x, ctx, context_mask=mask2)))
        for u, outs in enumerate(perturbed):  # first: nothing earlier may change
            first = (u + 1) * m - 1  # the first position allowed to see chunk u's neighbours
            for name, out in zip(("neighbours", "mask"), outs):
                early = (out[:, :first] - base[:, :first]).abs().max().item() if first else 0.0
                expect(early <= 1e-12, (
                    f"changing the {name} of chunk {u} changed positions before {first} "
                    f"(max change {early:.3e}): a position saw the neighbours of a chunk that "
                    f"is not yet complete"
                ))
        for u, (out, _) in enumerate(perturbed):  # then: the law is not vacuous
            first = (u + 1) * m - 1
            window = (out[:, first : first + m] - base[:, first : first + m]).abs().max().item()
            expect(window > 1e-9, (
                f"changing the neighbours of chunk {u} did not change positions {first}..{first + m - 1}, "
                f"which should attend to them"
            ))
        expect(base[:, : m - 1].abs().max().item() == 0.0 if m > 1 else True, (
            f"positions before chunk_size - 1 = {m - 1} must output exactly zero"
        ))


def _law_single_chunk_is_cross(spec, fields, generator):
    """With one chunk (m <= N < 2m), positions p >= m-1 equal ``cross`` over the
    chunk's K*R neighbour tokens with the same weights; earlier positions are zero."""
    layer = zoo.create(spec, **{**fields, "dropout": 0.0}).double().eval()
    m = layer.chunk_size
    cross = MultiHeadAttention(layer.query_dim, layer.context_dim, layer.heads, layer.to_q.out_features // layer.heads,
                           bias=layer.to_q.bias is not None, out_bias=layer.to_out[0].bias is not None).double().eval()
    cross.load_state_dict(layer.state_dict(), strict=True)
    for n in sorted({m, 2 * m - 1}):
        inputs = spec.make_inputs(layer, batch=2, query_len=n, context_len=6, generator=generator, dtype=torch.float64)
        x, ctx = inputs["x"], inputs["context"]
        b, l, k, r, dc = ctx.shape
        mask = torch.rand(b, l, k, r, generator=generator) > 0.3
        mask[:, :, 0, 0] = True
        with torch.no_grad():
            ours = layer(x, ctx, context_mask=mask)
            theirs = cross(x[:, m - 1:], ctx.reshape(b, k * r, dc), context_mask=mask.reshape(b, k * r))
        err = (ours[:, m - 1:] - theirs).abs().max().item()
        expect(err < 1e-10, f"N={n}, chunk_size={m}: differs from cross over the chunk's neighbours by {err:.2e}")
        expect(ours[:, : m - 1].abs().max().item() == 0.0 if m > 1 else True, "positions p < m-1 must be zero")


# --------------------------------------------------------------------------- benchmark (`zoo bench`)


def bare_sdpa(m: ChunkedCrossAttention, x: Tensor, context: Tensor, **_) -> Tensor:
    """RETRO's chunked cross-attention by hand, the paper's listing (Borgeaud et al.,
    2021, App. B): shift the queries left by ``chunk_size - 1`` (zero-padding the end),
    fold the chunks into the batch, attend each chunk to its ``K*R`` neighbour tokens in
    one SDPA call, unfold, and shift back (zero-padding the start)."""
    h, cs = m.config.heads, m.config.chunk_size
    b, n, _ = x.shape
    _, n_chunks, k_nb, r, dc = context.shape

    def heads(t: Tensor) -> Tensor:
        return t.unflatten(-1, (h, -1)).transpose(1, 2)

    q = F.linear(x, m.to_q.weight, m.to_q.bias)
    q = F.pad(q[:, cs - 1: n_chunks * cs], (0, 0, 0, cs - 1))  # (b, L*cs, h*d): attending positions
    q = heads(q.reshape(b * n_chunks, cs, -1))
    c = context.reshape(b * n_chunks, k_nb * r, dc)
    k = heads(F.linear(c, m.to_k.weight, m.to_k.bias))
    v = heads(F.linear(c, m.to_v.weight, m.to_v.bias))
    o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(-2)
    o = F.linear(o, m.to_out[0].weight, m.to_out[0].bias).reshape(b, n_chunks * cs, -1)
    return F.pad(o, (0, 0, cs - 1, n - n_chunks * cs))[:, :n]


def _retro_workload(b: int, n: int, k: int, r: int, width: int, h: int, d: int, chunk: int) -> zoo.Workload:
    # make_inputs reads context_len as K * R neighbour tokens per chunk (K = 2)
    return zoo.Workload(b, n, k * r, {"query_dim": width, "context_dim": width, "heads": h, "dim_head": d,
                                      "chunk_size": chunk})


BENCH_SHAPE = zoo.BenchShape(
    "retro", "RETRO: chunks of 64 attend to K=2 neighbours of R=128 tokens",
    full=_retro_workload(2, 2048, 2, 128, 512, 8, 64, 64),
    quick=_retro_workload(1, 512, 2, 128, 512, 8, 64, 64),
    tiny=_retro_workload(1, 32, 2, 4, 32, 2, 16, 8),
)
SPEC = zoo.declare_variant(
    ChunkedCrossAttention, "retro",
    aliases=("retro-cca", "chunked-cross-attention"),
    config=RetroConfig,
    summary="RETRO chunked cross-attention: each chunk's window attends to its retrieved neighbours.",
    paper=('Borgeaud et al., "Improving language models by retrieving from trillions of tokens", '
           "2021, arXiv:2112.04426"),
    make_inputs=make_inputs,
    examples=(
        {"query_dim": 16, "context_dim": 12, "heads": 2, "dim_head": 8, "chunk_size": 4},
        {"query_dim": 16, "heads": 2, "dim_head": 8, "chunk_size": 3, "bias": True, "dropout": 0.25},
    ),
    reference=reference,
    capabilities=zoo.Capabilities(
        self_attention=False,
        query_order_equivariant=False,
        context_order_invariant=True,
        context_set_axes=(2, 3),
        chunk_causal=True,
    ),
    laws=(
        zoo.Law("causality", "perturbing the neighbours of chunk u leaves every earlier position unchanged",
                _law_causality),
        zoo.Law("single-chunk-is-cross", "with one chunk, equals cross over its K*R neighbour tokens",
                _law_single_chunk_is_cross),
    ),
    equation=(r"\mathrm{CCA}(x,E)_p = \mathrm{softmax}\left(\frac{(x_pW_q)(E_uW_k)^\top}{\sqrt{d}}\right)"
              r"(E_uW_v)\,W_o,\quad u=\left\lfloor\frac{p-m+1}{m}\right\rfloor,\ p\ge m-1;\ 0 \text{ otherwise}"),
    complexity="O(N·K·R·h·d) time, O((N+L·K·R)·h·d) memory",
    context_shape="(B, L, K, R, Dc): L = N // chunk_size chunks of x, K neighbours retrieved per chunk, R tokens per neighbour; in RETRO a neighbour is a chunk and its continuation, R = 2 * chunk_size",
    bench=zoo.BenchSpec(shapes=(BENCH_SHAPE,), baseline=bare_sdpa, target=1.10),
)

"""``persistent``: attention whose keys and values are extended by learned persistent memory.

Sukhbaatar et al., "Augmenting Self-attention with Persistent Memory", 2019,
arXiv:1907.01470 (the "all-attention" layer). Learned per-head vectors ``M_k, M_v``
are appended to every key and value set and take part in the same softmax; they
carry no position and are never masked.

A feed-forward sublayer ``U relu(V x)`` with softmax in place of relu is attention
of ``x`` over static keys (the rows of ``V``) and static values (the columns of
``U``). ``memory_only=True`` is that view: the layer attends to its memory alone and
replaces a feed-forward sublayer, as the paper does;
:meth:`PersistentMemoryAttention.from_feedforward` builds it from a feed-forward
layer's weights.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

import zoo
from zoo.functional import attend, split_heads

from zoo.nn import MultiHeadAttention, MultiHeadBase, MultiHeadFields
from zoo.oracle import heads_merge, heads_view, linear, naive_attention
from zoo.testing import expect


class PersistentConfig(MultiHeadFields):
    """Config of :class:`PersistentMemoryAttention` (the fields of ``cross`` plus memory)."""

    num_memory: int = Field(
        16, ge=0, description="Persistent memory slots per head (N_mem); 0 gives plain cross-attention."
    )
    memory_only: bool = Field(
        False,
        description=(
            "Attend to the persistent memory alone (no context tokens, no to_k/to_v): the "
            "feed-forward view U softmax(V x) that replaces a feed-forward sublayer."
        ),
    )

    @model_validator(mode="after")
    def _memory_only_needs_memory(self):
        if self.memory_only and self.num_memory < 1:
            raise ValueError(
                f"memory_only=True attends to the persistent memory alone, so num_memory must be "
                f">= 1, got num_memory={self.num_memory}"
            )
        return self


class PersistentMemoryAttention(MultiHeadBase):
    r"""Multi-head attention over context tokens plus learned persistent memory vectors.

    .. math::

        K' = [\,M_k ;\ c W_k\,],\quad V' = [\,M_v ;\ c W_v\,],\quad
        \operatorname{softmax}\!\big(d^{-1/2} (x W_q) K'^\top\big) V' \, W_o

    per head, with ``M_k, M_v`` (``memory_k``, ``memory_v``) of shape
    ``(heads, num_memory, dim_head)`` used as-is as extra keys and values: no
    projection, no position, never masked. One softmax covers memory and context,
    computed on the fused path by concatenating the memory to the keys and values.

    What ``context`` means:

    - a tensor ``(B, M, Dc)``: cross-attention over ``[memory; context]``;
    - ``None``: self-attention over ``[memory; x]`` (needs ``Dc == Dq``), as ``cross``;
    - with ``memory_only=True`` the layer takes no context at all (pass ``None``) and
      attends to the memory alone. Per head this is a feed-forward layer with a
      softmax activation, ``U_h softmax(V_h x)`` with ``V_h = d^{-1/2} M_k^h W_q^h``
      and ``U_h = W_o^h M_v^{h\top}``; with one head it is exactly ``U softmax(V x)``
      (see :meth:`from_feedforward`). Such a layer has no ``to_k``/``to_v``.

    A query whose context is fully masked still attends to the memory (the memory is
    never masked), so its attention term is generally not zero; with
    ``num_memory=0`` the layer is ``cross`` and such a query gets exactly zero.

    Parameter names: diffusers' ``to_q``, ``to_k``, ``to_v``, ``to_out.0``, plus
    ``memory_k``/``memory_v`` in the layout and initialisation (standard normal) of
    x-transformers' ``mem_k``/``mem_v`` (``Attention(num_mem_kv=...)``), which copy
    over directly: its ``to_q``/``to_k``/``to_v`` are ours, its ``to_out`` is our
    ``to_out.0`` (it has no output bias: use ``out_bias=False``).

    Args:
        query_dim: width of ``x`` (Dq).
        context_dim: width of ``context`` (Dc); ``None`` means ``query_dim``; unused
            when ``memory_only``.
        heads: number of heads (h).
        dim_head: width of each head (d).
        bias: bias in the q/k/v projections.
        out_bias: bias in the output projection.
        dropout: dropout after the output projection, in training.
        num_memory: persistent memory slots per head (N_mem, >= 0).
        memory_only: attend to the memory alone (the feed-forward view).

    Shape:
        - x: ``(B, N, Dq)``
        - context: ``(B, M, Dc)``, or ``None`` for self-attention over ``x`` (and for
          ``memory_only``, which accepts nothing else)
        - context_mask: bool ``(B, M)`` (``(B, N)`` for self-attention), True = may be
          attended; the memory is always attended
        - output: ``(B, N, Dq)``

        where B is the batch size, N the query length, M the context length.

    Paper:
        Sukhbaatar et al., "Augmenting Self-attention with Persistent Memory", 2019,
        arXiv:1907.01470.
    """

    def __init__(self, *, num_memory: int, memory_only: bool, **fields) -> None:
        # the fields of PersistentConfig, validated by it (num_memory >= 0, >= 1 when memory_only)
        # memory_only: nothing but the memory is attended, so there is no to_k / to_v
        super().__init__(**fields, key_value=not memory_only)
        heads, dim_head = self.heads, self.dim_head
        self.num_memory, self.memory_only = num_memory, memory_only
        self.memory_k = nn.Parameter(torch.randn(heads, num_memory, dim_head))
        self.memory_v = nn.Parameter(torch.randn(heads, num_memory, dim_head))

    def init_for_swap(self) -> None:
        """Called by :func:`zoo.swap` once the replaced attention's weights are loaded:
        zero memory keys and values, so each memory slot adds only a score of 0 to the
        softmax and nothing to the values, and the swapped model starts close to the
        original (exactly it when the context scores are very negative, never far)."""
        with torch.no_grad():
            self.memory_k.zero_()
            self.memory_v.zero_()

    @classmethod
    def from_feedforward(cls, w_in: Tensor, w_out: Tensor, b_out: Tensor | None = None) -> PersistentMemoryAttention:
        r"""A ``memory_only`` layer computing ``U softmax(V x) + b`` from feed-forward weights.

        Replaces a feed-forward sublayer ``Linear(D, F) -> activation -> Linear(F, D)``
        (without the first bias) by its softmax-activated attention form: one head of
        width ``D``, ``num_memory = F`` static keys ``sqrt(D) * V`` (rows of ``V``) and
        static values ``U^T`` (columns of ``U``), identity query and output projections.

        Args:
            w_in: ``V``, the first layer's weight, ``(F, D)``.
            w_out: ``U``, the second layer's weight, ``(D, F)``.
            b_out: the second layer's bias ``(D,)``, or ``None``.

        Returns:
            The layer, with ``.config`` set; ``layer(x)`` equals
            ``softmax(x @ w_in.T) @ w_out.T + b_out``.
        """
        for name, t, nd in (("w_in", w_in, 2), ("w_out", w_out, 2)):
            if not isinstance(t, Tensor) or t.ndim != nd:
                raise ValueError(f"{name} must be a 2-D weight tensor, got {getattr(t, 'shape', type(t).__name__)}")
        f, d = w_in.shape
        if tuple(w_out.shape) != (d, f):
            raise ValueError(
                f"w_out must have shape (D, F) = ({d}, {f}) to match w_in (F, D) = ({f}, {d}), "
                f"got {tuple(w_out.shape)}"
            )
        if b_out is not None and tuple(b_out.shape) != (d,):
            raise ValueError(f"b_out must have shape ({d},), got {tuple(b_out.shape)}")
        config = PersistentConfig(query_dim=d, heads=1, dim_head=d, num_memory=f, memory_only=True,
                                  bias=False, out_bias=b_out is not None)
        layer = cls(**config.fields()).to(dtype=w_in.dtype, device=w_in.device)
        layer.config = config
        with torch.no_grad():
            eye = torch.eye(d, dtype=w_in.dtype, device=w_in.device)
            layer.to_q.weight.copy_(eye)
            layer.to_out[0].weight.copy_(eye)
            if b_out is not None:
                layer.to_out[0].bias.copy_(b_out)
            layer.memory_k.copy_(w_in[None] * math.sqrt(d))  # undo the d**-0.5 score scale
            layer.memory_v.copy_(w_out.transpose(0, 1)[None])
        return layer

    def _check(self, x: Tensor, context: Tensor | None, context_mask: Tensor | None) -> Tensor:
        if self.memory_only:
            self.check_x(x)
            if context is not None:
                raise ValueError(
                    f"this persistent layer has memory_only=True: it attends to its memory alone and "
                    f"takes no context, got context of shape {tuple(getattr(context, 'shape', ()))}; "
                    f"pass context=None, or build it with memory_only=False"
                )
            if context_mask is not None:
                raise ValueError(
                    "this persistent layer has memory_only=True: its memory is never masked, so "
                    "context_mask must be None"
                )
            return x
        return self.check_context(x, context, context_mask)

    def forward(self, x: Tensor, context: Tensor | None = None, *, context_mask: Tensor | None = None) -> Tensor:
        context = self._check(x, context, context_mask)
        b = x.shape[0]
        q = split_heads(self.to_q(x), self.heads)
        mem_k = self.memory_k.unsqueeze(0).expand(b, -1, -1, -1)  # (B, h, N_mem, d)
        mem_v = self.memory_v.unsqueeze(0).expand(b, -1, -1, -1)
        if self.memory_only:
            k, v, mask = mem_k, mem_v, None
        else:
            k = split_heads(self.to_k(context), self.heads)
            v = split_heads(self.to_v(context), self.heads)
            mask = context_mask
            if self.num_memory:
                # Memory first (x-transformers' order), one softmax over both: the fused path.
                k = torch.cat([mem_k, k], dim=2)
                v = torch.cat([mem_v, v], dim=2)
                if mask is not None:
                    always = mask.new_ones(b, self.num_memory)
                    mask = torch.cat([always, mask], dim=1)
        return self.project_out(attend(q, k, v, mask))


def reference(module: PersistentMemoryAttention, x: Tensor, context: Tensor | None = None, *,
              context_mask=None) -> Tensor:
    """Naive oracle: keys/values ``[memory; context]`` built explicitly, scores materialised."""
    h, b = module.heads, x.shape[0]
    q = heads_view(linear(x, module.to_q), h)
    mem_k = module.memory_k.unsqueeze(0).repeat(b, 1, 1, 1)
    mem_v = module.memory_v.unsqueeze(0).repeat(b, 1, 1, 1)
    if module.memory_only:
        k, v, mask = mem_k, mem_v, None
    else:
        c = x if context is None else context
        k = torch.cat([mem_k, heads_view(linear(c, module.to_k), h)], dim=-2)
        v = torch.cat([mem_v, heads_view(linear(c, module.to_v), h)], dim=-2)
        mask = None
        if context_mask is not None:
            mem_mask = torch.ones(b, module.num_memory, dtype=torch.bool, device=x.device)
            mask = torch.cat([mem_mask, context_mask], dim=-1)
    return linear(heads_merge(naive_attention(q, k, v, mask)), module.to_out[0])


def make_inputs(module, *, batch, query_len, context_len, generator, dtype):
    """``x (B, N, Dq)`` and ``context (B, M, Dc)``; ``x`` alone for a ``memory_only`` layer."""
    cfg = module.config
    x = torch.randn(batch, query_len, cfg.query_dim, generator=generator, dtype=dtype)
    if cfg.memory_only:
        return {"x": x}
    context_dim = cfg.context_dim or cfg.query_dim
    return {"x": x, "context": torch.randn(batch, context_len, context_dim, generator=generator, dtype=dtype)}


def feedforward_weights(module: PersistentMemoryAttention) -> tuple[Tensor, Tensor]:
    r"""The feed-forward form ``U softmax_g(V x)`` of a memory-only layer's weights.

    Returns ``V (h*N_mem, Dq)`` and ``U (Dq, h*N_mem)``: hidden unit ``(i, j)`` (head
    ``i``, slot ``j``) has input weights ``d^{-1/2} M_k^i[j] W_q^i`` and output weights
    ``W_o^i M_v^i[j]``; ``softmax_g`` normalises each head's ``N_mem`` units
    together (a plain softmax with one head). Ignores ``to_q``'s bias.
    """
    h, n, d = module.memory_k.shape
    wq = module.to_q.weight.view(h, d, module.query_dim)  # (h, d, Dq)
    wo = module.to_out[0].weight.view(module.query_dim, h, d)  # (Dq, h, d)
    v_ff = torch.einsum("hnd,hdq->hnq", module.memory_k, wq).reshape(h * n, module.query_dim) / math.sqrt(d)
    u_ff = torch.einsum("qhd,hnd->qhn", wo, module.memory_v).reshape(module.query_dim, h * n)
    return v_ff, u_ff


def _rand_mask(generator, b, m):
    mask = torch.rand(b, m, generator=generator) > 0.4
    mask[0] = False  # one fully masked row
    mask[1:, 0] = True
    return mask


def _law_no_memory_is_cross(spec, fields, generator):
    """num_memory=0: the layer equals ``cross`` loaded with the same weights."""
    fields = {**fields, "num_memory": 0, "memory_only": False, "dropout": 0.0}
    layer = zoo.create(spec, **fields).double().eval()
    cross_fields = {k: v for k, v in fields.items() if k not in ("num_memory", "memory_only")}
    cross = MultiHeadAttention(**cross_fields).double().eval()
    state = {k: v for k, v in layer.state_dict().items() if not k.startswith("memory_")}
    cross.load_state_dict(state)
    x = torch.randn(3, 5, layer.query_dim, generator=generator, dtype=torch.float64)
    c = torch.randn(3, 7, layer.context_dim, generator=generator, dtype=torch.float64)
    mask = _rand_mask(generator, 3, 7)
    with torch.no_grad():
        pairs = [("context", layer(x, c), cross(x, c)),
                 ("context and mask", layer(x, c, context_mask=mask), cross(x, c, context_mask=mask))]
        if layer.context_dim == layer.query_dim:
            pairs.append(("context=None", layer(x), cross(x)))
    for what, ours, theirs in pairs:
        err = (ours - theirs).abs().max().item()
        expect(err < 1e-10,
               f"with num_memory=0 and {what} it differs from cross with the same weights by {err:.2e}")


def _law_memory_only_is_softmax_feedforward(spec, fields, generator):
    """Memory only: the layer is ``U softmax(V x) + b`` with U, V built from its weights."""
    fields = {**fields, "memory_only": True, "dropout": 0.0, "bias": False}
    fields["num_memory"] = max(1, spec.config.model_validate({**fields, "memory_only": False}).num_memory)
    layer = zoo.create(spec, **fields).double().eval()
    x = torch.randn(2, 6, layer.query_dim, generator=generator, dtype=torch.float64)
    v_ff, u_ff = feedforward_weights(layer)
    h, n = layer.heads, layer.num_memory
    hidden = (x @ v_ff.transpose(0, 1)).unflatten(-1, (h, n)).softmax(-1).flatten(-2)
    expected = hidden @ u_ff.transpose(0, 1)
    if layer.to_out[0].bias is not None:
        expected = expected + layer.to_out[0].bias
    with torch.no_grad():
        ours = layer(x)
    err = (ours - expected).abs().max().item()
    expect(err < 1e-10, f"memory-only layer differs from U softmax(V x) built from its weights by {err:.2e}")
    # ... and any feed-forward layer U softmax(V x) + b is a memory-only layer.
    d, f = layer.query_dim, 3 * layer.query_dim
    w_in = torch.randn(f, d, generator=generator, dtype=torch.float64) / math.sqrt(d)
    w_out = torch.randn(d, f, generator=generator, dtype=torch.float64) / math.sqrt(f)
    b_out = torch.randn(d, generator=generator, dtype=torch.float64)
    ff_layer = spec.module.from_feedforward(w_in, w_out, b_out).eval()
    with torch.no_grad():
        ours = ff_layer(x)
    expected = torch.softmax(x @ w_in.T, dim=-1) @ w_out.T + b_out
    err = (ours - expected).abs().max().item()
    expect(err < 1e-10, f"from_feedforward(V, U, b) differs from U softmax(V x) + b by {err:.2e}")


def _law_masked_context_leaves_memory(spec, fields, generator):
    """A fully masked context leaves exactly the memory: the memory-only layer's output."""
    fields = {**fields, "dropout": 0.0}
    fields["num_memory"] = max(1, spec.config.model_validate({**fields, "memory_only": False}).num_memory)
    layer = zoo.create(spec, **{**fields, "memory_only": False}).double().eval()
    mem_only = zoo.create(spec, **{**fields, "memory_only": True}).double().eval()
    mem_only.load_state_dict(layer.state_dict(), strict=False)  # all but to_k/to_v
    x = torch.randn(2, 4, layer.query_dim, generator=generator, dtype=torch.float64)
    c = torch.randn(2, 6, layer.context_dim, generator=generator, dtype=torch.float64)
    nothing = torch.zeros(2, 6, dtype=torch.bool)
    with torch.no_grad():
        ours, expected = layer(x, c, context_mask=nothing), mem_only(x)
    expect(torch.isfinite(ours).all(), "a fully masked context gave non-finite output")
    err = (ours - expected).abs().max().item()
    expect(err < 1e-10, (
        f"with the whole context masked the memory (never masked) should be all that is attended, "
        f"but the output differs from the memory-only layer's by {err:.2e}"
    ))


# --------------------------------------------------------------------------- benchmark (`zoo bench`)


def bare_sdpa(m: PersistentMemoryAttention, x: Tensor, context: Tensor, **_) -> Tensor:
    """By hand: SDPA over the persistent memory concatenated with the context's keys and
    values (memory first, as x-transformers; the order does not change the result)."""
    import torch.nn.functional as F

    def heads(t: Tensor) -> Tensor:
        return t.unflatten(-1, (m.config.heads, -1)).transpose(1, 2)

    b = x.shape[0]
    q = heads(F.linear(x, m.to_q.weight, m.to_q.bias))
    k = heads(F.linear(context, m.to_k.weight, m.to_k.bias))
    v = heads(F.linear(context, m.to_v.weight, m.to_v.bias))
    k = torch.cat([m.memory_k.unsqueeze(0).expand(b, -1, -1, -1), k], dim=2)
    v = torch.cat([m.memory_v.unsqueeze(0).expand(b, -1, -1, -1), v], dim=2)
    o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(-2)
    return F.linear(o, m.to_out[0].weight, m.to_out[0].bias)


SPEC = zoo.declare_variant(
    PersistentMemoryAttention, "persistent",
    aliases=("persistent-memory", "all-attention"),
    config=PersistentConfig,
    summary="Cross- or self-attention whose keys/values are extended by learned per-head memory vectors.",
    paper=(
        'Sukhbaatar et al., "Augmenting Self-attention with Persistent Memory", 2019, '
        "arXiv:1907.01470"
    ),
    make_inputs=make_inputs,
    examples=(
        {"query_dim": 32, "context_dim": 24, "heads": 4, "dim_head": 8, "num_memory": 5},
        {"query_dim": 16, "heads": 2, "dim_head": 8, "bias": True, "dropout": 0.25, "num_memory": 3},
        {"query_dim": 16, "heads": 2, "dim_head": 8, "num_memory": 0},
        {"query_dim": 16, "heads": 2, "dim_head": 8, "num_memory": 4, "memory_only": True, "dropout": 0.25},
    ),
    reference=reference,
    laws=(
        zoo.Law("no-memory-is-cross", "with num_memory=0 it equals cross with the same weights",
                _law_no_memory_is_cross),
        zoo.Law("memory-only-is-softmax-feedforward",
                "attending to the memory alone is the feed-forward layer U softmax(V x) built from "
                "the same weights (and from_feedforward builds any such layer)",
                _law_memory_only_is_softmax_feedforward),
        zoo.Law("masked-context-leaves-memory",
                "the memory is never masked: with the whole context masked the output is the "
                "memory-only layer's",
                _law_masked_context_leaves_memory),
    ),
    equation=(
        r"\mathrm{softmax}\left(\frac{(xW_q)[M_k;\,cW_k]^\top}{\sqrt{d}}\right)[M_v;\,cW_v]\,W_o"
    ),
    complexity="O(N·(M+N_mem)·h·d) time, O((N+M+N_mem)·h·d) memory",
    context_shape="(B, M, Dc), or None (self-attention; memory only when memory_only=True)",
    bench=zoo.BenchSpec(shapes=zoo.STANDARD_SHAPES, baseline=bare_sdpa),
)

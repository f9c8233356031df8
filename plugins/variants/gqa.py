"""``gqa``: grouped-query (and multi-query) cross-attention.

Shazeer, "Fast Transformer Decoding: One Write-Head is All You Need", 2019,
arXiv:1911.02150 (multi-query); Ainslie et al., "GQA: Training Generalized
Multi-Query Transformer Models from Multi-Head Checkpoints", 2023, arXiv:2305.13245.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

import zoo
from zoo.nn import MultiHeadAttention, MultiHeadBase, MultiHeadFields, attend, split_heads
from zoo.oracle import heads_merge, heads_view, linear, naive_attention
from zoo.testing import expect


def _validate_kv_heads(heads: int, kv_heads: int) -> None:
    if kv_heads < 1 or heads % kv_heads:
        divisors = [k for k in range(1, heads + 1) if heads % k == 0]
        raise ValueError(
            f"kv_heads={kv_heads} must divide heads={heads} (each key/value head serves "
            f"heads // kv_heads query heads); choose kv_heads from {divisors}"
        )


class GQAConfig(MultiHeadFields):
    """Config of :class:`GroupedQueryAttention`."""

    kv_heads: int = Field(
        1, gt=0,
        description="Number of key/value heads; divides heads. 1 = multi-query, heads = standard cross.",
    )

    @model_validator(mode="after")
    def _kv_heads_divide_heads(self) -> GQAConfig:
        _validate_kv_heads(self.heads, self.kv_heads)
        return self


class GroupedQueryAttention(MultiHeadBase):
    r"""Cross-attention whose ``heads`` query heads share ``kv_heads`` key/value heads.

    .. math:: O_i = \operatorname{softmax}\!\big(d^{-1/2} Q_i K_{g(i)}^\top\big) V_{g(i)},
        \qquad g(i) = \lfloor i / (h / h_{kv}) \rfloor

    Query head ``i`` reads key/value head ``i // (heads // kv_heads)`` (contiguous groups,
    as transformers' ``repeat_kv`` and SDPA's ``enable_gqa``). The fused path passes the
    ``kv_heads`` keys and values to ``scaled_dot_product_attention(enable_gqa=True)``:
    they are never repeated in memory. ``kv_heads == heads`` is ``cross``;
    ``kv_heads == 1`` is multi-query attention.

    Args:
        query_dim, context_dim, heads, dim_head, bias, out_bias, dropout: as ``cross``.
        kv_heads: number of key/value heads (h_kv); must divide ``heads``.

    Shape:
        - x: ``(B, N, Dq)``
        - context: ``(B, M, Dc)``, or ``None`` for self-attention over ``x``
        - context_mask: bool ``(B, M)``, True = may be attended
        - output: ``(B, N, Dq)``

        Parameters: ``to_q`` Linear(Dq, h*d); ``to_k``, ``to_v`` Linear(Dc, h_kv*d);
        ``to_out.0`` Linear(h*d, Dq).
    """

    def __init__(self, *, kv_heads: int, **fields) -> None:  # the fields of GQAConfig, validated by it
        super().__init__(**fields, key_value=False)
        self.kv_heads = kv_heads
        self.to_k = nn.Linear(self.context_dim, kv_heads * self.dim_head, bias=fields["bias"])
        self.to_v = nn.Linear(self.context_dim, kv_heads * self.dim_head, bias=fields["bias"])

    @classmethod
    def from_multihead(cls, layer: nn.Module, kv_heads: int) -> GroupedQueryAttention:
        """Convert a multi-head layer (``cross``'s parameters) by mean-pooling its key and
        value heads group by group, as Ainslie et al. (2023, Sec. 2.1) convert checkpoints.

        Args:
            layer: a module with ``to_q``, ``to_k``, ``to_v``, ``to_out.0`` and ``heads``
                (a zoo ``cross`` layer, or diffusers' ``Attention``).
            kv_heads: key/value heads of the result; must divide ``layer.heads``.

        Returns:
            A ``gqa`` layer built with :func:`zoo.create` (it has ``.config``, so
            ``zoo.save`` takes it) whose query and output weights and output dropout are
            ``layer``'s; with ``kv_heads == heads`` it computes exactly what ``layer``
            computes.

        Raises:
            ValueError: ``layer`` computes something a ``gqa`` layer cannot (a scale other
                than ``dim_head**-0.5`` such as ``scale_qk=False``, QK-norm, a residual
                connection or output rescaling, group/spatial/cross norms, added key/value
                projections, a custom processor, projections that are not plain linears),
                or ``kv_heads`` does not divide ``heads``.
        """
        name = type(layer).__name__
        lins = {n: getattr(layer, n, None) for n in ("to_q", "to_k", "to_v")}
        out = getattr(layer, "to_out", None)
        lins["to_out.0"] = out[0] if isinstance(out, nn.ModuleList) and len(out) else None
        bad = [n for n, lin in lins.items() if type(lin) is not nn.Linear]
        if bad or not isinstance(getattr(layer, "heads", None), int):
            raise ValueError(f"GroupedQueryAttention.from_multihead expects a multi-head layer with plain nn.Linear "
                             f"to_q, to_k, to_v, to_out[0] and an int `heads` (a zoo cross layer or diffusers' "
                             f"Attention); {name} has {', '.join(f'{n}={type(lins[n]).__name__}' for n in bad) or 'no heads'}")
        heads = layer.heads
        _validate_kv_heads(heads, kv_heads)
        inner, query_dim = layer.to_q.weight.shape
        dim_head = inner // heads
        parts = {
            "QK-norm (norm_q/norm_k)": getattr(layer, "norm_q", None) is not None or getattr(layer, "norm_k", None) is not None,
            f"a scale {getattr(layer, 'scale', None)} other than dim_head**-0.5 (e.g. scale_qk=False)":
                abs(getattr(layer, "scale", dim_head ** -0.5) - dim_head ** -0.5) > 1e-12,
            "residual_connection=True": bool(getattr(layer, "residual_connection", False)),
            "rescale_output_factor != 1": getattr(layer, "rescale_output_factor", 1.0) != 1.0,
            "group_norm/spatial_norm/norm_cross": any(getattr(layer, a, None) is not None
                                                      for a in ("group_norm", "spatial_norm", "norm_cross")),
            "added key/value projections": getattr(layer, "add_k_proj", None) is not None,
            "key/value widths other than the queries'": layer.to_k.weight.shape[0] != inner,
        }
        processor = getattr(layer, "processor", None)
        if processor is not None and type(processor).__name__ not in ("AttnProcessor", "AttnProcessor2_0"):
            parts[f"processor {type(processor).__name__}"] = True
        used = [what for what, present in parts.items() if present]
        if used:
            raise ValueError(f"GroupedQueryAttention.from_multihead: {name} has {', '.join(used)}, which a gqa layer "
                             f"does not compute; converting it would give a different function. Convert a layer "
                             f"without them (or build gqa with zoo.create and train it)")
        dropout = out[1].p if len(out) > 1 and isinstance(out[1], nn.Dropout) else float(getattr(layer, "dropout", 0.0) or 0.0)
        new = zoo.create(SPEC, query_dim=query_dim, context_dim=layer.to_k.weight.shape[1], heads=heads,
                         dim_head=dim_head, bias=layer.to_q.bias is not None,
                         out_bias=layer.to_out[0].bias is not None, dropout=dropout, kv_heads=kv_heads)
        state = {f"{n}.{leaf}": t.detach() for n, lin in lins.items() for leaf, t in lin.named_parameters()}
        for name_kv in ("to_k", "to_v"):
            for leaf, t in getattr(layer, name_kv).named_parameters():
                grouped = t.detach().reshape(kv_heads, heads // kv_heads, dim_head, *t.shape[1:])
                state[f"{name_kv}.{leaf}"] = grouped.mean(dim=1).reshape(kv_heads * dim_head, *t.shape[1:])
        new.load_state_dict(state, strict=True)
        return new.to(layer.to_q.weight).train(layer.training)

    def forward(self, x: Tensor, context: Tensor | None = None, *, context_mask: Tensor | None = None) -> Tensor:
        context = self.check_context(x, context, context_mask)
        q = split_heads(self.to_q(x), self.heads)
        k = split_heads(self.to_k(context), self.kv_heads)
        v = split_heads(self.to_v(context), self.kv_heads)
        gqa = self.kv_heads != self.heads
        return self.project_out(attend(q, k, v, context_mask, enable_gqa=gqa))


def reference(module: GroupedQueryAttention, x: Tensor, context: Tensor | None = None, *,
              context_mask=None) -> Tensor:
    """Naive oracle: the key/value heads written out per query head (an explicit index)."""
    c = x if context is None else context
    q = heads_view(linear(x, module.to_q), module.heads)
    k = heads_view(linear(c, module.to_k), module.kv_heads)
    v = heads_view(linear(c, module.to_v), module.kv_heads)
    group = module.heads // module.kv_heads
    index = torch.tensor([i // group for i in range(module.heads)])
    k, v = k.index_select(-3, index), v.index_select(-3, index)
    return linear(heads_merge(naive_attention(q, k, v, context_mask)), module.to_out[0])


def _inputs(layer, generator):
    x = torch.randn(3, 5, layer.query_dim, generator=generator, dtype=torch.float64)
    c = torch.randn(3, 7, layer.context_dim, generator=generator, dtype=torch.float64)
    mask = torch.rand(3, 7, generator=generator) > 0.4
    mask[0] = False  # one fully masked row
    mask[1:, 0] = True
    return x, c, mask


def _compare(layer, cross, generator, what):
    x, c, mask = _inputs(layer, generator)
    with torch.no_grad():
        pairs = [("a context", layer(x, c), cross(x, c)),
                 ("a context and mask", layer(x, c, context_mask=mask), cross(x, c, context_mask=mask))]
        if layer.context_dim == layer.query_dim:
            pairs.append(("context=None", layer(x), cross(x)))
    for how, ours, theirs in pairs:
        err = (ours - theirs).abs().max().item()
        expect(err < 1e-10, f"{what}: with {how} the output differs by {err:.2e}")


def _law_all_kv_heads_is_cross(spec, fields, generator):
    """kv_heads == heads: the layer is ``cross`` (the state dict loads strictly)."""
    fields = {**fields, "dropout": 0.0}
    fields["kv_heads"] = spec.config.model_validate(fields).heads  # the example's, or the default
    layer = zoo.create(spec, **fields).double().eval()
    cross = MultiHeadAttention(**{k: v for k, v in fields.items() if k != "kv_heads"}).double().eval()
    cross.load_state_dict(layer.state_dict(), strict=True)
    _compare(layer, cross, generator, "with kv_heads == heads it is not cross with the same weights")


def _law_one_kv_head_is_multi_query(spec, fields, generator):
    """kv_heads == 1: every query head reads the same K and V (cross with K/V copied to all heads)."""
    fields = {**fields, "dropout": 0.0, "kv_heads": 1}
    layer = zoo.create(spec, **fields).double().eval()
    d = layer.config.dim_head
    for name in ("to_k", "to_v"):
        width = getattr(layer, name).weight.shape[0]
        expect(width == d,
               f"with kv_heads=1, {name} must have one head's width dim_head={d} outputs, has {width}")
    cross = MultiHeadAttention(**{k: v for k, v in fields.items() if k != "kv_heads"}).double().eval()
    state = dict(layer.state_dict())
    for name in ("to_k", "to_v"):  # the one head's rows, repeated for every query head
        state[f"{name}.weight"] = state[f"{name}.weight"].repeat(layer.heads, 1)
        if f"{name}.bias" in state:
            state[f"{name}.bias"] = state[f"{name}.bias"].repeat(layer.heads)
    cross.load_state_dict(state, strict=True)
    _compare(layer, cross, generator,
             "with kv_heads=1 the query heads do not all read the same keys and values")


def bare(m: GroupedQueryAttention, x: Tensor, context: Tensor) -> Tensor:
    """The bench's bare twin: F.linear, views and one SDPA call with ``enable_gqa`` (no checks, no mask)."""
    b, n, _ = x.shape
    mc = context.shape[1]
    q = F.linear(x, m.to_q.weight, m.to_q.bias).view(b, n, m.heads, -1).transpose(1, 2)
    k = F.linear(context, m.to_k.weight, m.to_k.bias).view(b, mc, m.kv_heads, -1).transpose(1, 2)
    v = F.linear(context, m.to_v.weight, m.to_v.bias).view(b, mc, m.kv_heads, -1).transpose(1, 2)
    o = F.scaled_dot_product_attention(q, k, v, enable_gqa=m.kv_heads != m.heads)
    return F.linear(o.transpose(1, 2).reshape(b, n, -1), m.to_out[0].weight, m.to_out[0].bias)


def _grouped(shape: zoo.BenchShape) -> zoo.BenchShape:
    """A standard workload with kv_heads = heads / 4 (groups of four query heads; 1 when fewer heads)."""
    def at(w: zoo.Workload) -> zoo.Workload:
        heads = w.config.get("heads", 8)
        return replace(w, config={**w.config, "kv_heads": heads // 4 if heads % 4 == 0 else 1})
    return replace(shape, full=at(shape.full), quick=at(shape.quick), tiny=at(shape.tiny))


SPEC = zoo.declare_variant(
    GroupedQueryAttention, "gqa",
    aliases=("grouped-query", "multi-query", "mqa"),
    config=GQAConfig,
    summary="Grouped-query cross-attention: heads query heads share kv_heads key/value heads (1 = multi-query).",
    paper=(
        'Ainslie et al., "GQA: Training Generalized Multi-Query Transformer Models from Multi-Head '
        'Checkpoints", 2023, arXiv:2305.13245; Shazeer, "Fast Transformer Decoding: One Write-Head '
        'is All You Need", 2019, arXiv:1911.02150'
    ),
    examples=(
        {"query_dim": 32, "context_dim": 24, "heads": 4, "dim_head": 8, "kv_heads": 2},
        {"query_dim": 16, "heads": 4, "dim_head": 8, "bias": True, "dropout": 0.25, "kv_heads": 1},
        {"query_dim": 16, "heads": 2, "dim_head": 8, "kv_heads": 2},
    ),
    reference=reference,
    laws=(
        zoo.Law("all-kv-heads-is-cross", "with kv_heads == heads it equals cross with the same weights",
                _law_all_kv_heads_is_cross),
        zoo.Law("one-kv-head-is-multi-query",
                "with kv_heads=1 every query head reads the same keys and values (cross with the "
                "one K/V head copied to every head)",
                _law_one_kv_head_is_multi_query),
    ),
    equation=(
        r"O_i = \mathrm{softmax}\left(\frac{(xW_q^{i})(cW_k^{g(i)})^\top}{\sqrt{d}}\right)(cW_v^{g(i)}),"
        r"\quad g(i) = \left\lfloor \frac{i\,h_{kv}}{h} \right\rfloor"
    ),
    complexity="O(N·M·h·d) time; K/V: O(M·h_kv·d) memory (h/h_kv times less than cross)",
    context_shape="(B, M, Dc), or None (self-attention)",
    bench=zoo.BenchSpec(shapes=tuple(_grouped(s) for s in zoo.STANDARD_SHAPES), baseline=bare,
        baseline_label="SDPA with enable_gqa by hand", target=1.05),
)



"""``qk-norm``: a complete zoo variant in under fifty lines. Copy this file to start yours.

Query-key normalisation (Dehghani et al., "Scaling Vision Transformers to 22 Billion
Parameters", 2023, arXiv:2302.05442): LayerNorm each head's queries and keys before
the dot product, which keeps attention logits bounded and training stable.

`zoo.nn` gives the config fields, diffusers' parameter names and the input checks;
`zoo.oracle` gives the naive maths with the zoo's masked-row rule. `@zoo.variant` declares
it once: the config's `variant` literal, the spec (`QKNormAttention.spec`) and the
registration follow. Named by an entry point of the group `zoo` (or loaded with
`Registry.load_plugin`), it passes `zoo check`.
"""

import torch
from pydantic import Field
from torch import nn

import zoo
from zoo.nn import MultiHeadBase, MultiHeadFields, attend, split_heads
from zoo.oracle import heads_merge, heads_view, linear, naive_attention


class QKNormConfig(MultiHeadFields):
    """Config of :class:`QKNormAttention`: the multi-head fields plus the norms' epsilon."""

    eps: float = Field(1e-5, gt=0, description="Epsilon of the query and key LayerNorms.")


def layer_norm(t, norm):
    """LayerNorm written out (biased variance, as torch's)."""
    mean, var = t.mean(-1, keepdim=True), t.var(-1, unbiased=False, keepdim=True)
    return (t - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def reference(module, x, context=None, *, context_mask=None):
    """The oracle: the same maths from the module's parameters, never calling ``forward``."""
    c, h = (x if context is None else context), module.heads
    q = layer_norm(heads_view(linear(x, module.to_q), h), module.norm_q)
    k = layer_norm(heads_view(linear(c, module.to_k), h), module.norm_k)
    v = heads_view(linear(c, module.to_v), h)
    return linear(heads_merge(naive_attention(q, k, v, context_mask)), module.to_out[0])


@zoo.variant(
    "qk-norm", config=QKNormConfig, reference=reference,
    summary="Multi-head attention with LayerNorm on queries and keys (stable logits).",
    paper='Dehghani et al., "Scaling Vision Transformers to 22 Billion Parameters", 2023, arXiv:2302.05442',
    examples=({"query_dim": 16, "context_dim": 12, "heads": 2, "dim_head": 8, "dropout": 0.25, "eps": 1e-3},),
)
class QKNormAttention(MultiHeadBase):
    """Multi-head attention with LayerNorm on each head's queries and keys.

    Args: the fields of :class:`QKNormConfig`, validated by it (``eps``: the norms' epsilon).

    Shape: x ``(B, N, Dq)``; context ``(B, M, Dc)`` or ``None``; context_mask bool ``(B, M)``.
    """

    def __init__(self, *, eps, **fields):
        super().__init__(**fields)
        self.norm_q, self.norm_k = nn.LayerNorm(self.dim_head, eps=eps), nn.LayerNorm(self.dim_head, eps=eps)

    def forward(self, x, context=None, *, context_mask=None):
        context = self.check_context(x, context, context_mask)
        q = self.norm_q(split_heads(self.to_q(x), self.heads))
        k = self.norm_k(split_heads(self.to_k(context), self.heads))
        return self.project_out(attend(q, k, split_heads(self.to_v(context), self.heads), context_mask))


if __name__ == "__main__":  # `python examples/fifty_lines.py`: the harness's table, then any failure
    report = zoo.check(QKNormAttention.spec)
    print(report)
    raise SystemExit(0 if report.passed else 1)

"""``linear``: linear-complexity cross-attention with the feature map ``elu(t) + 1``.

Katharopoulos et al., "Transformers are RNNs: Fast Autoregressive Transformers with
Linear Attention", 2020, arXiv:2006.16236.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor

import zoo
from zoo.nn import MultiHeadBase, MultiHeadFields, split_heads
from zoo.oracle import heads_merge, heads_view, linear
from zoo.testing import expect


class LinearConfig(MultiHeadFields):
    """Config of :class:`LinearAttention`."""


def feature_map(t: Tensor) -> Tensor:
    """``phi(t) = elu(t) + 1``: positive, so every similarity ``phi(q) . phi(k)`` is > 0."""
    return F.elu(t) + 1.0


def linear_attend(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None) -> Tensor:
    """Kernelised attention by two running sums, never an N x M matrix.

    Args:
        q: ``(B, h, N, d)``; k: ``(B, h, M, d)``; v: ``(B, h, M, dv)``.
        key_mask: bool ``(B, M)``, True = may be attended; masked keys are left out of both sums.

    Returns:
        ``(B, h, N, dv)``: ``phi(q) S / (phi(q) . z)`` with ``S = sum_j phi(k_j) v_j^T`` and
        ``z = sum_j phi(k_j)``; exactly zero for a batch element with no key left (and for a
        query whose similarity to every key underflows to zero). float16 inputs are
        summed in float32 and the result cast back (bfloat16 has float32's range, and
        its fused matmuls accumulate in float32 already).
    """
    dtype = q.dtype
    if dtype == torch.float16:
        # The sums run over the whole context: in float16 they overflow (it tops out at 65504)
        # and drift as M grows. Accumulate in float32, return the input's dtype. (Upcasting
        # bfloat16 too cost 1.47x on the sd workload's forward for no gain in range.)
        q, k, v = q.float(), k.float(), v.float()
    fq, fk = feature_map(q), feature_map(k)
    if key_mask is not None:
        fk = fk * key_mask[:, None, :, None].to(fk.dtype)
    s = fk.transpose(-1, -2) @ v  # (B, h, d, dv)
    z = fk.sum(dim=-2)  # (B, h, d)
    num = fq @ s  # (B, h, N, dv)
    den = fq @ z.unsqueeze(-1)  # (B, h, N, 1)
    # No key left (masked), or every similarity underflowed to 0 (elu + 1 = exp(t) for t < 0):
    # the numerator is 0 too; divide by 1 instead (0, and a zero gradient, never NaN).
    return (num / torch.where(den > 0, den, torch.ones_like(den))).to(dtype)


class LinearAttention(MultiHeadBase):
    r"""Linear attention: softmax replaced by the kernel ``phi(q) . phi(k)``, ``phi = elu + 1``.

    .. math:: O_i = \frac{\phi(q_i)^\top \sum_j \phi(k_j) v_j^\top}{\phi(q_i)^\top \sum_j \phi(k_j)}

    The two sums over the context (``S``, d x d per head, and ``z``) are formed once, so
    time is O((N + M) h d^2) and memory never holds an N x M matrix. It is not a softmax:
    results differ from ``cross``. Masked keys are left out of both sums; a query with
    no key left gets an attention term of exactly zero. Parameter names are ``cross``'s.

    Args:
        query_dim, context_dim, heads, dim_head, bias, out_bias, dropout: as ``cross``.

    Shape:
        - x: ``(B, N, Dq)``
        - context: ``(B, M, Dc)``, or ``None`` for self-attention over ``x``
        - context_mask: bool ``(B, M)``, True = may be attended
        - output: ``(B, N, Dq)``
    """

    def forward(self, x: Tensor, context: Tensor | None = None, *, context_mask: Tensor | None = None) -> Tensor:
        context = self.check_context(x, context, context_mask)
        q = split_heads(self.to_q(x), self.heads)
        k = split_heads(self.to_k(context), self.heads)
        v = split_heads(self.to_v(context), self.heads)
        return self.project_out(linear_attend(q, k, v, context_mask))


def _phi(t: Tensor) -> Tensor:
    """``elu(t) + 1`` written out: ``t + 1`` for t > 0, ``exp(t)`` otherwise."""
    return torch.where(t > 0, t + 1.0, torch.exp(torch.clamp(t, max=0.0)))


def reference(module: LinearAttention, x: Tensor, context: Tensor | None = None, *, context_mask=None) -> Tensor:
    """Naive oracle: the sums S and z accumulated key by key, in a Python loop."""
    c = x if context is None else context
    h = module.heads
    q, k, v = (heads_view(linear(t, lin), h) for t, lin in ((x, module.to_q), (c, module.to_k), (c, module.to_v)))
    fq, fk = _phi(q), _phi(k)
    b, _, m, d = k.shape
    s = torch.zeros(b, h, d, v.shape[-1], dtype=x.dtype)
    z = torch.zeros(b, h, d, dtype=x.dtype)
    for j in range(m):
        keep = torch.ones(b, dtype=x.dtype) if context_mask is None else context_mask[:, j].to(x.dtype)
        s = s + keep[:, None, None, None] * fk[:, :, j, :, None] * v[:, :, j, None, :]
        z = z + keep[:, None, None] * fk[:, :, j]
    num = torch.einsum("bhnd,bhde->bhne", fq, s)
    den = torch.einsum("bhnd,bhd->bhn", fq, z)[..., None]
    out = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))
    return linear(heads_merge(out), module.to_out[0])


def _law_kernel_formula(spec, fields, generator):
    """The output is the row-normalised kernel matrix ``phi(Q) phi(K)^T`` times V (paper eq. 2-4)."""
    layer = zoo.create(spec, **{**fields, "dropout": 0.0}).double().eval()
    x = torch.randn(3, 6, layer.query_dim, generator=generator, dtype=torch.float64)
    c = torch.randn(3, 9, layer.context_dim, generator=generator, dtype=torch.float64)
    mask = torch.rand(3, 9, generator=generator) > 0.4
    mask[0] = False
    mask[1:, 0] = True
    h = layer.heads
    q, k, v = (heads_view(linear(t, lin), h) for t, lin in ((x, layer.to_q), (c, layer.to_k), (c, layer.to_v)))
    sim = _phi(q) @ _phi(k).transpose(-1, -2) * mask[:, None, None, :]  # (B, h, N, M): the kernel
    total = sim.sum(-1, keepdim=True)
    attn = sim / torch.where(total > 0, total, torch.ones_like(total))
    expected = linear(heads_merge(attn @ v), layer.to_out[0])
    with torch.no_grad():
        ours = layer(x, c, context_mask=mask)
    err = (ours - expected).abs().max().item()
    expect(err < 1e-10,
           f"differs from the kernel formula sum_j sim(q,k_j) v_j / sum_j sim(q,k_j) by {err:.2e}")
    expect((attn >= 0).all(), "phi(q) . phi(k) must be non-negative (elu + 1 > 0)")


def _law_no_n_by_m_tensor(spec, fields, generator):
    """No tensor of N x M elements (or more) is ever created: memory is linear in N and M."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.largest = (0, "")

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, Tensor) and t.numel() > self.largest[0]:
                    self.largest = (t.numel(), f"{func} -> {tuple(t.shape)}")
            return out

    layer = zoo.create(spec, **{**fields, "dropout": 0.0}).eval()
    n = m = 512
    x = torch.randn(1, n, layer.query_dim, generator=generator)
    c = torch.randn(1, m, layer.context_dim, generator=generator)
    mask = torch.rand(1, m, generator=generator) > 0.3
    bound = n * m
    widest = n * max(layer.query_dim, layer.context_dim, layer.to_q.out_features)
    expect(widest < bound, f"law needs N*M ({bound}) above the widest projection ({widest})")
    with torch.no_grad(), Largest() as mode:
        layer(x, c, context_mask=mask)
    size, where = mode.largest
    expect(size < bound,
           f"the forward pass created a tensor of {size} elements ({where}) for N = M = {n}: "
           f"an N x M matrix (or larger); linear attention must only form the running sums")


def bare(m: LinearAttention, x: Tensor, context: Tensor) -> Tensor:
    """The bench's bare twin: the two running sums by hand (no checks, no mask)."""
    b, n, _ = x.shape
    mc = context.shape[1]
    q = F.linear(x, m.to_q.weight, m.to_q.bias).view(b, n, m.heads, -1).transpose(1, 2)
    k = F.linear(context, m.to_k.weight, m.to_k.bias).view(b, mc, m.heads, -1).transpose(1, 2)
    v = F.linear(context, m.to_v.weight, m.to_v.bias).view(b, mc, m.heads, -1).transpose(1, 2)
    fq, fk = F.elu(q) + 1, F.elu(k) + 1
    o = (fq @ (fk.transpose(-1, -2) @ v)) / (fq @ fk.sum(dim=-2).unsqueeze(-1))
    return F.linear(o.transpose(1, 2).reshape(b, n, -1), m.to_out[0].weight, m.to_out[0].bias)


SPEC = zoo.declare_variant(
    LinearAttention, "linear",
    aliases=("linear-attention", "linear-transformer"),
    config=LinearConfig,
    summary="Linear attention (elu+1 kernel): cost and memory linear in N and M, never an N x M matrix.",
    paper=(
        'Katharopoulos et al., "Transformers are RNNs: Fast Autoregressive Transformers with Linear '
        'Attention", 2020, arXiv:2006.16236'
    ),
    examples=(
        {"query_dim": 32, "context_dim": 24, "heads": 4, "dim_head": 8},
        {"query_dim": 16, "heads": 2, "dim_head": 8, "bias": True, "dropout": 0.25},
    ),
    reference=reference,
    laws=(
        zoo.Law("kernel-formula",
                "equals sum_j phi(q).phi(k_j) v_j / sum_j phi(q).phi(k_j) with phi = elu + 1 "
                "(the N x M kernel matrix, row-normalised)",
                _law_kernel_formula),
        zoo.Law("no-n-by-m-tensor",
                "the forward pass never creates a tensor of N x M elements (N = M = 512): memory "
                "is linear in N and M",
                _law_no_n_by_m_tensor),
    ),
    equation=(
        r"O_i = \frac{\phi(q_i)^\top \sum_j \phi(k_j)\, v_j^\top}{\phi(q_i)^\top \sum_j \phi(k_j)},"
        r"\quad \phi(t) = \mathrm{elu}(t) + 1"
    ),
    complexity="O((N+M)·h·d²) time, O((N+M)·h·d + h·d²) memory: no N x M term",
    context_shape="(B, M, Dc), or None (self-attention)",
    bench=zoo.BenchSpec(shapes=zoo.STANDARD_SHAPES, baseline=bare,
        baseline_label="the two running sums by hand", target=1.05),
)



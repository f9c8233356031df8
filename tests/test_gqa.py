"""The `gqa` variant (plugins/variants/gqa.py): transformers' repeat_kv, no repeated K/V, laws, errors."""

from __future__ import annotations

import pydantic
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import zoo
from attention_zoo_plugins.variants import gqa
from zoo.functional import split_heads

FIELDS = {"query_dim": 32, "context_dim": 24, "heads": 8, "dim_head": 4}


def _failed(spec) -> set[str]:
    return {r.check for r in zoo.check(spec).results if r.status == "failed"}


def _broken(module) -> zoo.VariantSpec:
    """gqa's spec with a broken layer and no oracle, so that only the laws can see the bug."""
    return gqa.SPEC.replace(module=module, reference=None, plugin=None, distribution=None)


@pytest.mark.parametrize("kv_heads", [1, 2, 4, 8])
def test_equals_transformers_repeat_kv(kv_heads):
    """Same projections, then transformers' Llama eager attention (repeat_kv + softmax)."""
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    torch.manual_seed(0)
    layer = zoo.create("gqa", **FIELDS, kv_heads=kv_heads, bias=True).double().eval()
    x, c = torch.randn(2, 5, 32, dtype=torch.float64), torch.randn(2, 9, 24, dtype=torch.float64)
    mask = torch.rand(2, 9) > 0.3
    mask[:, 0] = True
    q = split_heads(layer.to_q(x), 8)
    k, v = split_heads(layer.to_k(c), kv_heads), split_heads(layer.to_v(c), kv_heads)
    additive = torch.zeros(2, 1, 1, 9, dtype=torch.float64).masked_fill(~mask[:, None, None, :], float("-inf"))
    holder = torch.nn.Module()
    holder.num_key_value_groups = 8 // kv_heads
    holder.eval()
    out, _ = llama.eager_attention_forward(holder, q, k, v, additive, scaling=4 ** -0.5)
    theirs = layer.to_out[0](out.reshape(2, 5, 32))
    with torch.no_grad():
        ours = layer(x, c, context_mask=mask)
    # transformers takes the softmax in float32 (softmax(..., dtype=torch.float32)): float32 tolerance
    torch.testing.assert_close(ours, theirs.detach(), atol=1e-6, rtol=1e-5)
    # and repeat_kv is the index map g(i) = i // (heads // kv_heads) of the contract
    rep = llama.repeat_kv(k, 8 // kv_heads)
    for i in range(8):
        assert torch.equal(rep[:, i], k[:, i // (8 // kv_heads)])


class _Sizes(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.shapes += [tuple(t.shape) for t in (out if isinstance(out, (tuple, list)) else (out,))
                        if isinstance(t, torch.Tensor)]
        return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_keys_and_values_are_never_repeated(dtype):
    """Forward and backward: no (B, heads, M, d) tensor exists, only (B, kv_heads, M, d)."""
    layer = zoo.create("gqa", **FIELDS, kv_heads=2).to(dtype)
    x, c = torch.randn(1, 16, 32, dtype=dtype, requires_grad=True), torch.randn(1, 64, 24, dtype=dtype)
    mask = torch.rand(1, 64) > 0.2
    with _Sizes() as sizes:
        layer(x, c, context_mask=mask).sum().backward()
    assert (1, 2, 64, 4) in sizes.shapes  # the kv_heads keys and values
    assert (1, 8, 64, 4) not in sizes.shapes, "keys/values were repeated to all query heads"


def test_kv_heads_must_divide_heads():
    with pytest.raises(pydantic.ValidationError, match=r"kv_heads=3 must divide heads=8.*\[1, 2, 4, 8\]"):
        zoo.create("gqa", **FIELDS, kv_heads=3)
    with pytest.raises(ValueError, match="kv_heads=3 must divide heads=8"):
        gqa.GroupedQueryAttention(**FIELDS, kv_heads=3)
    with pytest.raises(pydantic.ValidationError, match="kv_heads"):
        zoo.create("gqa", **FIELDS, kv_heads=0)
    assert isinstance(pydantic.ValidationError, type) and issubclass(pydantic.ValidationError, ValueError)


def test_parameters_shrink_with_kv_heads():
    layer = zoo.create("gqa", **FIELDS, kv_heads=2)
    assert tuple(layer.to_k.weight.shape) == tuple(layer.to_v.weight.shape) == (2 * 4, 24)
    assert tuple(layer.to_q.weight.shape) == (8 * 4, 32)
    assert set(layer.state_dict()) == {"to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight",
                                       "to_out.0.bias"}


def test_harness_passes_and_runs_both_laws():
    report = zoo.check("gqa")
    assert report.passed, report.table()
    assert {"law:all-kv-heads-is-cross", "law:one-kv-head-is-multi-query"} <= {r.check for r in report.results}


class StridedHeads(gqa.GroupedQueryAttention):
    """Splits K/V features as ``(d h)`` (strided) instead of ``(h d)`` blocks: differs from cross."""

    def forward(self, x, context=None, *, context_mask=None):
        context = self.check_context(x, context, context_mask)
        q = split_heads(self.to_q(x), self.heads)

        def strided(t):
            b, m, _ = t.shape
            return t.view(b, m, -1, self.kv_heads).permute(0, 3, 1, 2)

        k, v = strided(self.to_k(context)), strided(self.to_v(context))
        return self.project_out(zoo.nn.attend(q, k, v, context_mask, enable_gqa=self.kv_heads != self.heads))


class OneMeansAll(gqa.GroupedQueryAttention):
    """Treats kv_heads=1 as 'not set' and builds one K/V head per query head (no multi-query)."""

    def __init__(self, *args, kv_heads=1, **kwargs):
        super().__init__(*args, kv_heads=kv_heads, **kwargs)
        if kv_heads == 1:
            self.kv_heads = self.heads
            d = self.to_q.out_features // self.heads
            self.to_k = torch.nn.Linear(self.context_dim, self.heads * d, bias=self.to_q.bias is not None)
            self.to_v = torch.nn.Linear(self.context_dim, self.heads * d, bias=self.to_q.bias is not None)


@pytest.mark.parametrize(("broken", "law"), [
    (StridedHeads, "law:all-kv-heads-is-cross"),
    (OneMeansAll, "law:one-kv-head-is-multi-query"),
])
def test_each_law_fails_on_its_broken_layer(broken, law):
    assert _failed(_broken(broken)) == {law}


def test_oracle_catches_interleaved_groups():
    """Query head i reading K/V head i % kv_heads (repeat instead of repeat_interleave)."""

    class Interleaved(gqa.GroupedQueryAttention):
        def forward(self, x, context=None, *, context_mask=None):
            context = self.check_context(x, context, context_mask)
            q = split_heads(self.to_q(x), self.heads)
            reps = self.heads // self.kv_heads
            k = split_heads(self.to_k(context), self.kv_heads).repeat(1, reps, 1, 1)
            v = split_heads(self.to_v(context), self.kv_heads).repeat(1, reps, 1, 1)
            return self.project_out(zoo.nn.attend(q, k, v, context_mask))

    spec = gqa.SPEC.replace(module=Interleaved, plugin=None, distribution=None)
    assert "oracle-forward" in _failed(spec)


def test_from_multihead_mean_pools_key_value_heads():
    torch.manual_seed(0)
    cross = zoo.create("cross", **FIELDS, bias=True).double().eval()
    same = gqa.GroupedQueryAttention.from_multihead(cross, kv_heads=8).eval()
    x, c = torch.randn(2, 5, 32, dtype=torch.float64), torch.randn(2, 9, 24, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(same(x, c), cross(x, c), atol=1e-12, rtol=1e-12)
    pooled = gqa.GroupedQueryAttention.from_multihead(cross, kv_heads=2)
    assert pooled.to_k.weight.dtype == torch.float64 and pooled.kv_heads == 2
    # K/V head j of the result is the mean of the original heads 4j .. 4j+3
    w = cross.to_k.weight.view(8, 4, 24)
    torch.testing.assert_close(pooled.to_k.weight.view(2, 4, 24), w.view(2, 4, 4, 24).mean(1))
    torch.testing.assert_close(pooled.to_v.bias.view(2, 4), cross.to_v.bias.view(2, 4, 4).mean(1))
    assert torch.equal(pooled.to_q.weight, cross.to_q.weight)
    with pytest.raises(ValueError, match="kv_heads=3 must divide heads=8"):
        gqa.GroupedQueryAttention.from_multihead(cross, kv_heads=3)


def test_from_multihead_reads_diffusers_attention():
    attention_processor = pytest.importorskip("diffusers.models.attention_processor")
    theirs = attention_processor.Attention(32, cross_attention_dim=24, heads=8, dim_head=4).eval()
    ours = gqa.GroupedQueryAttention.from_multihead(theirs, kv_heads=8).eval()
    x, c = torch.randn(2, 5, 32), torch.randn(2, 9, 24)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, c), theirs(x, encoder_hidden_states=c))

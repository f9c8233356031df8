"""The `crossvit` variant (plugins/variants/crossvit.py): the official CrossAttention, laws, errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import zoo
from zoo.harness.capabilities import resolve_capabilities
from attention_zoo_plugins.variants import crossvit

FIELDS = {"query_dim": 24, "context_dim": 32, "heads": 4, "dim_head": 8}


def _failed(spec) -> set[str]:
    return {r.check for r in zoo.check(spec).results if r.status == "failed"}


def _broken(module) -> zoo.VariantSpec:
    """crossvit's spec with a broken layer and no oracle, so that only the laws can see the bug."""
    # the broken layers do not refuse context=None with a ValueError, so say what the real one does
    caps = dataclasses.replace(crossvit.SPEC.capabilities, self_attention=False)
    return crossvit.SPEC.replace(module=module, reference=None, capabilities=caps, plugin=None, distribution=None)


class OfficialCrossAttention(nn.Module):
    """The computation of ``CrossAttention`` in IBM/CrossViT ``models/crossvit.py``, restated:
    token 0 of ``x`` is the only query; keys and values are all of ``x``'s tokens."""

    def __init__(self, dim, num_heads, qkv_bias):
        super().__init__()
        self.num_heads = num_heads
        self.wq, self.wk, self.wv = (nn.Linear(dim, dim, bias=qkv_bias) for _ in range(3))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        h = self.num_heads
        q = self.wq(x[:, :1]).reshape(b, 1, h, c // h).transpose(1, 2)
        k = self.wk(x).reshape(b, n, h, c // h).transpose(1, 2)
        v = self.wv(x).reshape(b, n, h, c // h).transpose(1, 2)
        attn = (q @ k.transpose(-2, -1) * (c // h) ** -0.5).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, 1, c))


@pytest.mark.parametrize("bias", [False, True])
def test_equals_the_official_cross_attention_between_the_projections(bias):
    """MultiScaleBlock's fusion: tmp = [f(cls_x); patches of c]; CrossAttention(tmp); then g."""
    torch.manual_seed(0)
    ours = zoo.create("crossvit", **FIELDS, bias=bias).double().eval()
    official = OfficialCrossAttention(32, 4, bias).double().eval()
    official.load_state_dict({
        "wq.weight": ours.to_q.weight, "wk.weight": ours.to_k.weight, "wv.weight": ours.to_v.weight,
        "proj.weight": ours.to_out[0].weight, "proj.bias": ours.to_out[0].bias,
        **({"wq.bias": ours.to_q.bias, "wk.bias": ours.to_k.bias, "wv.bias": ours.to_v.bias} if bias else {}),
    })
    x, c = torch.randn(2, 5, 24, dtype=torch.float64), torch.randn(2, 10, 32, dtype=torch.float64)
    with torch.no_grad():
        tmp = torch.cat([ours.proj(x[:, :1]), c[:, 1:]], dim=1)
        expected = ours.revert_proj(official(tmp))
        out = ours(x, c)
    torch.testing.assert_close(out[:, :1], expected, atol=1e-12, rtol=1e-12)
    assert torch.equal(out[:, 1:], torch.zeros_like(out[:, 1:]))


def test_two_branch_exchange_leaves_patches():
    small, large = torch.randn(2, 17, 24), torch.randn(2, 5, 32)
    s2l = zoo.create("crossvit", query_dim=24, context_dim=32, heads=2, dim_head=8).eval()
    with torch.no_grad():
        new_small = small + s2l(small, large)
    assert torch.equal(new_small[:, 1:], small[:, 1:])
    assert not torch.equal(new_small[:, 0], small[:, 0])


def test_masked_patches_are_ignored_and_a_fully_masked_context_leaves_the_cls_alone():
    layer = zoo.create("crossvit", **FIELDS).double().eval()
    x, c = torch.randn(1, 3, 24, dtype=torch.float64), torch.randn(1, 6, 32, dtype=torch.float64)
    mask = torch.tensor([[True, True, False, True, False, False]])
    with torch.no_grad():
        torch.testing.assert_close(layer(x, c, context_mask=mask), layer(x, c[:, [0, 1, 3]]))
        nothing = layer(x, c, context_mask=torch.zeros(1, 6, dtype=torch.bool))
        alone = layer.revert_proj(layer.to_out[0](layer.to_v(layer.proj(x[:, :1]))))  # attends itself only
    torch.testing.assert_close(nothing[:, :1], alone)


def test_bad_input_names_the_argument():
    layer = zoo.create("crossvit", **FIELDS)
    x = torch.randn(2, 5, 24)
    with pytest.raises(ValueError, match=r"context has 1 token.*M >= 2"):
        layer(x, torch.randn(2, 1, 32))
    with pytest.raises(ValueError, match="context is None"):
        layer(x)
    with pytest.raises(ValueError, match="context"):
        layer(x, torch.randn(2, 4, 24))
    with pytest.raises(ValueError, match="context_mask"):
        layer(x, torch.randn(2, 4, 32), context_mask=torch.ones(2, 3, dtype=torch.bool))


def test_capabilities_declare_what_differs():
    spec = zoo.get_variant("crossvit")
    declared = spec.capabilities
    assert "self_attention" in declared.inferred  # observed from the layer, not declared
    caps = resolve_capabilities(spec)
    assert not caps.query_order_equivariant and not caps.context_order_invariant
    assert not caps.self_attention


def test_harness_passes_and_runs_the_laws():
    report = zoo.check("crossvit")
    assert report.passed, report.table()
    assert {"law:only-cls-row", "law:x-patches-not-attended", "law:other-cls-not-attended",
            "law:patch-order-ignored"} <= {r.check for r in report.results}


class FusedEverywhere(crossvit.CrossViTAttention):
    """Writes the fused CLS into every row (patches no longer left as they are)."""

    def forward(self, x, context=None, *, context_mask=None):
        out = super().forward(x, context, context_mask=context_mask)
        return out[:, :1].expand_as(out).clone()


class AttendsOwnPatches(crossvit.CrossViTAttention):
    """Also puts x's own (projected) patch tokens among the keys and values."""

    def forward(self, x, context=None, *, context_mask=None):
        self.check_context(x, context, context_mask)
        c = torch.cat([context, self.proj(x[:, 1:])], dim=1)
        if context_mask is not None:
            context_mask = torch.cat([context_mask, context_mask.new_ones(x.shape[0], x.shape[1] - 1)], dim=1)
        return super().forward(x, c, context_mask=context_mask)


class AttendsOtherCLS(crossvit.CrossViTAttention):
    """Keeps the other branch's CLS token among the keys (context position 0 attended)."""

    def forward(self, x, context=None, *, context_mask=None):
        c = torch.cat([context[:, :1], context], dim=1)
        if context_mask is not None:
            context_mask = torch.cat([context_mask[:, :1], context_mask], dim=1)
        return super().forward(x, c, context_mask=context_mask)


class PatchPositions(crossvit.CrossViTAttention):
    """Adds a position signal to the other branch's patch tokens."""

    def forward(self, x, context=None, *, context_mask=None):
        pos = torch.arange(context.shape[1], dtype=context.dtype)[None, :, None] / 5
        return super().forward(x, context + pos, context_mask=context_mask)


@pytest.mark.parametrize(("broken", "law"), [
    (FusedEverywhere, "law:only-cls-row"),
    (AttendsOwnPatches, "law:x-patches-not-attended"),
    (AttendsOtherCLS, "law:other-cls-not-attended"),
    (PatchPositions, "law:patch-order-ignored"),
])
def test_each_law_fails_on_its_broken_layer(broken, law):
    assert _failed(_broken(broken)) == {law}

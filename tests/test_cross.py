"""The `cross` variant (plugins/variants/cross.py): oracles, peers, masks, errors."""

from __future__ import annotations

import pytest
import torch

import zoo

from attention_zoo_plugins.variants import cross


@pytest.fixture
def layer(cross_registry):
    torch.manual_seed(0)
    return zoo.create("cross", query_dim=24, context_dim=20, heads=4, dim_head=6, bias=True).eval()


def test_equals_naive_float64(layer):
    x, c = torch.randn(3, 7, 24), torch.randn(3, 5, 20)
    mask = torch.rand(3, 5) > 0.4
    mask[:, 0] = True
    out = layer(x, c, context_mask=mask)
    ref = cross.reference(layer.double(), x.double(), c.double(), context_mask=mask)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


def test_equals_multihead_attention(cross_registry):
    law = cross.SPEC.laws[0]
    law.check(cross.SPEC, {"context_dim": 12, "heads": 2, "dim_head": 8, "bias": True}, torch.Generator().manual_seed(1))


def test_multihead_law_fails_when_weights_differ(cross_registry, monkeypatch):
    law = cross.SPEC.laws[0]
    real_forward = cross.CrossAttention.forward

    def off_by_scale(self, x, context=None, *, context_mask=None):
        return real_forward(self, x, context, context_mask=context_mask) * 1.01

    monkeypatch.setattr(cross.CrossAttention, "forward", off_by_scale)
    with pytest.raises(AssertionError, match="MultiheadAttention"):
        law.check(cross.SPEC, {"heads": 2, "dim_head": 8}, torch.Generator().manual_seed(1))


def test_diffusers_state_dict_loads_strictly_and_matches(cross_registry):
    attention_processor = pytest.importorskip("diffusers.models.attention_processor")
    for bias, context_dim in ((False, 24), (True, 24), (False, None)):
        theirs = attention_processor.Attention(32, cross_attention_dim=context_dim, heads=4, dim_head=8, bias=bias).eval()
        ours = zoo.create("cross", query_dim=32, context_dim=context_dim, heads=4, dim_head=8, bias=bias).eval()
        ours.load_state_dict(theirs.state_dict(), strict=True)
        x, c = torch.randn(2, 9, 32), torch.randn(2, 5, context_dim or 32)
        with torch.no_grad():
            torch.testing.assert_close(ours(x, c), theirs(x, encoder_hidden_states=c))
            if context_dim is None:  # self-attention
                torch.testing.assert_close(ours(x), theirs(x))


def test_self_attention_when_context_is_none(cross_registry):
    layer = zoo.create("cross", query_dim=16, heads=2, dim_head=8).eval()
    x = torch.randn(2, 6, 16)
    torch.testing.assert_close(layer(x), layer(x, x))
    mask = torch.tensor([[True] * 6, [True, True, False, False, False, False]])
    torch.testing.assert_close(layer(x, context_mask=mask), layer(x, x, context_mask=mask))


def test_fully_masked_rows_give_zero_attention_term(layer):
    x, c = torch.randn(2, 4, 24, requires_grad=True), torch.randn(2, 5, 20)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1] = False
    out = layer(x, c, context_mask=mask)
    # attention term exactly zero -> output is the output projection's bias alone
    assert torch.equal(out[1], layer.to_out[0].bias.expand(4, -1))
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.equal(x.grad[1], torch.zeros(4, 24))
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


def test_fully_masked_rows_in_bfloat16(cross_registry):
    layer = zoo.create("cross", query_dim=16, heads=2, dim_head=8).to(torch.bfloat16)
    mask = torch.zeros(1, 3, dtype=torch.bool)
    out = layer(torch.randn(1, 2, 16, dtype=torch.bfloat16), torch.randn(1, 3, 16, dtype=torch.bfloat16), context_mask=mask)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"x": torch.randn(4, 24)}, ValueError, r"x must have 3 dimensions.*got shape \(4, 24\)"),
        ({"x": torch.randn(2, 4, 23)}, ValueError, r"x must have last dimension 24.*\(2, 4, 23\)"),
        ({"context": torch.randn(2, 5, 19)}, ValueError, r"context must have last dimension 20"),
        ({"context": torch.randn(3, 5, 20)}, ValueError, r"context has batch size 3 but x has 2"),
        ({"context_mask": torch.ones(2, 4, dtype=torch.bool)}, ValueError, r"context_mask must have shape \(2, 5\)"),
        ({"context_mask": torch.ones(2, 5)}, ValueError, r"context_mask must have dtype torch.bool"),
        ({"x": torch.randn(2, 4, 24, dtype=torch.float64)}, ValueError, r"x has dtype torch.float64"),
        ({"x": torch.ones(2, 4, 24, dtype=torch.long)}, TypeError, r"x must be a floating-point tensor"),
        ({"x": torch.randn(2, 0, 24)}, ValueError, r"x is empty"),
        ({"context": torch.randn(2, 0, 20)}, ValueError, r"context is empty"),
        ({"x": [[1.0]]}, TypeError, r"x must be a torch.Tensor"),
    ],
)
def test_bad_input_raises_clear_error(layer, kwargs, error, match):
    inputs = {"x": torch.randn(2, 4, 24), "context": torch.randn(2, 5, 20), **kwargs}
    mask = inputs.pop("context_mask", None)
    with pytest.raises(error, match=match):
        layer(inputs["x"], inputs["context"], context_mask=mask)


def test_self_attention_with_mismatched_widths_is_an_error(layer):
    with pytest.raises(ValueError, match="context_dim=20 differs from query_dim=24"):
        layer(torch.randn(1, 3, 24))


def test_dropout_acts_in_training_only(cross_registry):
    layer = zoo.create("cross", query_dim=16, heads=2, dim_head=8, dropout=0.5)
    x = torch.randn(2, 5, 16)
    layer.train()
    assert not torch.equal(layer(x), layer(x))
    layer.eval()
    assert torch.equal(layer(x), layer(x))

"""The `selfdoc` variant (plugins/variants/selfdoc.py): oracle, aligned masks, errors, laws, YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import zoo

from attention_zoo_plugins.variants import selfdoc

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "configs"


@pytest.fixture
def selfdoc_registry(registry):
    registry.load_plugin(selfdoc, name="selfdoc", distribution="attention-zoo")
    return registry


@pytest.fixture
def layer(selfdoc_registry):
    torch.manual_seed(0)
    return zoo.create("selfdoc", query_dim=24, context_dim=20, heads=4, dim_head=6, bias=True).eval()


def _mask(b, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, n, generator=g) > 0.4
    mask[:, 0] = True
    return mask


def test_shapes_and_parameters(layer):
    x, c = torch.randn(3, 7, 24), torch.randn(3, 7, 20)
    out = layer(x, c)
    assert out.shape == x.shape and out.dtype == x.dtype
    shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    assert shapes == {
        "to_q.weight": (24, 24), "to_q.bias": (24,),
        "to_k.weight": (24, 20), "to_k.bias": (24,),
        "to_v.weight": (24, 24), "to_v.bias": (24,),  # to_v reads x (query_dim), not the context
        "to_out.0.weight": (24, 24), "to_out.0.bias": (24,),
    }


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_equals_naive_oracle(layer, dtype, tol):
    layer = layer.to(dtype)
    x, c = torch.randn(3, 7, 24, dtype=dtype), torch.randn(3, 7, 20, dtype=dtype)
    mask = _mask(3, 7)
    out = layer(x, c, context_mask=mask)
    ref = selfdoc.reference(layer.double(), x.double(), c.double(), context_mask=mask)
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)


def test_gradients_match_oracle(layer):
    layer = layer.double()
    x = torch.randn(2, 5, 24, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 5, 20, dtype=torch.float64, requires_grad=True)
    mask = _mask(2, 5)
    g1 = torch.autograd.grad(layer(x, c, context_mask=mask).square().sum(), (x, c, *layer.parameters()))
    g2 = torch.autograd.grad(selfdoc.reference(layer, x, c, context_mask=mask).square().sum(),
                             (x, c, *layer.parameters()))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_context_none_means_context_is_x(selfdoc_registry):
    layer = zoo.create("selfdoc", query_dim=16, heads=2, dim_head=8).eval()
    x = torch.randn(2, 6, 16)
    torch.testing.assert_close(layer(x), layer(x, x))


def test_mask_removes_the_whole_block(layer):
    """A masked block j contributes neither its key (context) nor its value (x)."""
    x, c = torch.randn(2, 6, 24), torch.randn(2, 6, 20)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[:, 2] = False
    out = layer(x, c, context_mask=mask)
    c2 = c.clone()
    c2[:, 2] = 100.0
    torch.testing.assert_close(layer(x, c2, context_mask=mask), out)
    # the output equals attention over the other five blocks only (queries stay all six)
    keep = [0, 1, 3, 4, 5]
    from zoo.oracle import heads_merge, heads_view, linear, naive_attention

    q = heads_view(linear(x, layer.to_q), 4)
    k = heads_view(linear(c[:, keep], layer.to_k), 4)
    v = heads_view(linear(x[:, keep], layer.to_v), 4)
    expected = linear(heads_merge(naive_attention(q, k, v)), layer.to_out[0])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_fully_masked_row_is_zero_attention(layer):
    x, c = torch.randn(2, 4, 24), torch.randn(2, 4, 20)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[1] = True
    out = layer(x, c, context_mask=mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0], layer.to_out[0].bias.expand(4, 24))


def test_query_order_equivariant_when_both_permuted(layer):
    x, c = torch.randn(2, 6, 24, dtype=torch.float64), torch.randn(2, 6, 20, dtype=torch.float64)
    layer = layer.double()
    perm = torch.randperm(6)
    torch.testing.assert_close(layer(x[:, perm], c[:, perm]), layer(x, c)[:, perm])
    # ... but permuting the context alone breaks the block pairing (not order invariant)
    assert not torch.allclose(layer(x, c[:, perm]), layer(x, c))


# -- bad input ----------------------------------------------------------------

def test_unequal_lengths_name_both(layer):
    with pytest.raises(ValueError, match=r"N=7.*M=5"):
        layer(torch.randn(2, 7, 24), torch.randn(2, 5, 20))


def test_wrong_rank(layer):
    with pytest.raises(ValueError, match="x must have 3 dimensions"):
        layer(torch.randn(7, 24), torch.randn(2, 7, 20))
    with pytest.raises(ValueError, match="context must have 3 dimensions"):
        layer(torch.randn(2, 7, 24), torch.randn(2, 7, 20, 1))


def test_wrong_width(layer):
    with pytest.raises(ValueError, match=r"x must have last dimension 24"):
        layer(torch.randn(2, 7, 23), torch.randn(2, 7, 20))
    with pytest.raises(ValueError, match=r"context must have last dimension 20"):
        layer(torch.randn(2, 7, 24), torch.randn(2, 7, 24))


def test_wrong_batch(layer):
    with pytest.raises(ValueError, match="batch size 3 but x has 2"):
        layer(torch.randn(2, 7, 24), torch.randn(3, 7, 20))


def test_mask_dtype(layer):
    with pytest.raises(ValueError, match="torch.bool"):
        layer(torch.randn(2, 7, 24), torch.randn(2, 7, 20), context_mask=torch.ones(2, 7))


def test_mask_shape(layer):
    with pytest.raises(ValueError, match=r"context_mask must have shape \(2, 7\)"):
        layer(torch.randn(2, 7, 24), torch.randn(2, 7, 20), context_mask=torch.ones(2, 6, dtype=torch.bool))


def test_context_none_needs_equal_widths(layer):
    with pytest.raises(ValueError, match="context_dim=20 differs from query_dim=24"):
        layer(torch.randn(2, 7, 24))


# -- laws -----------------------------------------------------------------------

LAWS = {law.name: law for law in selfdoc.SPEC.laws}
FIELDS = [dict(f) for f in selfdoc.SPEC.examples]


@pytest.mark.parametrize("fields", FIELDS)
@pytest.mark.parametrize("name", sorted(LAWS))
def test_law_holds(name, fields):
    LAWS[name].check(selfdoc.SPEC, fields, torch.Generator().manual_seed(3))


def test_self_attention_law_fails_when_keys_use_another_projection(monkeypatch):
    """A layer whose keys do not come from to_k is no longer self-attention at context = x."""
    real = selfdoc.SelfDocAttention.forward

    def keys_from_values(self, x, context=None, *, context_mask=None):
        saved = self.to_k
        self.to_k = self.to_v if self.context_dim == self.query_dim else saved
        try:
            return real(self, x, context, context_mask=context_mask)
        finally:
            self.to_k = saved

    monkeypatch.setattr(selfdoc.SelfDocAttention, "forward", keys_from_values)
    with pytest.raises(AssertionError, match="differs from self-attention"):
        LAWS["context-x-is-self-attention"].check(selfdoc.SPEC, FIELDS[0], torch.Generator().manual_seed(3))


def test_uniform_context_law_fails_when_values_come_from_context(monkeypatch):
    """A cross-attention in disguise (values from the context) breaks the averaging law."""
    def cross_like(self, x, context=None, *, context_mask=None):
        from zoo.functional import attend, merge_heads, split_heads

        c = x if context is None else context
        q, k = split_heads(self.to_q(x), self.heads), split_heads(self.to_k(c), self.heads)
        v = split_heads(c @ self.to_k.weight.T, self.heads)
        return self.to_out[0](merge_heads(attend(q, k, v, context_mask)))

    monkeypatch.setattr(selfdoc.SelfDocAttention, "forward", cross_like)
    with pytest.raises(AssertionError, match="mean of x's unmasked values"):
        LAWS["uniform-context-averages-x"].check(selfdoc.SPEC, FIELDS[0], torch.Generator().manual_seed(3))


# -- configs ------------------------------------------------------------------

def test_yaml_selects_selfdoc():
    config = zoo.load_config(EXAMPLES / "selfdoc.yaml")
    assert config.variant == "selfdoc"
    layer = zoo.create(config)
    assert isinstance(layer, selfdoc.SelfDocAttention)
    assert layer.to_v.in_features == config.query_dim and layer.to_k.in_features == config.context_dim
    assert zoo.create(layer.config).state_dict().keys() == layer.state_dict().keys()


def test_registered_through_entry_point():
    spec = zoo.get_variant("selfdoc")
    assert spec.module is selfdoc.SelfDocAttention and spec.plugin == "selfdoc"
    assert spec.capabilities.equal_lengths and not spec.capabilities.context_order_invariant

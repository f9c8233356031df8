"""The `persistent` variant (plugins/variants/persistent.py): oracle, memory, feed-forward view, errors, laws."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import zoo

from attention_zoo_plugins.variants import persistent

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "configs"


@pytest.fixture
def persistent_registry(registry):
    registry.load_plugin(persistent, name="persistent", distribution="attention-zoo")
    return registry


@pytest.fixture
def layer(persistent_registry):
    torch.manual_seed(0)
    return zoo.create("persistent", query_dim=24, context_dim=20, heads=4, dim_head=6, bias=True,
                      num_memory=5).eval()


def _mask(b, m, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(b, m, generator=g) > 0.4
    mask[:, 0] = True
    return mask


def test_shapes_and_parameters(layer):
    x, c = torch.randn(3, 7, 24), torch.randn(3, 4, 20)
    assert layer(x, c).shape == x.shape
    shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    assert shapes == {
        "to_q.weight": (24, 24), "to_q.bias": (24,),
        "to_k.weight": (24, 20), "to_k.bias": (24,),
        "to_v.weight": (24, 20), "to_v.bias": (24,),
        "memory_k": (4, 5, 6), "memory_v": (4, 5, 6),
        "to_out.0.weight": (24, 24), "to_out.0.bias": (24,),
    }


def test_memory_initialised_standard_normal_like_x_transformers(persistent_registry):
    torch.manual_seed(0)
    layer = zoo.create("persistent", query_dim=64, heads=8, dim_head=64, num_memory=64)
    for p in (layer.memory_k, layer.memory_v):
        assert abs(p.mean().item()) < 0.02 and abs(p.std().item() - 1.0) < 0.02


def test_default_config():
    cfg = persistent.PersistentConfig()
    assert cfg.num_memory == 16 and cfg.memory_only is False


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_equals_naive_oracle(layer, dtype, tol):
    layer = layer.to(dtype)
    x, c = torch.randn(3, 7, 24, dtype=dtype), torch.randn(3, 9, 20, dtype=dtype)
    mask = _mask(3, 9)
    mask[1] = False  # fully masked context: only the memory is left
    for kwargs in ({}, {"context_mask": mask}):
        out = layer(x, c, **kwargs)
        ref = persistent.reference(layer.double(), x.double(), c.double(), **kwargs)
        layer.to(dtype)
        torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)


def test_gradients_match_oracle_including_memory(layer):
    layer = layer.double()
    x = torch.randn(2, 5, 24, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 6, 20, dtype=torch.float64, requires_grad=True)
    mask = _mask(2, 6)
    wrt = (x, c, *layer.parameters())
    g1 = torch.autograd.grad(layer(x, c, context_mask=mask).square().sum(), wrt)
    g2 = torch.autograd.grad(persistent.reference(layer, x, c, context_mask=mask).square().sum(), wrt)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    assert layer.memory_k.grad is None  # autograd.grad does not accumulate
    assert g1[-3].abs().sum() > 0 and g1[-4].abs().sum() > 0  # memory_v, memory_k receive gradient


def test_context_none_is_self_attention_plus_memory(persistent_registry):
    layer = zoo.create("persistent", query_dim=16, heads=2, dim_head=8, num_memory=3).double().eval()
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    torch.testing.assert_close(layer(x), layer(x, x))
    mask = _mask(2, 6)
    torch.testing.assert_close(layer(x, context_mask=mask), persistent.reference(layer, x, context_mask=mask))


def test_memory_is_never_masked(layer):
    """A fully masked context row still attends to the memory: finite and not zero."""
    x, c = torch.randn(2, 4, 24), torch.randn(2, 6, 20)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    out = layer(x, c, context_mask=mask)
    assert torch.isfinite(out).all()
    assert (out - layer.to_out[0].bias).abs().max() > 1e-3
    # the masked context has no influence at all
    torch.testing.assert_close(layer(x, c * 50 + 3, context_mask=mask), out)


def test_no_memory_fully_masked_row_is_zero_attention(persistent_registry):
    layer = zoo.create("persistent", query_dim=16, heads=2, dim_head=8, num_memory=0).eval()
    x, c = torch.randn(2, 4, 16), torch.randn(2, 6, 16)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[1] = True
    out = layer(x, c, context_mask=mask)
    torch.testing.assert_close(out[0], layer.to_out[0].bias.expand(4, 16))
    assert layer.memory_k.shape == (2, 0, 8)


def test_order_of_memory_and_context_does_not_matter(layer):
    """Permuting context tokens leaves the output unchanged (the memory has no position)."""
    layer = layer.double()
    x, c = torch.randn(2, 5, 24, dtype=torch.float64), torch.randn(2, 8, 20, dtype=torch.float64)
    perm = torch.randperm(8)
    torch.testing.assert_close(layer(x, c[:, perm]), layer(x, c))


# -- the feed-forward view ------------------------------------------------------

def test_memory_only_layer_has_no_key_value_projections(persistent_registry):
    layer = zoo.create("persistent", query_dim=16, heads=2, dim_head=8, num_memory=4, memory_only=True)
    assert layer.to_k is None and layer.to_v is None
    assert set(layer.state_dict()) == {"to_q.weight", "memory_k", "memory_v", "to_out.0.weight", "to_out.0.bias"}
    assert layer(torch.randn(2, 3, 16)).shape == (2, 3, 16)


def test_memory_only_refuses_context_and_mask(persistent_registry):
    layer = zoo.create("persistent", query_dim=16, heads=2, dim_head=8, num_memory=4, memory_only=True)
    x = torch.randn(2, 3, 16)
    with pytest.raises(ValueError, match="memory_only=True.*takes no context"):
        layer(x, torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match="context_mask must be None"):
        layer(x, context_mask=torch.ones(2, 3, dtype=torch.bool))


def test_memory_only_needs_memory():
    with pytest.raises(ValueError, match="num_memory must be >= 1"):
        persistent.PersistentConfig(memory_only=True, num_memory=0)
    with pytest.raises(ValueError, match="num_memory"):
        persistent.PersistentConfig(num_memory=-1)


def test_from_feedforward_replaces_a_softmax_feedforward_sublayer():
    torch.manual_seed(0)
    d, f = 12, 40
    ff = nn.Sequential(nn.Linear(d, f, bias=False), nn.Softmax(dim=-1), nn.Linear(f, d)).double()
    layer = persistent.PersistentMemoryAttention.from_feedforward(ff[0].weight, ff[2].weight, ff[2].bias)
    assert layer.config.memory_only and layer.config.num_memory == f and layer.config.heads == 1
    assert layer.memory_k.dtype == torch.float64
    x = torch.randn(3, 5, d, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), ff(x), atol=1e-12, rtol=1e-12)
    # the config rebuilds the same architecture and the weights move over
    clone = zoo.create(layer.config).double()
    clone.load_state_dict(layer.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(clone(x), ff(x), atol=1e-12, rtol=1e-12)


def test_from_feedforward_checks_shapes():
    with pytest.raises(ValueError, match=r"w_out must have shape \(D, F\) = \(4, 6\)"):
        persistent.PersistentMemoryAttention.from_feedforward(torch.randn(6, 4), torch.randn(6, 4))
    with pytest.raises(ValueError, match=r"b_out must have shape \(4,\)"):
        persistent.PersistentMemoryAttention.from_feedforward(torch.randn(6, 4), torch.randn(4, 6), torch.randn(6))
    with pytest.raises(ValueError, match="w_in must be a 2-D"):
        persistent.PersistentMemoryAttention.from_feedforward(torch.randn(6), torch.randn(4, 6))


# -- bad input ----------------------------------------------------------------

def test_wrong_rank(layer):
    with pytest.raises(ValueError, match="x must have 3 dimensions"):
        layer(torch.randn(7, 24), torch.randn(2, 5, 20))
    with pytest.raises(ValueError, match="context must have 3 dimensions"):
        layer(torch.randn(2, 7, 24), torch.randn(5, 20))


def test_wrong_width(layer):
    with pytest.raises(ValueError, match="x must have last dimension 24"):
        layer(torch.randn(2, 7, 25), torch.randn(2, 5, 20))
    with pytest.raises(ValueError, match="context must have last dimension 20"):
        layer(torch.randn(2, 7, 24), torch.randn(2, 5, 21))


def test_wrong_batch(layer):
    with pytest.raises(ValueError, match="batch size 1 but x has 2"):
        layer(torch.randn(2, 7, 24), torch.randn(1, 5, 20))


def test_mask_dtype(layer):
    with pytest.raises(ValueError, match="torch.bool"):
        layer(torch.randn(2, 7, 24), torch.randn(2, 5, 20), context_mask=torch.ones(2, 5, dtype=torch.long))


def test_mask_shape(layer):
    with pytest.raises(ValueError, match=r"context_mask must have shape \(2, 5\)"):
        layer(torch.randn(2, 7, 24), torch.randn(2, 5, 20), context_mask=torch.ones(2, 7, dtype=torch.bool))


def test_self_attention_mask_shape(persistent_registry):
    layer = zoo.create("persistent", query_dim=16, heads=2, dim_head=8, num_memory=2)
    with pytest.raises(ValueError, match=r"context_mask must have shape \(2, 7\)"):
        layer(torch.randn(2, 7, 16), context_mask=torch.ones(2, 5, dtype=torch.bool))


def test_context_none_needs_equal_widths(layer):
    with pytest.raises(ValueError, match="context_dim=20 differs from query_dim=24"):
        layer(torch.randn(2, 7, 24))


# -- laws -----------------------------------------------------------------------

LAWS = {law.name: law for law in persistent.SPEC.laws}
FIELDS = [dict(f) for f in persistent.SPEC.examples]


@pytest.mark.parametrize("fields", FIELDS)
@pytest.mark.parametrize("name", sorted(LAWS))
def test_law_holds(name, fields):
    LAWS[name].check(persistent.SPEC, fields, torch.Generator().manual_seed(5))


def test_no_memory_law_fails_when_memory_is_still_attended(monkeypatch):
    """A layer that adds a hidden slot even with num_memory=0 is not cross."""
    real = persistent.PersistentMemoryAttention.forward

    def with_extra_slot(self, x, context=None, *, context_mask=None):
        if self.num_memory == 0 and context is not None:
            context = torch.cat([context, torch.ones_like(context[:, :1])], dim=1)
            if context_mask is not None:
                context_mask = torch.cat([context_mask, context_mask.new_ones(context_mask.shape[0], 1)], 1)
        return real(self, x, context, context_mask=context_mask)

    monkeypatch.setattr(persistent.PersistentMemoryAttention, "forward", with_extra_slot)
    with pytest.raises(AssertionError, match="differs from cross"):
        LAWS["no-memory-is-cross"].check(persistent.SPEC, FIELDS[0], torch.Generator().manual_seed(5))


def test_feedforward_law_fails_with_a_wrong_scale(monkeypatch):
    """Scores scaled by 1/d instead of 1/sqrt(d) are not U softmax(V x)."""
    real = persistent.PersistentMemoryAttention.forward

    def wrong_scale(self, x, context=None, *, context_mask=None):
        saved = self.memory_k.data.clone()
        self.memory_k.data /= math.sqrt(self.memory_k.shape[-1])
        try:
            return real(self, x, context, context_mask=context_mask)
        finally:
            self.memory_k.data.copy_(saved)

    monkeypatch.setattr(persistent.PersistentMemoryAttention, "forward", wrong_scale)
    with pytest.raises(AssertionError, match=r"U softmax\(V x\)"):
        LAWS["memory-only-is-softmax-feedforward"].check(persistent.SPEC, FIELDS[0], torch.Generator().manual_seed(5))


def test_masked_context_law_fails_when_memory_is_masked_too(monkeypatch):
    """Masking the memory along with the context (rows become zero) breaks the law."""
    real = persistent.PersistentMemoryAttention.forward

    def masks_memory(self, x, context=None, *, context_mask=None):
        out = real(self, x, context, context_mask=context_mask)
        if context_mask is not None:
            empty = ~context_mask.any(-1)
            out = torch.where(empty[:, None, None], self.to_out[0].bias.expand_as(out), out)
        return out

    monkeypatch.setattr(persistent.PersistentMemoryAttention, "forward", masks_memory)
    with pytest.raises(AssertionError, match="memory-only layer"):
        LAWS["masked-context-leaves-memory"].check(persistent.SPEC, FIELDS[0], torch.Generator().manual_seed(5))


# -- peers ----------------------------------------------------------------------

@pytest.mark.parametrize("context_dim", [12, None])
def test_matches_x_transformers_mem_kv(persistent_registry, context_dim):
    """Our weights copied into x-transformers' Attention(num_mem_kv=...) give the same output."""
    xt = pytest.importorskip("x_transformers.x_transformers")
    try:
        theirs = xt.Attention(16, dim_head=8, heads=2, dim_context=context_dim, num_mem_kv=3).eval()
    except TypeError as exc:  # API changed
        pytest.skip(f"x-transformers Attention API differs: {exc}")
    ours = zoo.create("persistent", query_dim=16, context_dim=context_dim, heads=2, dim_head=8,
                      num_memory=3, out_bias=False).eval()
    rename = {"to_out.0.weight": "to_out.weight", "memory_k": "mem_k", "memory_v": "mem_v"}
    state = {rename.get(k, k): v for k, v in ours.state_dict().items()}
    missing, unexpected = theirs.load_state_dict(state, strict=False)
    if missing or unexpected:
        pytest.skip(f"x-transformers layout differs: missing {missing}, unexpected {unexpected}")
    assert theirs.mem_k.shape == ours.memory_k.shape
    x = torch.randn(2, 5, 16)
    c = torch.randn(2, 7, context_dim or 16)
    mask = _mask(2, 7)
    mask[1] = False
    with torch.no_grad():
        torch.testing.assert_close(ours(x, c, context_mask=mask), theirs(x, context=c, context_mask=mask),
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours(x, c), theirs(x, context=c), atol=1e-5, rtol=1e-5)
        if context_dim is None:
            torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


# -- configs ------------------------------------------------------------------

def test_yaml_selects_persistent():
    config = zoo.load_config(EXAMPLES / "persistent.yaml")
    assert config.variant == "persistent" and config.num_memory == 16
    layer = zoo.create(config)
    assert isinstance(layer, persistent.PersistentMemoryAttention)
    assert layer.memory_k.shape == (config.heads, config.num_memory, config.dim_head)


def test_yaml_memory_only_override():
    layer = zoo.create(zoo.load_config(EXAMPLES / "persistent.yaml"), memory_only=True)
    assert layer.memory_only and layer.to_k is None


def test_registered_through_entry_point():
    spec = zoo.get_variant("persistent")
    assert spec.module is persistent.PersistentMemoryAttention and spec.plugin == "persistent"

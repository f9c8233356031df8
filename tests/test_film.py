"""The `film` variant (plugins/variants/film.py): pooling, residual form, oracle, errors, laws, YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import zoo

from attention_zoo_plugins.variants import film

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "configs"


@pytest.fixture
def film_registry(registry):
    registry.load_plugin(film, name="film", distribution="attention-zoo")
    return registry


def _randomised(layer, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return layer


@pytest.fixture
def layer(film_registry):
    return _randomised(zoo.create("film", query_dim=16, context_dim=12).eval())


def test_shapes_and_parameters(layer):
    x = torch.randn(3, 7, 16)
    assert layer(x, torch.randn(3, 5, 12)).shape == x.shape
    assert layer(x, torch.randn(3, 12)).shape == x.shape
    shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    assert shapes == {"to_scale_shift.weight": (32, 12), "to_scale_shift.bias": (32,)}


def test_defaults(film_registry):
    layer = zoo.create("film", query_dim=8)
    assert layer.context_dim == 8 and layer.residual is True


def test_residual_starts_as_identity(film_registry):
    layer = zoo.create("film", query_dim=16, context_dim=12)
    assert not layer.to_scale_shift.weight.any() and not layer.to_scale_shift.bias.any()
    x = torch.randn(2, 5, 16)
    assert torch.equal(layer(x, torch.randn(2, 3, 12)), x)


def test_non_residual_keeps_default_init(film_registry):
    torch.manual_seed(0)
    layer = zoo.create("film", query_dim=16, context_dim=12, residual=False)
    assert layer.to_scale_shift.weight.abs().sum() > 0


def test_gamma_first_half_beta_second(film_registry):
    """to_scale_shift's first Dq outputs scale, the second Dq shift (both forms)."""
    for residual in (True, False):
        layer = zoo.create("film", query_dim=3, context_dim=2, residual=residual).double()
        with torch.no_grad():
            layer.to_scale_shift.weight.zero_()
            layer.to_scale_shift.bias.copy_(torch.tensor([2.0, 3.0, 4.0, 10.0, 20.0, 30.0]))
        x = torch.ones(1, 2, 3, dtype=torch.float64)
        out = layer(x, torch.zeros(1, 2, dtype=torch.float64))
        gamma = torch.tensor([2.0, 3.0, 4.0], dtype=torch.float64) + (1.0 if residual else 0.0)
        torch.testing.assert_close(out, (gamma + torch.tensor([10.0, 20.0, 30.0], dtype=torch.float64)).expand(1, 2, 3))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("residual", [True, False])
def test_equals_naive_oracle(film_registry, dtype, tol, residual):
    layer = _randomised(zoo.create("film", query_dim=16, context_dim=12, residual=residual)).to(dtype)
    x = torch.randn(3, 7, 16, dtype=dtype)
    c3, c2 = torch.randn(3, 5, 12, dtype=dtype), torch.randn(3, 12, dtype=dtype)
    mask3 = torch.rand(3, 5) > 0.5
    mask3[1] = False
    mask2 = torch.tensor([True, False, True])
    for c, kwargs in ((c3, {}), (c3, {"context_mask": mask3}), (c2, {}), (c2, {"context_mask": mask2})):
        out = layer(x, c, **kwargs)
        ref = film.reference(layer.double(), x.double(), c.double(), **kwargs)
        layer.to(dtype)
        torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)


def test_gradients_match_oracle(layer):
    layer = layer.double()
    x = torch.randn(2, 5, 16, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 4, 12, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, False, True, True], [False] * 4])
    wrt = (x, c, *layer.parameters())
    g1 = torch.autograd.grad(layer(x, c, context_mask=mask).square().sum(), wrt)
    g2 = torch.autograd.grad(film.reference(layer, x, c, context_mask=mask).square().sum(), wrt)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_two_dimensional_context_is_the_pooled_vector(layer):
    x, c = torch.randn(2, 5, 16), torch.randn(2, 12)
    torch.testing.assert_close(layer(x, c), layer(x, c[:, None, :]))
    torch.testing.assert_close(layer(x, c), layer(x, c[:, None, :].expand(2, 4, 12)))


def test_masked_tokens_have_no_influence_even_if_not_finite(layer):
    x, c = torch.randn(2, 5, 16), torch.randn(2, 4, 12)
    mask = torch.tensor([[True, False, True, False], [True, True, True, False]])
    out = layer(x, c, context_mask=mask)
    bad = c.clone()
    bad[~mask] = float("nan")
    torch.testing.assert_close(layer(x, bad, context_mask=mask), out)


def test_fully_masked_context_pools_to_zero(layer):
    x, c = torch.randn(2, 5, 16), torch.randn(2, 4, 12)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    out = layer(x, c, context_mask=mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, layer(x, torch.zeros(2, 12)))
    torch.testing.assert_close(layer.pool(c, mask), torch.zeros(2, 12))
    # a 2-D context with its (B,) mask: False means z = 0 as well
    torch.testing.assert_close(layer(x, c[:, 0], context_mask=torch.tensor([False, True]))[0],
                               layer(x, torch.zeros(2, 12))[0])


def test_context_order_invariant(layer):
    x, c = torch.randn(2, 5, 16, dtype=torch.float64), torch.randn(2, 6, 12, dtype=torch.float64)
    layer = layer.double()
    perm = torch.randperm(6)
    torch.testing.assert_close(layer(x, c[:, perm]), layer(x, c))


# -- bad input ----------------------------------------------------------------

def test_context_required(layer):
    with pytest.raises(ValueError, match="film needs a context"):
        layer(torch.randn(2, 5, 16))


def test_wrong_rank(layer):
    with pytest.raises(ValueError, match="x must have 3 dimensions"):
        layer(torch.randn(5, 16), torch.randn(2, 12))
    with pytest.raises(ValueError, match="context must have 2 or 3 dimensions"):
        layer(torch.randn(2, 5, 16), torch.randn(2, 3, 4, 12))
    with pytest.raises(ValueError, match="context must have 2 or 3 dimensions"):
        layer(torch.randn(2, 5, 16), torch.randn(12))


def test_wrong_width(layer):
    with pytest.raises(ValueError, match="x must have last dimension 16"):
        layer(torch.randn(2, 5, 12), torch.randn(2, 12))
    with pytest.raises(ValueError, match="context must have last dimension 12"):
        layer(torch.randn(2, 5, 16), torch.randn(2, 3, 16))


def test_wrong_batch(layer):
    with pytest.raises(ValueError, match="batch size 3 but x has 2"):
        layer(torch.randn(2, 5, 16), torch.randn(3, 4, 12))
    with pytest.raises(ValueError, match="batch size 1 but x has 2"):
        layer(torch.randn(2, 5, 16), torch.randn(1, 12))


def test_mask_dtype(layer):
    with pytest.raises(ValueError, match="torch.bool"):
        layer(torch.randn(2, 5, 16), torch.randn(2, 4, 12), context_mask=torch.ones(2, 4))


def test_mask_shape(layer):
    with pytest.raises(ValueError, match=r"context_mask must have shape \(2, 4\)"):
        layer(torch.randn(2, 5, 16), torch.randn(2, 4, 12), context_mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"context_mask must have shape \(2,\)"):
        layer(torch.randn(2, 5, 16), torch.randn(2, 12), context_mask=torch.ones(2, 1, dtype=torch.bool))


def test_config_rejects_unknown_field():
    with pytest.raises(ValueError, match="did you mean 'residual'"):
        film.FiLMConfig(query_dim=8, residul=False)


# -- laws -----------------------------------------------------------------------

LAWS = {law.name: law for law in film.SPEC.laws}
FIELDS = [dict(f) for f in film.SPEC.examples]


@pytest.mark.parametrize("fields", FIELDS)
@pytest.mark.parametrize("name", sorted(LAWS))
def test_law_holds(name, fields):
    LAWS[name].check(film.SPEC, fields, torch.Generator().manual_seed(7))


def test_identity_law_fails_without_the_residual_one(monkeypatch):
    """Dropping the '1 +' makes a zero generator give 0, not x."""
    monkeypatch.setattr(film.FiLM, "forward", lambda self, x, context=None, *, context_mask=None:
                        x * self.to_scale_shift(self.pool(context, context_mask)).unsqueeze(1).chunk(2, -1)[0])
    with pytest.raises(AssertionError, match="should return x exactly"):
        LAWS["identity-when-generator-zero"].check(film.SPEC, FIELDS[0], torch.Generator().manual_seed(7))


def test_identity_at_init_law_fails_with_default_init(monkeypatch):
    real_init = film.FiLM.__init__

    def default_init(self, *args, **kwargs):  # the residual form without its zero initialisation
        real_init(self, *args, **kwargs)
        torch.nn.init.normal_(self.to_scale_shift.weight)
        torch.nn.init.normal_(self.to_scale_shift.bias)

    monkeypatch.setattr(film.FiLM, "__init__", default_init)
    with pytest.raises(AssertionError, match="should be the identity"):
        LAWS["identity-at-init"].check(film.SPEC, FIELDS[0], torch.Generator().manual_seed(7))


def test_tokenwise_law_fails_when_tokens_interact(monkeypatch):
    """Pooling x into the conditioning (a token-mixing, length-dependent layer) breaks it."""
    real = film.FiLM.forward

    def mixes_tokens(self, x, context=None, *, context_mask=None):
        return real(self, x, context, context_mask=context_mask) + x.mean(dim=1, keepdim=True)

    monkeypatch.setattr(film.FiLM, "forward", mixes_tokens)
    with pytest.raises(AssertionError, match="token-by-token"):
        LAWS["tokenwise-linear-in-n"].check(film.SPEC, FIELDS[0], torch.Generator().manual_seed(7))


def test_masked_mean_law_fails_with_an_unmasked_mean(monkeypatch):
    monkeypatch.setattr(film.FiLM, "pool", lambda self, c, m=None: c if c.ndim == 2 else c.mean(1))
    with pytest.raises(AssertionError, match="masked mean"):
        LAWS["sequence-is-its-masked-mean"].check(film.SPEC, FIELDS[0], torch.Generator().manual_seed(7))


# -- configs ------------------------------------------------------------------

def test_yaml_selects_film():
    config = zoo.load_config(EXAMPLES / "film.yaml")
    assert config.variant == "film" and config.residual is True
    layer = zoo.create(config)
    assert isinstance(layer, film.FiLM)
    assert layer.to_scale_shift.in_features == config.context_dim
    assert layer.to_scale_shift.out_features == 2 * config.query_dim


def test_registered_through_entry_point():
    spec = zoo.get_variant("film")
    assert spec.module is film.FiLM and spec.plugin == "film"
    caps = spec.capabilities
    assert not caps.attention and not caps.dropout and not caps.self_attention

"""The `perceiver` variant (plugins/variants/perceiver.py): transformers' PerceiverLayer, laws, errors."""

from __future__ import annotations

import pytest
import torch

import zoo
from attention_zoo_plugins.variants import perceiver

FIELDS = {"query_dim": 32, "context_dim": 24, "heads": 4, "dim_head": 8, "bias": True}

# transformers' PerceiverLayer parameter -> ours
HF_NAMES = {
    "attention.self.layernorm1": "norm_q", "attention.self.layernorm2": "norm_context",
    "attention.self.query": "to_q", "attention.self.key": "to_k", "attention.self.value": "to_v",
    "attention.output.dense": "to_out.0", "layernorm": "norm_mlp", "mlp.dense1": "mlp.0", "mlp.dense2": "mlp.2",
}


def _failed(spec) -> set[str]:
    return {r.check for r in zoo.check(spec).results if r.status == "failed"}


def _broken(module, **changes) -> zoo.VariantSpec:
    """perceiver's spec with a broken layer and no oracle, so that only the laws can see the bug."""
    return perceiver.SPEC.replace(module=module, reference=None, plugin=None, distribution=None, **changes)


def _hf_layer(ours, cross_attention: bool, widening_factor: int):
    modeling = pytest.importorskip("transformers.models.perceiver.modeling_perceiver")
    from transformers import PerceiverConfig

    config = PerceiverConfig(hidden_act="gelu", attention_probs_dropout_prob=0.0)
    theirs = modeling.PerceiverLayer(config, is_cross_attention=cross_attention, qk_channels=32, v_channels=32,
                                     num_heads=4, q_dim=32, kv_dim=ours.context_dim,
                                     widening_factor=widening_factor).double().eval()
    state = {}
    for hf, mine in HF_NAMES.items():
        if not cross_attention and hf.endswith("layernorm2"):
            continue  # Identity in self-attention
        for leaf in ("weight", "bias"):
            state[f"{hf}.{leaf}"] = ours.state_dict()[f"{mine}.{leaf}"]
    theirs.load_state_dict(state, strict=True)
    return theirs


@pytest.mark.parametrize("widening_factor", [1, 4])
def test_equals_transformers_perceiver_layer(widening_factor):
    """Same weights in transformers' PerceiverLayer (cross-attention and latent self-attention)."""
    torch.manual_seed(0)
    ours = zoo.create("perceiver", **FIELDS, widening_factor=widening_factor).double().eval()
    with torch.no_grad():  # non-trivial layer norms
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x, c = torch.randn(2, 6, 32, dtype=torch.float64), torch.randn(2, 11, 24, dtype=torch.float64)
    mask = torch.rand(2, 11) > 0.3
    mask[:, 0] = True
    additive = torch.zeros(2, 1, 1, 11, dtype=torch.float64).masked_fill(~mask[:, None, None, :], -1e30)
    theirs = _hf_layer(ours, True, widening_factor)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, c, context_mask=mask), theirs(x, inputs=c, inputs_mask=additive)[0],
                                   atol=1e-12, rtol=1e-12)
    self_ours = zoo.create("perceiver", **{**FIELDS, "context_dim": None}, widening_factor=widening_factor)
    self_ours = self_ours.double().eval()
    self_theirs = _hf_layer(self_ours, False, widening_factor)
    with torch.no_grad():
        torch.testing.assert_close(self_ours(x), self_theirs(x)[0], atol=1e-12, rtol=1e-12)


def test_latents_stay_latents_whatever_the_input_size():
    layer = zoo.create("perceiver", **FIELDS).eval()
    latents = torch.randn(1, 8, 32)
    for m in (1, 50, 2000):
        with torch.no_grad():
            assert layer(latents, torch.randn(1, m, 24)).shape == (1, 8, 32)


def test_without_query_residual_zero_weights_give_zero():
    layer = zoo.create("perceiver", **FIELDS, query_residual=False).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.zero_()
        assert torch.equal(layer(torch.randn(2, 3, 32), torch.randn(2, 4, 24)), torch.zeros(2, 3, 32))


def test_bad_input_names_the_argument():
    layer = zoo.create("perceiver", **FIELDS)
    with pytest.raises(ValueError, match="context"):
        layer(torch.randn(2, 3, 32), torch.randn(2, 4, 32))
    with pytest.raises(ValueError, match="context_dim=24 differs from query_dim=32"):
        layer(torch.randn(2, 3, 32))
    with pytest.raises(ValueError, match="widening_factor"):
        zoo.create("perceiver", **FIELDS, widening_factor=0)


def test_harness_passes_and_runs_the_laws():
    report = zoo.check("perceiver")
    assert report.passed, report.table()
    assert {"law:n-latents-whatever-m", "law:input-order-ignored", "law:zero-weights-is-identity"} <= \
        {r.check for r in report.results}


class NoQueryResidual(perceiver.PerceiverAttention):
    """Drops the query residual (x + Attn) whatever the config says."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.query_residual = False


class InputPositions(perceiver.PerceiverAttention):
    """Adds a position signal to the input array: the inputs' order now matters."""

    def forward(self, x, context=None, *, context_mask=None):
        if context is not None:  # (a signal constant across features would vanish in the layer norm)
            pos = torch.arange(context.shape[1], dtype=context.dtype)[None, :, None] / 7
            context = context + pos * torch.linspace(-1, 1, context.shape[-1], dtype=context.dtype)
        return super().forward(x, context, context_mask=context_mask)


class InputsAsQueries(perceiver.PerceiverAttention):
    """Roles swapped: the input array queries the latents, so the output has M rows."""

    def forward(self, x, context=None, *, context_mask=None):
        if context is None:
            return super().forward(x)
        return super().forward(context, x)


EQUAL_WIDTHS = ({"query_dim": 16, "heads": 2, "dim_head": 8},)


def test_zero_weights_law_fails_alone_without_query_residual():
    assert _failed(_broken(NoQueryResidual)) == {"law:zero-weights-is-identity"}


def test_input_order_law_fails_on_input_positions():
    failed = _failed(_broken(InputPositions))
    assert "law:input-order-ignored" in failed
    assert failed <= {"law:input-order-ignored", "context-order"}  # the generic check sees it too


def test_latents_law_fails_when_inputs_become_queries():
    failed = _failed(_broken(InputsAsQueries, examples=EQUAL_WIDTHS))
    assert {"law:n-latents-whatever-m", "shape"} <= failed  # the generic shape check sees it too


def test_swap_uses_the_update_alone():
    """In a model with its own residual (diffusers' attn2), the layer's x is not added twice."""
    from zoo.swapping import call_layer

    layer = zoo.create("perceiver", **FIELDS).eval()
    assert layer.output_includes_x
    x, c = torch.randn(2, 3, 32), torch.randn(2, 5, 24)
    with torch.no_grad():
        torch.testing.assert_close(call_layer(layer, x, c, None), layer(x, c) - x)
    assert not zoo.create("perceiver", **FIELDS, query_residual=False).output_includes_x

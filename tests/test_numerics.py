"""Numerical edge cases for every registered variant: large logits, fully masked rows,
length-1 sequences, half precision. Outputs stay finite and within the oracle's tolerance."""

from __future__ import annotations

import pytest
import torch

from variant_utils import build, inputs_for, oracle, random_mask, registered

TOL = {torch.float32: 2e-4, torch.float64: 1e-10, torch.bfloat16: 4e-2, torch.float16: 1e-2}


def _close(out, ref, dtype, what):
    assert torch.isfinite(out).all(), f"{what}: non-finite output"
    scale = ref.abs().max().clamp_min(1.0)
    err = ((out.double() - ref).abs().max() / scale).item()
    assert err <= TOL[dtype], f"{what}: relative error {err:.2e} above {TOL[dtype]:.0e}"


@pytest.mark.parametrize("name", registered())
def test_large_logits(name):
    spec, layer = build(name)
    inputs = inputs_for(spec, layer, seed=3)
    big = {k: v * 1e4 if torch.is_tensor(v) and v.is_floating_point() else v for k, v in inputs.items()}
    with torch.no_grad():
        out = layer(**big)
    _close(out, oracle(spec, layer, big), torch.float32, "inputs scaled by 1e4")


@pytest.mark.parametrize("name", registered())
def test_fully_masked_rows_are_finite_with_finite_gradients(name):
    spec, layer = build(name)
    inputs = inputs_for(spec, layer, seed=4)
    mask = random_mask(spec, inputs, torch.Generator().manual_seed(0), p_keep=0.0)
    if mask is None:
        pytest.skip(f"{name} takes no context mask")
    inputs["context_mask"] = mask
    inputs["x"].requires_grad_(True)
    out = layer(**inputs)
    _close(out.detach(), oracle(spec, layer, inputs), torch.float32, "fully masked")
    out.square().sum().backward()
    assert torch.isfinite(inputs["x"].grad).all()
    for pname, p in layer.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), f"non-finite gradient in {pname}"


@pytest.mark.parametrize("name", registered())
def test_length_one_sequences(name):
    spec, layer = build(name)
    inputs = inputs_for(spec, layer, batch=1, query_len=1, context_len=1, seed=5)
    with torch.no_grad():
        out = layer(**inputs)
    _close(out, oracle(spec, layer, inputs), torch.float32, "length 1")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", registered())
def test_half_precision(name, dtype):
    spec, layer = build(name, dtype=dtype)
    inputs = inputs_for(spec, layer, seed=6, dtype=dtype)
    mask = random_mask(spec, inputs, torch.Generator().manual_seed(1))
    if mask is not None:
        inputs["context_mask"] = mask
    with torch.no_grad():
        out = layer(**inputs)
    assert out.dtype == dtype
    _close(out, oracle(spec, layer, inputs), dtype, str(dtype))


def test_masked_row_check_fails_without_the_empty_row_rule(monkeypatch):
    """A naive masked softmax (NaN on empty rows) is caught by the test above."""
    import attention_zoo_plugins.cross as cross

    def naive_attend(q, k, v, key_mask=None, *, dropout_p=0.0):
        scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[..., None, None, :], float("-inf"))
        return torch.softmax(scores, -1) @ v

    monkeypatch.setattr(cross, "attend", naive_attend)
    with pytest.raises(AssertionError, match="non-finite"):
        test_fully_masked_rows_are_finite_with_finite_gradients("cross")


def test_large_logit_check_fails_on_an_overflowing_layer(monkeypatch):
    """A layer computing exp() without the max-subtraction overflows at 1e4 and is caught."""
    import attention_zoo_plugins.cross as cross

    def unstable_attend(q, k, v, key_mask=None, *, dropout_p=0.0):
        w = torch.exp(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5)
        return (w / w.sum(-1, keepdim=True)) @ v

    monkeypatch.setattr(cross, "attend", unstable_attend)
    with pytest.raises(AssertionError):
        test_large_logits("cross")

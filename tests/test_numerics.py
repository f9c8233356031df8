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
    import zoo.nn as cross  # cross's forward is the toolkit's MultiHeadAttention

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
    import zoo.nn as cross  # cross's forward is the toolkit's MultiHeadAttention

    def unstable_attend(q, k, v, key_mask=None, *, dropout_p=0.0):
        w = torch.exp(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5)
        return (w / w.sum(-1, keepdim=True)) @ v

    monkeypatch.setattr(cross, "attend", unstable_attend)
    with pytest.raises(AssertionError):
        test_large_logits("cross")


def _nonfinite_runs(spec, layer, inputs, where, value):
    """Outputs for ``inputs`` with ``value`` written into all of ``where``: without a mask,
    and with an all-True mask where the variant takes one."""
    bad = dict(inputs)
    bad.pop("context_mask", None)
    bad[where] = torch.full_like(inputs[where], value)
    runs = {}
    with torch.no_grad():
        runs["no mask"] = layer(**bad)
        if bad.get("context") is not None and spec.capabilities.masks:
            runs["all-True mask"] = layer(**bad, context_mask=torch.ones(bad["context"].shape[:-1], dtype=torch.bool))
    return runs


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("where", ["x", "context"])
@pytest.mark.parametrize("name", registered())
def test_nonfinite_in_gives_nonfinite_out_with_and_without_a_mask(name, where, value):
    """NaN/inf in an input is never laundered into finite output, and a mask that masks
    nothing changes nothing (the fused kernels disagree on this by themselves)."""
    spec, layer = build(name)
    inputs = inputs_for(spec, layer, seed=7, query_len=16, context_len=8)
    if inputs.get(where) is None:
        pytest.skip(f"{name} takes no {where}")
    runs = _nonfinite_runs(spec, layer, inputs, where, value)
    for label, out in runs.items():
        assert not torch.isfinite(out).all(), f"{name}: {value} in {where} gave finite output ({label})"
        if value != value:  # NaN in: NaN out (inf may stay inf, e.g. FiLM's (1+gamma)*x)
            assert out.isnan().any(), f"{name}: NaN in {where} gave no NaN ({label})"
    if len(runs) == 2:
        a, b = runs.values()
        assert torch.equal(torch.isfinite(a), torch.isfinite(b)), f"{name}: the mask changed which outputs are finite"


class _KernelThatLaundersNaN:
    """torch.nn.functional with an SDPA that turns non-finite rows finite, as some fused CPU
    kernels do on some processors: built here, so the tests never depend on which CPU runs them."""

    def __getattr__(self, name):
        return getattr(torch.nn.functional, name)

    @staticmethod
    def scaled_dot_product_attention(*args, **kwargs):
        out = torch.nn.functional.scaled_dot_product_attention(*args, **kwargs)
        return torch.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def test_the_rule_holds_whatever_the_kernel_does_with_nan(monkeypatch):
    """With a kernel that launders NaN, attend still propagates it (the zoo's guarantee)."""
    import zoo.functional

    monkeypatch.setattr(zoo.functional, "F", _KernelThatLaundersNaN())
    for where in ("x", "context"):
        test_nonfinite_in_gives_nonfinite_out_with_and_without_a_mask("cross", where, float("nan"))


def test_nonfinite_check_fails_without_the_propagation(monkeypatch):
    """Without attend's propagation, that kernel's finite rows come back and the check fails."""
    import zoo.functional

    monkeypatch.setattr(zoo.functional, "F", _KernelThatLaundersNaN())
    monkeypatch.setattr(zoo.functional, "_propagate_nonfinite", lambda out, q, k, v: out)
    with pytest.raises(AssertionError, match="finite"):
        test_nonfinite_in_gives_nonfinite_out_with_and_without_a_mask("cross", "x", float("nan"))


def test_nonfinite_rule_is_per_row_and_per_batch_element():
    """A NaN query poisons its own row only; a NaN key poisons its own batch element only."""
    from zoo.functional import attend

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 4, generator=g) for _ in range(3))
    q[0, 1, 3, 0] = float("nan")
    out = attend(q, k, v)
    assert out[0, 1, 3].isnan().all() and out.isnan().sum() == 4
    k[1, 0, 2, 1] = float("inf")
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 2] = False  # masked out, still poisons its batch element: the rule ignores masks
    out = attend(q, k, v, mask)
    assert out[1].isnan().all() and out[0].isnan().sum() == 4
    # with finite inputs the propagation is invisible, gradients included
    q, k, v = (torch.randn(2, 2, 5, 4, generator=g).requires_grad_(True) for _ in range(3))
    grads = torch.autograd.grad(attend(q, k, v).square().sum(), (q, k, v))
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    for got, want in zip(grads, torch.autograd.grad(plain.square().sum(), (q, k, v))):
        torch.testing.assert_close(got, want)


def test_mask_on_another_device_is_a_clear_error():
    """Every registered variant refuses a context_mask on another device than its inputs."""
    for name in registered():
        spec, layer = build(name)
        inputs = inputs_for(spec, layer, seed=8)
        if inputs.get("context") is None or not spec.capabilities.masks:
            continue
        inputs["context_mask"] = torch.ones(inputs["context"].shape[:-1], dtype=torch.bool, device="meta")
        with pytest.raises(ValueError, match="meta"):
            layer(**inputs)

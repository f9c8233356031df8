"""Every registered variant, driven with random shapes, masks, dtypes and bad input.

The property: a layer either returns a finite tensor with x's shape and dtype, or
raises one of the documented errors (ValueError, TypeError) with a message;
nothing else (no crash deep in torch, no NaN, no silent garbage shape). Valid
input must always succeed.
"""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zoo
from variant_utils import build, inputs_for, random_mask, registered

MUTATIONS = [
    "none", "mask", "all-masked", "mask-shape", "mask-dtype", "x-width", "x-rank",
    "context-width", "context-rank", "batch", "dtype", "integer", "empty-x", "empty-context",
    "device", "not-a-tensor",
]
DTYPES = [torch.float32, torch.float64, torch.bfloat16]


def _mutate(mutation, spec, inputs, g):
    x = inputs["x"]
    context = inputs.get("context")
    if mutation in ("mask", "all-masked"):
        mask = random_mask(spec, inputs, g, p_keep=0.0 if mutation == "all-masked" else 0.6)
        if mask is not None:
            inputs["context_mask"] = mask
    elif mutation == "mask-shape" and context is not None:
        inputs["context_mask"] = torch.ones(*context.shape[:-1], 2, dtype=torch.bool)
    elif mutation == "mask-dtype" and context is not None:
        inputs["context_mask"] = torch.ones(context.shape[:-1])
    elif mutation == "x-width":
        inputs["x"] = torch.randn(*x.shape[:-1], x.shape[-1] + 1, dtype=x.dtype)
    elif mutation == "x-rank":
        inputs["x"] = x[0]
    elif mutation == "context-width" and context is not None:
        inputs["context"] = torch.randn(*context.shape[:-1], context.shape[-1] + 3, dtype=context.dtype)
    elif mutation == "context-rank" and context is not None:
        inputs["context"] = context.unsqueeze(0)
    elif mutation == "batch" and context is not None:
        inputs["context"] = torch.cat([context, context], dim=0)
    elif mutation == "dtype":
        inputs["x"] = x.to(torch.float64 if x.dtype != torch.float64 else torch.float32)
    elif mutation == "integer":
        inputs["x"] = x.to(torch.int64)
    elif mutation == "empty-x":
        inputs["x"] = x[:, :0]
    elif mutation == "empty-context" and context is not None and context.ndim >= 3 and context.shape[1] > 0:
        inputs["context"] = context[:, :0]
        if "context_mask" in inputs:
            inputs["context_mask"] = inputs["context_mask"][:, :0]
    elif mutation == "device":
        inputs["x"] = x.to("meta")  # a device the weights are not on
    elif mutation == "not-a-tensor":
        inputs["x"] = x.tolist()
    else:
        return False  # mutation does not apply: the input stays valid
    return mutation not in ("mask", "all-masked")


def _drive(name, *, example, dtype, batch, n, m, seed, mutation):
    """Build ``name``'s layer, mutate valid inputs, call it: a finite output of x's shape
    for valid input, ValueError/TypeError with a message for bad input; anything else
    (bad input accepted, a crash deep in torch) is an AssertionError saying so."""
    spec, _ = build(name)
    example %= len(spec.example_configs())
    spec, layer = build(name, example, dtype=dtype)
    inputs = inputs_for(spec, layer, batch=batch, query_len=n, context_len=m, dtype=dtype, seed=seed)
    bad = _mutate(mutation, spec, inputs, torch.Generator().manual_seed(seed))
    try:
        with torch.no_grad():
            out = layer(**inputs)
    except (ValueError, TypeError) as exc:
        assert bad, f"valid input ({mutation}) was refused: {exc}"
        assert len(str(exc)) > 20, f"unhelpful message: {exc!r}"
        return
    except Exception as exc:  # noqa: BLE001 - the property's failure, said plainly
        raise AssertionError(f"undocumented error for {mutation}: {type(exc).__name__}: {exc}") from exc
    assert not bad, f"bad input ({mutation}) was accepted and gave shape {tuple(out.shape)}"
    x = inputs["x"]
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert torch.isfinite(out).all(), f"non-finite output for {mutation} in {dtype}"


@pytest.mark.parametrize("name", registered())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_finite_output_or_documented_error(name, data):
    _drive(name, example=data.draw(st.integers(0, 10), label="example"),
           dtype=data.draw(st.sampled_from(DTYPES), label="dtype"),
           batch=data.draw(st.integers(1, 3), label="batch"), n=data.draw(st.integers(1, 20), label="query_len"),
           m=data.draw(st.integers(1, 9), label="context_len"), seed=data.draw(st.integers(0, 2**16), label="seed"),
           mutation=data.draw(st.sampled_from(MUTATIONS), label="mutation"))


@pytest.mark.parametrize("mutation", ["x-width", "context-width", "batch"])
def test_property_fails_when_validation_is_removed(monkeypatch, mutation):
    """The property catches a layer whose input validation was taken out (and holds with it)."""
    import zoo.nn as common

    case = dict(example=0, dtype=torch.float32, batch=2, n=5, m=3, seed=0, mutation=mutation)
    _drive("cross", **case)  # with validation: a clear ValueError, the property holds
    monkeypatch.setattr(common, "validate_tensor", lambda name, t, **kw: t)
    monkeypatch.setattr(common, "validate_same_batch", lambda x, c: None)
    with pytest.raises(AssertionError, match="undocumented error|was accepted"):
        _drive("cross", **case)


# -- the input rules of issue 16: device, non-finite values, number fields ---------------


@pytest.mark.parametrize("name", registered())
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mask_device_and_nonfinite_inputs(name, data):
    """A mask on another device is a ValueError; NaN/inf anywhere in x or the context gives
    non-finite output (never a silently finite one), the same with and without a mask."""
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    spec, layer = build(name, dtype=dtype)
    batch = data.draw(st.integers(1, 3), label="batch")
    n = data.draw(st.integers(1, 20), label="query_len")
    m = data.draw(st.integers(1, 9), label="context_len")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    inputs = inputs_for(spec, layer, batch=batch, query_len=n, context_len=m, dtype=dtype, seed=seed)
    context = inputs.get("context")
    has_mask = context is not None and spec.capabilities.masks
    if has_mask and data.draw(st.booleans(), label="mask on meta"):
        inputs["context_mask"] = torch.ones(context.shape[:-1], dtype=torch.bool, device="meta")
        with pytest.raises(ValueError, match="device|meta"):
            layer(**inputs)
        return
    where = data.draw(st.sampled_from(["x", "context"] if context is not None else ["x"]), label="where")
    value = data.draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]), label="value")
    inputs.pop("context_mask", None)
    with torch.no_grad():
        # Outputs that do not depend on `where` at all (RETRO before its first complete chunk
        # is exactly zero by definition) stay as they are; any that depend on it must not be finite.
        before = layer(**inputs)
        nudged = layer(**{**inputs, where: inputs[where] + 1})
        depends = ~torch.eq(before, nudged)
        inputs[where] = torch.full_like(inputs[where], value)
        plain = layer(**inputs)
        assert not torch.isfinite(plain[depends]).any(), f"{value} in {where} gave finite output"
        if has_mask:
            masked = layer(**inputs, context_mask=torch.ones(context.shape[:-1], dtype=torch.bool))
            assert torch.equal(torch.isfinite(plain), torch.isfinite(masked)), "an all-True mask changed the result"


def _number_fields(config):
    from zoo.config import _numeric_kinds

    return [f for f, info in config.model_fields.items() if _numeric_kinds(info.annotation)]


@pytest.mark.parametrize("name", registered())
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_number_fields_refuse_bools_and_strings(name, data):
    """A bool is not a width and "8" is not 8; a number (as YAML/JSON give it) still loads."""
    spec = zoo.get_variant(name)
    fields = _number_fields(spec.config)
    if not fields:
        pytest.skip(f"{name} has no number fields")
    field = data.draw(st.sampled_from(fields), label="field")
    base = dict(spec.example_configs()[0])
    bad = data.draw(st.one_of(st.booleans(), st.integers(1, 64).map(str), st.text(max_size=5)), label="value")
    with pytest.raises(ValueError, match=field):
        zoo.create(spec, **{**base, field: bad})
    # the example's own values, through JSON text as a file would carry them, still load
    config = zoo.create(spec, **base).config
    assert zoo.create(json.loads(config.model_dump_json())).config == config

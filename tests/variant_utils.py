"""Helpers for tests driven by the registry (every registered variant)."""

from __future__ import annotations

import copy

import torch

import zoo


def registered() -> list[str]:
    """Every variant the installed plugins register (what `zoo list` shows)."""
    return zoo.list_variants()


def build(name: str, example: int = 0, dtype=torch.float32, **overrides):
    spec = zoo.get_variant(name)
    fields = {**spec.example_configs()[example], **overrides}
    if "dropout" in spec.config.model_fields:
        fields["dropout"] = 0.0
    return spec, zoo.create(spec, **fields).to(dtype).eval()


def inputs_for(spec, layer, *, batch=2, query_len=8, context_len=6, dtype=torch.float32, seed=0):
    if spec.capabilities.equal_lengths:
        context_len = query_len
    g = torch.Generator().manual_seed(seed)
    return spec.make_inputs(layer, batch=batch, query_len=query_len, context_len=context_len,
                            generator=g, dtype=dtype)


def oracle(spec, layer, inputs):
    """The spec's naive reference, computed in float64 on a float64 copy of the layer."""
    ref_layer = copy.deepcopy(layer).double()
    as64 = {k: (v.double() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in inputs.items()}
    with torch.no_grad():
        return spec.reference(ref_layer, **as64)


def random_mask(spec, inputs, generator, p_keep=0.6):
    context = inputs.get("context")
    if context is None or not spec.capabilities.masks or context.ndim < 2:
        return None
    return torch.rand(context.shape[:-1], generator=generator) < p_keep

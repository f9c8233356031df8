"""The bare twins of gqa, linear, perceiver and crossvit (what the bench times the layers
against) compute the layer's output and gradients from the very same weights."""

from __future__ import annotations

import importlib

import pytest
import torch

import zoo

CASES = [
    ("gqa", {"query_dim": 32, "context_dim": 24, "heads": 8, "dim_head": 4, "kv_heads": 2, "bias": True}),
    ("gqa", {"query_dim": 32, "heads": 4, "dim_head": 8, "kv_heads": 4}),
    ("linear", {"query_dim": 32, "context_dim": 24, "heads": 4, "dim_head": 8, "bias": True}),
    ("perceiver", {"query_dim": 32, "context_dim": 24, "heads": 4, "dim_head": 8, "widening_factor": 2}),
    ("perceiver", {"query_dim": 32, "context_dim": 24, "heads": 4, "dim_head": 8, "query_residual": False}),
    ("crossvit", {"query_dim": 32, "context_dim": 24, "heads": 4, "dim_head": 8, "bias": True}),
]


@pytest.mark.parametrize(("name", "fields"), CASES)
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_bare_twin_equals_layer(name, fields, dtype, tol):
    bare = importlib.import_module(f"attention_zoo_plugins.variants.{name}").bare
    torch.manual_seed(0)
    layer = zoo.create(name, **fields).to(dtype)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(2, 9, 32, dtype=dtype, requires_grad=True)
    c = torch.randn(2, 11, fields.get("context_dim") or 32, dtype=dtype, requires_grad=True)
    ours, theirs = layer(x, c), bare(layer, x, c)
    assert ours.shape == theirs.shape == x.shape
    torch.testing.assert_close(ours, theirs, atol=tol, rtol=tol)
    params = [x, c, *layer.parameters()]
    g_ours = torch.autograd.grad(ours.square().sum(), params)
    g_theirs = torch.autograd.grad(theirs.square().sum(), params)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, atol=tol * 10, rtol=tol * 10)

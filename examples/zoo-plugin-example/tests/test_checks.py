"""The zoo's shared harness inside this plugin's own test suite: one test per check.

`parametrize_with_checks` (from attention-zoo, whose pytest plugin loads
automatically) generates `test_zoo_harness[gated-cross-shape]`,
`[gated-cross-oracle-forward]`, ... and one test per law.
"""

import torch
import zoo
from zoo.testing import parametrize_with_checks

from zoo_example_gated_cross import SPEC


@parametrize_with_checks([SPEC], slow=True)
def test_zoo_harness(variant, check):
    check(variant)


def test_registered_through_the_entry_point():
    """Installed, the distribution's entry point registers the variant by name."""
    spec = zoo.get_variant("gated-cross")
    assert spec.module is SPEC.module
    assert spec.distribution == "zoo-example-gated-cross"


def test_gate_starts_closed_and_opens():
    layer = zoo.create("gated-cross", query_dim=8, context_dim=6, heads=2, dim_head=4)
    x, c = torch.randn(2, 5, 8), torch.randn(2, 3, 6)
    assert torch.equal(layer(x, c), x)
    with torch.no_grad():
        layer.attn_gate.fill_(1.0)
    assert not torch.allclose(layer(x, c), x)


def test_gate_learns_from_zero():
    """tanh'(0) = 1: the gate gets a gradient even while the block is the identity."""
    layer = zoo.create("gated-cross", query_dim=8, heads=2, dim_head=4)
    x = torch.randn(2, 5, 8)
    layer(x, torch.randn(2, 3, 8)).pow(2).sum().backward()
    assert layer.attn_gate.grad is not None and layer.attn_gate.grad.abs() > 0

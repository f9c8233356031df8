"""The `linear` variant (plugins/variants/linear.py): the kernel formula, linear memory, laws, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import zoo
from attention_zoo_plugins.variants import linear
from zoo.functional import split_heads

FIELDS = {"query_dim": 32, "context_dim": 24, "heads": 4, "dim_head": 8}


def _failed(spec) -> set[str]:
    return {r.check for r in zoo.check(spec).results if r.status == "failed"}


def _broken(module) -> zoo.VariantSpec:
    """linear's spec with a broken layer and no oracle, so that only the laws can see the bug."""
    return linear.SPEC.replace(module=module, reference=None, plugin=None, distribution=None)


def test_paper_formula_by_hand():
    """Eq. (4)-(6) of Katharopoulos et al. for one head, written with einsum on the raw weights."""
    torch.manual_seed(0)
    layer = zoo.create("linear", query_dim=6, context_dim=5, heads=1, dim_head=3).double().eval()
    x, c = torch.randn(1, 4, 6, dtype=torch.float64), torch.randn(1, 7, 5, dtype=torch.float64)
    q, k, v = x @ layer.to_q.weight.T, c @ layer.to_k.weight.T, c @ layer.to_v.weight.T
    fq, fk = F.elu(q) + 1, F.elu(k) + 1
    s = torch.einsum("bmd,bme->bde", fk, v)
    z = fk.sum(1)
    out = torch.einsum("bnd,bde->bne", fq, s) / torch.einsum("bnd,bd->bn", fq, z)[..., None]
    expected = layer.to_out[0](out)
    with torch.no_grad():
        torch.testing.assert_close(layer(x, c), expected.detach(), atol=1e-12, rtol=1e-12)


def test_not_a_softmax():
    """Same weights as cross, different output: the trade the catalog describes."""
    torch.manual_seed(0)
    ours = zoo.create("linear", **FIELDS).double().eval()
    cross = zoo.create("cross", **FIELDS).double().eval()
    cross.load_state_dict(ours.state_dict(), strict=True)
    x, c = torch.randn(2, 5, 32, dtype=torch.float64), torch.randn(2, 9, 24, dtype=torch.float64)
    with torch.no_grad():
        assert (ours(x, c) - cross(x, c)).abs().max() > 1e-3


def test_a_single_key_gives_its_value():
    """One unmasked key: every query's attention term is that key's value (normalised kernel)."""
    layer = zoo.create("linear", **FIELDS, bias=True).double().eval()
    x, c = torch.randn(2, 5, 32, dtype=torch.float64), torch.randn(2, 9, 24, dtype=torch.float64)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[:, 3] = True
    with torch.no_grad():
        out = layer(x, c, context_mask=mask)
        expected = layer.to_out[0](layer.to_v(c[:, 3:4])).expand(2, 5, 32)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)


def test_empty_row_is_zero_with_finite_gradients():
    layer = zoo.create("linear", **FIELDS, out_bias=False).double()
    x = torch.randn(2, 5, 32, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 9, 24, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0] = False
    out = layer(x, c, context_mask=mask)
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(c.grad).all()
    assert torch.equal(c.grad[0], torch.zeros_like(c.grad[0]))


def test_underflowing_similarities_give_zero_not_nan():
    """phi(t) = exp(t) for t < 0: a query far in the negative orthant has similarity 0 to
    every key in float32 (and float64); its attention term is then 0, its gradients finite."""
    layer = zoo.create("linear", query_dim=4, heads=1, dim_head=4, out_bias=False)
    with torch.no_grad():
        layer.to_q.weight.copy_(torch.eye(4))
    x = torch.full((1, 2, 4), -1e4)
    x[0, 1] = 1.0  # a normal query next to it
    x.requires_grad_(True)
    c = torch.randn(1, 5, 4)
    out = layer(x, c)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0, 0], torch.zeros(4))
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


def test_harness_passes_and_runs_both_laws():
    report = zoo.check("linear")
    assert report.passed, report.table()
    assert {"law:kernel-formula", "law:no-n-by-m-tensor"} <= {r.check for r in report.results}


class NoNormaliser(linear.LinearAttention):
    """Forgets the denominator phi(q) . z: unnormalised kernel attention."""

    def forward(self, x, context=None, *, context_mask=None):
        context = self.check_context(x, context, context_mask)
        q, k, v = (split_heads(lin(t), self.heads) for lin, t in ((self.to_q, x), (self.to_k, context),
                                                                  (self.to_v, context)))
        fk = linear.feature_map(k)
        if context_mask is not None:
            fk = fk * context_mask[:, None, :, None].to(fk.dtype)
        return self.project_out(linear.feature_map(q) @ (fk.transpose(-1, -2) @ v))


class Quadratic(linear.LinearAttention):
    """The right numbers, the wrong way: the N x M kernel matrix materialised."""

    def forward(self, x, context=None, *, context_mask=None):
        context = self.check_context(x, context, context_mask)
        q, k, v = (split_heads(lin(t), self.heads) for lin, t in ((self.to_q, x), (self.to_k, context),
                                                                  (self.to_v, context)))
        sim = linear.feature_map(q) @ linear.feature_map(k).transpose(-1, -2)  # (B, h, N, M)
        if context_mask is not None:
            sim = sim * context_mask[:, None, None, :].to(sim.dtype)
        total = sim.sum(-1, keepdim=True)
        return self.project_out(sim @ v / torch.where(total > 0, total, torch.ones_like(total)))


@pytest.mark.parametrize(("broken", "law"), [
    (NoNormaliser, "law:kernel-formula"),
    (Quadratic, "law:no-n-by-m-tensor"),
])
def test_each_law_fails_on_its_broken_layer(broken, law):
    assert _failed(_broken(broken)) == {law}


def test_same_config_fields_as_cross():
    assert set(linear.LinearConfig.model_fields) - {"variant"} == \
        set(zoo.get_variant("cross").config.model_fields) - {"variant"}


@pytest.mark.slow
def test_memory_grows_linearly_32768_vs_2048():
    """N = M = 32768 within 0.5 GiB of N = M = 2048 at the same width (peak RSS, fresh process)."""
    from zoo.bench import memory

    def job(n):
        shape = zoo.Workload(1, n, n, {"query_dim": 64, "context_dim": 64, "heads": 4, "dim_head": 16})
        return {"variant": "linear", "impl": "zoo", "workload": shape.as_dict(), "dtype": "float32",
                "passes": ["fwd", "fwd+bwd"], "device": "cpu", "threads": 1}

    small, large = memory.measure_many([job(2048), job(32768)])
    for p in ("fwd", "fwd+bwd"):
        grew = large[p] - small[p]
        assert grew < 512, f"{p}: peak memory grew by {grew:.0f} MiB from N=M=2048 to 32768 (limit 512 MiB)"
    # the same measurement sees an N x M matrix: 32768^2 float32 scores would be 4 GiB per head
    assert large["fwd"] > small["fwd"], "the measurement is blind (no growth at all with 16x the tokens)"


@pytest.mark.parametrize("scale, context_len", [(16.0, 16), (1.0, 4096)])
def test_float16_sums_neither_overflow_nor_drift(scale, context_len):
    """The running sums cover the whole context: in float16 they overflowed (all-NaN output at
    inputs x16) and drifted (1.7e-2 at M = 4096). Accumulated in float32 they stay within the
    zoo's float16 tolerance of the float64 oracle."""
    g = torch.Generator().manual_seed(0)
    layer = zoo.create("linear", query_dim=64)
    x = torch.randn(1, 16, 64, generator=g) * scale
    c = torch.randn(1, context_len, 64, generator=g) * scale
    with torch.no_grad():
        out = layer.half()(x.half(), c.half())
        ref = linear.reference(layer.double(), x.double(), c.double())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    err = ((out.double() - ref).abs().max() / ref.abs().max().clamp_min(1.0)).item()
    assert err <= 1e-2, err

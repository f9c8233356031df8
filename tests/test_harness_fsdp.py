"""The ``fsdp`` slow harness check (zoo/harness/fsdp.py): FSDP2 ``fully_shard`` training over
two gloo processes equals one process; a layer that FSDP2 shards inconsistently fails it."""

from __future__ import annotations

import os

import pytest

from zoo import check
from zoo.harness import SLOW_CHECK_IDS, planned_checks

from broken_layers import SOUND, BrokenCachedWeight, ScalarGate, spec  # noqa: I001

slow = pytest.mark.skipif(os.environ.get("ZOO_RUN_SLOW", "") in ("", "0"),
                          reason="slow harness checks: set ZOO_RUN_SLOW=1")


def test_fsdp_is_a_slow_check_that_runs_with_slow():
    assert "fsdp" in SLOW_CHECK_IDS
    assert "fsdp" in planned_checks(SOUND, slow=True) and "fsdp" not in planned_checks(SOUND)


@slow
@pytest.mark.slow
def test_fsdp_passes_on_a_sound_layer():
    result = check(SOUND, checks=["fsdp"], examples=SOUND.example_configs()[:1])["fsdp"]
    assert result.passed, result.message
    assert "FSDP2 over 2 gloo processes" in result.message


@slow
@pytest.mark.slow
def test_fsdp_catches_a_layer_that_caches_a_parameter():
    broken = spec(BrokenCachedWeight)
    assert check(broken, checks=["oracle-forward", "state-dict"], examples=broken.example_configs()[:1]).passed
    result = check(broken, checks=["fsdp"], examples=broken.example_configs()[:1])["fsdp"]
    assert result.failed, result.message
    assert "to_q.weight after 2 SGD steps with FSDP2" in result.message


def test_fsdp_skips_a_layer_with_a_0_dim_parameter_and_says_why():
    gated = spec(ScalarGate)
    result = check(gated, checks=["fsdp"], slow=True, examples=gated.example_configs()[:1])["fsdp"]
    assert result.status == "skipped", result.message
    assert "FSDP2 cannot shard 0-dim parameters (gate); give them shape (1,)" in result.message

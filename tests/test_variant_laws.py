"""The laws of gqa, linear, perceiver and crossvit fail through ``zoo.testing.expect``,
so they still fail under ``python -O`` (which strips ``assert`` statements)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("gqa", "linear", "perceiver", "crossvit")


@pytest.mark.parametrize("name", VARIANTS)
def test_no_assert_statement_in_the_plugin(name):
    tree = ast.parse((ROOT / "plugins" / "variants" / f"{name}.py").read_text(encoding="utf-8"))
    found = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Assert)]
    assert not found, f"plugins/variants/{name}.py uses assert at lines {found}: use zoo.testing.expect"


UNDER_O = """
import sys
sys.path.insert(0, {tests!r})
import test_crossvit, test_gqa, test_linear, test_perceiver

cases = [
    (test_gqa, "StridedHeads", "law:all-kv-heads-is-cross"),
    (test_gqa, "OneMeansAll", "law:one-kv-head-is-multi-query"),
    (test_linear, "NoNormaliser", "law:kernel-formula"),
    (test_linear, "Quadratic", "law:no-n-by-m-tensor"),
    (test_perceiver, "NoQueryResidual", "law:zero-weights-is-identity"),
    (test_perceiver, "InputPositions", "law:input-order-ignored"),
    (test_crossvit, "FusedEverywhere", "law:only-cls-row"),
    (test_crossvit, "AttendsOwnPatches", "law:x-patches-not-attended"),
    (test_crossvit, "AttendsOtherCLS", "law:other-cls-not-attended"),
    (test_crossvit, "PatchPositions", "law:patch-order-ignored"),
]
print("optimize", sys.flags.optimize)
for module, broken, law in cases:
    print(broken, law, law in module._failed(module._broken(getattr(module, broken))))
"""


@pytest.mark.slow  # a fresh process (torch import) running ten harness checks
def test_each_law_still_fails_on_its_broken_layer_under_python_O():
    code = UNDER_O.format(tests=str(Path(__file__).parent))
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=600,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "optimize 1", out.stdout
    assert len(lines) == 11 and all(line.endswith(" True") for line in lines[1:]), out.stdout

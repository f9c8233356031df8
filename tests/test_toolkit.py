"""The variant author's toolkit (zoo/nn.py, zoo/oracle.py) and the guide's fifty-line variant
(examples/fifty_lines.py), which a newcomer copies to add a variant."""

from __future__ import annotations

import ast
import importlib.util
import io
import re
import tokenize
from pathlib import Path

import pytest
import torch

import zoo
from zoo.nn import MultiHeadBase
from zoo.oracle import heads_merge, heads_view, linear, naive_attention

ROOT = Path(__file__).resolve().parents[1]
FIFTY = ROOT / "examples" / "fifty_lines.py"
GUIDE = ROOT / "docs" / "guides" / "writing-a-plugin.md"


def lines_of_code(source: str) -> int:
    """Lines holding code: not blank, not only a comment, not part of a docstring."""
    tree = ast.parse(source)
    doc_lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                doc_lines.update(range(first.lineno, first.end_lineno + 1))
    code_lines: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            code_lines.update(range(tok.start[0], tok.end[0] + 1))
    return len(code_lines - doc_lines)


def test_the_line_counter_counts_code_only():
    src = '"""Module doc\n\nmore."""\n\n# a comment\nimport os  # trailing\n\n\ndef f(x):\n    """Doc."""\n    return (x +\n            1)\n'
    assert lines_of_code(src) == 4  # import, def, and the two lines of the return


def _load_fifty():
    spec = importlib.util.spec_from_file_location("fifty_lines", FIFTY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_new_variant_fits_in_fifty_lines_of_code():
    n = lines_of_code(FIFTY.read_text(encoding="utf-8"))
    assert n <= 50, f"{FIFTY.name} has {n} lines of code; the guide promises at most 50"
    tree = ast.parse(FIFTY.read_text(encoding="utf-8"))
    names = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    assert "reference" in names and "zoo_register_variants" not in names  # the declaration registers it
    declared = [n.name for n in tree.body if isinstance(n, ast.ClassDef)
                and any("zoo.variant" in ast.unparse(d) for d in n.decorator_list)]
    assert declared == ["QKNormAttention"], "the layer is declared once, with @zoo.variant"
    assert "Literal" not in FIFTY.read_text(encoding="utf-8"), "the variant literal follows from the declaration"


def test_the_fifty_line_variants_own_field_is_validated_and_used(registry):
    """One real config field (``eps``), declared once: validated, defaulted, reaching the layer."""
    module = _load_fifty()
    registry.load_plugin(module, name="fifty-lines", distribution="example")
    assert zoo.create("qk-norm", query_dim=8, eps=1e-3).norm_k.eps == 1e-3
    assert zoo.create("qk-norm", query_dim=8).norm_q.eps == module.QKNormConfig.model_fields["eps"].default
    with pytest.raises(ValueError, match="eps"):
        zoo.create("qk-norm", query_dim=8, eps=0)
    direct = module.QKNormAttention(query_dim=8, eps=1e-2)  # built as zoo.create builds it
    assert direct.config == zoo.create("qk-norm", query_dim=8, eps=1e-2).config
    assert zoo.get_variant("qk-norm").config.model_fields["variant"].default == "qk-norm"


def test_the_fifty_line_variant_registers_and_passes_the_harness(registry):
    module = _load_fifty()
    registry.load_plugin(module, name="fifty-lines", distribution="example")
    assert zoo.list_variants() == ["qk-norm"]
    report = zoo.check("qk-norm")
    failed = [(r.check, r.message) for r in report.results if r.status == "failed"]
    assert report.passed, failed
    ran = {r.check for r in report.results if r.status == "passed"}
    assert {"oracle-forward", "oracle-grad", "masked-rows", "bad-input", "dropout"} <= ran


@pytest.mark.slow
def test_running_the_file_prints_its_check_table():
    """`python examples/fifty_lines.py` shows something useful: the harness's table."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(FIFTY)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^qk-norm\s+ok\s+ok", result.stdout, re.M) and "all 1 variant(s) passed" in result.stdout


def test_the_harness_catches_a_broken_copy(registry):
    """The same file with the key norm left out of forward: the oracle check fails."""
    module = _load_fifty()

    class Broken(module.QKNormAttention):
        def forward(self, x, context=None, *, context_mask=None):
            context = self.check_context(x, context, context_mask)
            q = self.norm_q(zoo.nn.split_heads(self.to_q(x), self.heads))
            k = zoo.nn.split_heads(self.to_k(context), self.heads)  # norm_k forgotten
            v = zoo.nn.split_heads(self.to_v(context), self.heads)
            return self.project_out(zoo.nn.attend(q, k, v, context_mask))

    report = zoo.check(module.QKNormAttention.spec.replace(module=Broken), checks=["oracle-forward"])
    assert not report.passed
    assert any(r.status == "failed" and "oracle" in r.check for r in report.results)


def test_the_guide_includes_the_file_and_says_to_copy_it():
    guide = GUIDE.read_text(encoding="utf-8")
    assert '```python title="examples/fifty_lines.py"\n' + FIFTY.read_text(encoding="utf-8") in guide
    assert re.search(r"[Cc]opy\s+`examples/fifty_lines.py`", guide)


# ------------------------------------------------------------------ zoo.nn / zoo.oracle


def test_multihead_base_names_and_checks():
    m = MultiHeadBase(query_dim=12, context_dim=10, heads=2, dim_head=4)
    assert sorted(k for k, _ in m.named_parameters()) == [
        "to_k.weight", "to_out.0.bias", "to_out.0.weight", "to_q.weight", "to_v.weight"]  # diffusers' names
    assert (m.heads, m.dim_head, m.query_dim, m.context_dim) == (2, 4, 12, 10)
    x, c = torch.randn(2, 3, 12), torch.randn(2, 5, 10)
    assert m.check_context(x, c, None) is c
    with pytest.raises(ValueError, match=r"context_dim=10 differs from query_dim=12"):
        m.check_context(x, None, None)
    with pytest.raises(ValueError, match=r"context must have last dimension 10"):
        m.check_context(x, torch.randn(2, 5, 9), None)
    with pytest.raises(ValueError, match="context_mask"):
        m.check_context(x, c, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"x must have last dimension 12"):
        m.check_x(torch.randn(2, 3, 11))


def test_naive_attention_gives_zero_for_rows_with_nothing_to_attend():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.tensor([[True, False, True, False], [False] * 4])
    out = naive_attention(q, k, v, mask)
    assert torch.equal(out[1], torch.zeros_like(out[1]))
    want = torch.softmax(q[0] @ k[0, :, [0, 2]].transpose(-1, -2) / 5 ** 0.5, -1) @ v[0, :, [0, 2]]
    torch.testing.assert_close(out[0], want)
    assert not torch.isnan(out).any()


def test_oracle_helpers_write_out_linear_and_heads():
    lin = torch.nn.Linear(6, 8)
    x = torch.randn(2, 3, 6)
    torch.testing.assert_close(linear(x, lin), lin(x))
    t = torch.randn(2, 3, 8)
    assert heads_view(t, 2).shape == (2, 2, 3, 4)
    torch.testing.assert_close(heads_merge(heads_view(t, 2)), t)
    torch.testing.assert_close(heads_view(t, 2), zoo.nn.split_heads(t, 2))


@pytest.mark.parametrize("path", [
    "examples/zoo-plugin-example/zoo_example_gated_cross.py",
    "tests/packages/zoo-demo-multiquery/zoo_demo_multiquery.py",
    "tests/harness_example_pkg/src/zoo_example_variant/__init__.py",
])
def test_out_of_tree_variants_use_the_toolkit_not_a_copy(path):
    """Validation and the masked-row rule come from zoo.nn / zoo.oracle, not re-implemented."""
    src = (ROOT / path).read_text(encoding="utf-8")
    assert "from zoo.oracle import" in src
    assert "masked_fill" not in src and "float(\"-inf\")" not in src  # the zero-row rule, copied
    assert "context is None but" not in src and "def _validate" not in src  # check_context, copied


def test_heads_view_refuses_a_head_count_that_does_not_divide():
    with pytest.raises(ValueError, match="heads=3 does not divide it"):
        heads_view(torch.randn(2, 3, 8), 3)

"""The `zoo` pytest plugin and zoo.testing.parametrize_with_checks: one test per check in
a plugin author's own suite, expected failures, slow checks gated, and the whole thing
working from a separately installed package."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch  # noqa: F401 - imported here so in-process pytester runs never re-import it

import attention_zoo_plugins.variants.cross  # noqa: F401 - likewise
import zoo.harness.checks  # noqa: F401 - likewise
from zoo.harness import CHECK_IDS

pytest_plugins = ["pytester"]

EXAMPLE_PKG = Path(__file__).parent / "harness_example_pkg"
N_CROSS = len(CHECK_IDS) + 1  # + law:matches-multihead-attention

# A plugin author's broken layer: cross whose dropout never acts.
BROKEN_DROPOUT = textwrap.dedent("""
    from attention_zoo_plugins.variants.cross import SPEC, CrossAttention

    class NoDropout(CrossAttention):
        def forward(self, x, context=None, *, context_mask=None):
            training = self.training
            self.to_out[1].eval()
            try:
                return super().forward(x, context, context_mask=context_mask)
            finally:
                self.to_out[1].train(training)

    BROKEN = SPEC.replace(module=NoDropout, plugin=None, distribution=None)
""")


def test_plugin_module_imports_without_torch():
    code = "import sys, zoo.pytest_plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_one_test_per_check(pytester):
    pytester.makepyfile(test_author="""
        from zoo.testing import parametrize_with_checks

        @parametrize_with_checks(["cross"])
        def test_zoo(variant, check):
            check(variant)
    """)
    result = pytester.runpytest("-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=N_CROSS)  # every default check applies to cross
    result.stdout.fnmatch_lines(["*test_zoo?cross-shape? PASSED*", "*test_zoo?cross-oracle-grad? PASSED*",
                                 "*test_zoo?cross-law:matches-multihead-attention? PASSED*"])


def test_failures_and_expected_failures(pytester):
    pytester.makepyfile(broken_spec=BROKEN_DROPOUT)
    pytester.makepyfile(test_author="""
        from zoo.testing import parametrize_with_checks
        from broken_spec import BROKEN

        @parametrize_with_checks([BROKEN], checks=["dropout", "shape"])
        def test_plain(variant, check):
            check(variant)

        @parametrize_with_checks([BROKEN], checks=["dropout", "shape"],
                                 expected_failures={"dropout": "dropout not wired yet"})
        def test_known(variant, check):
            check(variant)

        @parametrize_with_checks([BROKEN], checks=["shape"],
                                 expected_failures={("cross", "shape"): "wrongly expected"})
        def test_stale(variant, check):
            check(variant)
    """)
    result = pytester.runpytest("-rxXf", "-p", "no:cacheprovider")
    # plain: dropout fails with the harness's message, shape passes; known: dropout xfails;
    # stale: a strict xfail that passes fails the suite.
    result.assert_outcomes(passed=2, failed=2, xfailed=1)
    result.stdout.fnmatch_lines(["*[[]cross / dropout[]] *the dropout field has no effect*",
                                 "*XPASS(strict)*wrongly expected*"])
    assert result.ret == 1


def test_unknown_expected_failure_key_is_an_error(pytester):
    pytester.makepyfile(test_author="""
        from zoo.testing import parametrize_with_checks

        @parametrize_with_checks(["cross"], expected_failures={"masks": "typo"})
        def test_zoo(variant, check):
            check(variant)
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*ValueError: expected_failures names checks that are not generated*"])
    assert result.ret != 0


def test_skipped_checks_are_pytest_skips(pytester):
    pytester.makepyfile(test_author="""
        import zoo
        from attention_zoo_plugins.variants.cross import SPEC
        from zoo.testing import parametrize_with_checks

        NO_MASKS = SPEC.replace(capabilities=zoo.Capabilities(masks=False), laws=())

        @parametrize_with_checks([NO_MASKS], checks=["mask", "masked-rows", "shape"])
        def test_zoo(variant, check):
            check(variant)
    """)
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["*mask does not apply to cross: capabilities.masks is False*"])


def test_slow_checks_need_the_flag(pytester):
    pytester.makepyfile(test_author="""
        from zoo.testing import parametrize_with_checks

        @parametrize_with_checks(["cross"], checks=["compile", "ddp", "shape"])
        def test_zoo(variant, check):
            check(variant)
    """)
    env_slow = os.environ.pop("ZOO_RUN_SLOW", None)
    try:
        result = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    finally:
        if env_slow is not None:
            os.environ["ZOO_RUN_SLOW"] = env_slow
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["*slow zoo harness check: run with --zoo-slow*"])
    assert "--zoo-slow" in pytester.runpytest("--help").stdout.str()


def test_zoo_registry_fixture_is_empty_and_isolated(pytester):
    pytester.makepyfile(test_author="""
        import zoo
        from attention_zoo_plugins.variants.cross import SPEC

        def test_isolated(zoo_registry):
            assert zoo.list_variants() == []
            zoo.register(SPEC)
            assert zoo.list_variants() == ["cross"]
            assert zoo.check("cross", checks="shape").passed

        def test_default_untouched():
            assert "cross" in zoo.list_variants()
    """)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


@pytest.mark.slow  # pip installs / fresh processes: seconds each
def test_from_a_separately_installed_package(tmp_path):
    """A third-party package installed for real (wheel, dist-info, entry point): its
    author's suite gets one test per check, its variant found through the registry."""
    source = tmp_path / "pkg"  # build from a copy: never write build output into the repository
    shutil.copytree(EXAMPLE_PKG, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
           "--no-index", "--target", str(target), str(source)]
    subprocess.run(pip, check=True, capture_output=True, text=True, cwd=tmp_path)
    assert list(target.glob("zoo_example_variant-*.dist-info"))
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_example_dot.py").write_text(textwrap.dedent("""
        import zoo
        from zoo.testing import parametrize_with_checks

        def test_registered_through_its_entry_point():
            assert zoo.get_variant("example-dot").distribution == "zoo-example-variant"

        @parametrize_with_checks(["example-dot"], expected_failures={"oracle-forward": "demo"},
                                 dtypes=["float64"])
        def test_zoo(variant, check):
            if check.check_id == "oracle-forward":
                raise AssertionError("pretend the oracle disagrees")
            check(variant)
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]),
           "ZOO_LOAD_PLUGINS": "example-dot,cross"}
    env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", str(suite)],
                          capture_output=True, text=True, cwd=suite, env=env, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert re.search(r"^plugins: .*attention-zoo", out, re.M), out  # loaded through pytest11
    # every check but dropout (skipped) and oracle-forward (xfail), plus one test
    assert f"{len(CHECK_IDS) - 2 + 1} passed, 1 skipped, 1 xfailed" in out, out
    assert "test_zoo[example-dot-shape] PASSED" in out
    assert "test_zoo[example-dot-oracle-forward] XFAIL" in out
    assert "test_zoo[example-dot-dropout] SKIPPED" in out
    assert "test_registered_through_its_entry_point PASSED" in out

"""The shared harness (zoo/harness): every check is shown to fail on a layer broken
on purpose, a sound layer and every registered variant pass, and `zoo check` reports it."""

from __future__ import annotations

import json
import os
from typing import Literal

import pytest

import zoo
from attention_zoo_plugins.variants.cross import CrossConfig
from zoo.harness import CHECK_IDS, SLOW_CHECK_IDS, CheckReport, check, planned_checks, render_table
from zoo.harness.checks import CHECKS, DEFAULT_CHECK_IDS

from broken_layers import PLANTED, PLANTED_SLOW, SOUND, Sound, spec as broken_spec  # noqa: I001

slow = pytest.mark.skipif(os.environ.get("ZOO_RUN_SLOW", "") in ("", "0"),
                          reason="slow harness checks: set ZOO_RUN_SLOW=1")


# -- a sound layer passes, every planted bug is caught by its check -------------------


def test_sound_reimplementation_passes_every_check():
    report = check(SOUND)
    assert report.passed, report.table()
    assert [r.check for r in report.results] == [*CHECK_IDS, "law:matches-multihead-attention"]
    assert all(r.status == "passed" for r in report.results), report.table()


def test_no_harness_check_is_one_variants_property():
    """RETRO's chunk causality is RETRO's law (law:causality), not a harness check every
    variant is listed against."""
    from zoo.harness.ids import ALL_CHECK_IDS

    assert not [cid for cid in ALL_CHECK_IDS if "chunk" in cid]
    assert "causality" in {law.name for law in zoo.get_variant("retro").laws}


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_planted_bug_is_caught_by_its_check(bug):
    spec, check_id = PLANTED[bug]
    report = check(spec, checks=[check_id])
    result = report[check_id]
    assert result.status == "failed", f"{bug} was not caught by {check_id}: {result.message}"
    assert not report.passed
    assert result.message.startswith("example "), result.message  # names the example config
    assert "Traceback" not in result.message


def test_every_check_has_a_planted_bug():
    targeted = {cid for _, cid in PLANTED.values()} | {cid for _, cid in PLANTED_SLOW.values()}
    from zoo.harness.ids import ALL_CHECK_IDS

    missing = set(ALL_CHECK_IDS) - targeted
    assert not missing, f"checks without a layer broken on purpose: {sorted(missing)}"
    assert any(cid.startswith("law:") for cid in targeted)


@pytest.mark.parametrize("bug, fragment", [
    ("detached-parameter", "parameter 'to_k.weight'"),
    ("nan-on-masked-rows", "non-finite"),
    ("config-not-round-tripping", "'heads': (4, 8)"),
    ("no-input-validation", "ValueError"),
    ("ignored-mask", "mask is ignored"),
    ("state-not-in-state-dict", "not in the state dict"),
])
def test_failure_messages_tell_the_author_what_is_wrong(bug, fragment):
    spec, check_id = PLANTED[bug]
    assert fragment in check(spec, checks=[check_id])[check_id].message


def test_planted_bug_fails_the_whole_report_too():
    spec, check_id = PLANTED["missing-scale"]
    report = check(spec)
    assert not report.passed
    assert report[check_id].failed
    assert report["shape"].passed  # a wrong value is not a wrong shape
    assert "FAIL" in report.table() and f"cross / {check_id}:" in report.table()


@pytest.mark.slow
@pytest.mark.parametrize("name", zoo.list_variants())
def test_registered_variant_passes(name, harness_reports):
    report = harness_reports[name]  # one harness run per session, shared with catalog and docs
    assert report.passed, report.table()
    assert report.variant == name


# -- which checks run -------------------------------------------------------------------


def test_one_table_of_check_ids_drives_runs_labels_and_selection():
    """Each row of the table is a check that runs alone when selected by its id, and by
    default exactly when the row says so (opt-in and slow checks never by default)."""
    from zoo.harness import ids

    default = planned_checks(SOUND)
    for row in ids.CHECK_TABLE:
        assert planned_checks(SOUND, checks=[row.id], slow=row.slow) == [row.id], row.id
        assert (row.id in default) == (row.default and not row.slow), row.id
        assert row.id in CHECKS and ids.SHORT_NAMES[row.id]
    assert len(set(ids.SHORT_NAMES.values())) == len(ids.SHORT_NAMES)  # table columns are unambiguous


def test_capabilities_skip_checks_with_a_reason():
    caps = zoo.Capabilities(masks=False, dropout=False, query_order_equivariant=False,
                            context_order_invariant=False)
    report = check(SOUND.replace(capabilities=caps, laws=()))
    assert report.passed, report.table()
    for cid in ("mask", "masked-rows", "dropout", "query-order", "context-order"):
        assert report[cid].status == "skipped", cid
        assert "capabilities." in report[cid].message
    assert report["oracle-forward"].passed


def test_no_reference_skips_the_oracle_checks():
    report = check(SOUND.replace(reference=None, laws=()), checks="oracle-*")
    assert [r.status for r in report.results] == ["skipped", "skipped"]
    assert "no reference" in report.results[0].message


def test_selection_by_id_and_pattern():
    assert planned_checks(SOUND, checks="oracle-*,mask") == ["oracle-forward", "oracle-grad", "mask"]
    assert planned_checks(SOUND, checks=["law:*"]) == ["law:matches-multihead-attention"]
    assert planned_checks(SOUND, slow=True)[-4:] == ["compile", "ddp", "fsdp", "law:matches-multihead-attention"]
    assert "compile" not in planned_checks(SOUND)


@pytest.mark.parametrize("options, fragment", [
    ({"checks": ["oracle-forwrd"]}, "did you mean 'oracle-forward'"),
    ({"checks": "bogus"}, "unknown check 'bogus'"),
    ({"dtypes": ["float16"]}, "unsupported dtype 'float16'"),
    ({"dtypes": []}, "dtypes is empty"),
])
def test_bad_options_raise_value_error(options, fragment):
    with pytest.raises(ValueError, match=fragment):
        check(SOUND, **options)


def test_unknown_name_raises_unknown_variant_error():
    with pytest.raises(zoo.UnknownVariantError):
        check("no-such-variant")


def test_dtypes_option_limits_the_oracle_dtypes():
    report = check(SOUND, checks=["oracle-forward"], dtypes="float64")
    assert report["oracle-forward"].message.endswith("float64")


# -- the spec is checked as given, never looked up again -------------------------------


class _UnregisteredConfig(CrossConfig):
    variant: Literal["unregistered-cross"] = "unregistered-cross"


def test_unregistered_spec_is_checked_as_given(registry):
    spec = SOUND.replace(name="unregistered-cross", aliases=(), config=_UnregisteredConfig, laws=())
    report = zoo.check(spec)
    assert report.passed, report.table()
    assert "unregistered-cross" not in zoo.list_variants()
    assert report["config-roundtrip"].passed


def test_given_spec_wins_over_a_registered_one_of_the_same_name(registry):
    registry.register(SOUND)
    broken, check_id = PLANTED["ignored-mask"]
    assert zoo.check("cross", checks=[check_id]).passed
    assert not zoo.check(broken, checks=[check_id]).passed


# -- robustness: crashes and laws -----------------------------------------------------------


def _boom(module, **kwargs):
    raise RuntimeError("make_inputs exploded")


def test_a_crash_in_the_spec_is_a_failure_not_an_exception():
    report = check(SOUND.replace(make_inputs=_boom, laws=()))
    assert not report.passed
    assert all(r.failed for r in report.results)
    assert "make_inputs exploded" in report["shape"].message
    assert "RuntimeError" in report["shape"].message


def _law_raises_type_error(spec, fields, generator):
    raise TypeError("law crashed")


def test_a_crashing_law_fails_its_check():
    spec = SOUND.replace(laws=(zoo.Law("crashes", "crashes", _law_raises_type_error),))
    result = check(spec, checks=["law:*"])["law:crashes"]
    assert result.failed and "TypeError: law crashed" in result.message


def test_laws_receive_the_example_fields_and_a_generator():
    seen = []

    def law(spec, fields, generator):
        seen.append((spec.name, dict(fields), type(generator).__name__))

    spec = SOUND.replace(laws=(zoo.Law("records", "records its arguments", law),))
    assert check(spec, checks="law:records").passed
    assert seen == [("cross", f, "Generator") for f in SOUND.example_configs()]


# -- reports ---------------------------------------------------------------------------------


def test_report_to_dict_is_json_and_complete():
    report = check(SOUND, checks="shape,mask")
    data = json.loads(json.dumps(report.to_dict()))
    assert data["variant"] == "cross" and data["passed"] is True
    assert [r["check"] for r in data["results"]] == ["shape", "mask"]
    assert set(data["results"][0]) == {"check", "status", "message", "variant", "seconds"}
    assert data["counts"] == {"passed": 2, "failed": 0, "skipped": 0}


def test_table_lists_checks_and_failures():
    good = check(SOUND, checks="mask,dropout")
    bad = check(PLANTED["ignored-mask"][0], checks="mask,dropout")
    text = render_table([good, bad])
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["variant", "mask", "drop"]
    assert lines[2].split()[:3] == ["cross", "ok", "ok"]
    assert lines[3].split()[:3] == ["cross", "FAIL", "ok"]
    assert "cross / mask:" in text and "1 check(s) failed in 1 of 2 variant(s)" in text
    assert isinstance(good, CheckReport) and bool(good) and not bool(bad)


# -- zoo check -----------------------------------------------------------------------------


def test_cli_check_passes_and_prints_the_table(cross_registry, capsys):
    from zoo.cli import main

    assert main(["check", "cross"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0].split()[:3] == ["variant", "shape", "fwd"]
    assert "all 1 variant(s) passed" in out
    assert "checked cross: passed" in err  # plain progress lines when stderr is no tty


def test_cli_check_all_fails_on_a_broken_variant(registry, capsys, tmp_path):
    from zoo.cli import main

    registry.register(PLANTED["ignored-mask"][0])
    path = tmp_path / "report.json"
    assert main(["check", "--all", "-k", "mask,shape", "--json", str(path), "-q"]) == 1
    out, err = capsys.readouterr()
    assert "cross / mask:" in out and "FAIL" in out and err == ""
    data = json.loads(path.read_text())
    assert data["passed"] is False
    assert [r["status"] for r in data["reports"][0]["results"]] == ["passed", "failed"]


def test_cli_unknown_name_exits_2(cross_registry, capsys):
    from zoo.cli import main

    assert main(["check", "crosss"]) == 2
    assert "cross" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["check", "cross", "-k", "nope"], ["check"], ["check", "cross", "--all"],
                                  ["check", "cross", "--dtype", "int8"]])
def test_cli_bad_usage_exits_2(cross_registry, argv, capsys):
    from zoo.cli import main

    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("zoo check:")


def test_cli_list_checks(capsys):
    from zoo.cli import main

    assert main(["check", "--list-checks"]) == 0
    out = capsys.readouterr().out
    for cid in (*CHECK_IDS, *SLOW_CHECK_IDS, "law:<name>"):
        assert cid in out


# -- slow checks (ZOO_RUN_SLOW=1) ---------------------------------------------------------


@slow
@pytest.mark.slow
def test_slow_checks_pass_on_a_sound_layer():
    report = check(SOUND, checks=["compile", "ddp"], examples=SOUND.example_configs()[:1])
    assert report.passed, report.table()


@slow
@pytest.mark.slow
@pytest.mark.parametrize("bug", sorted(PLANTED_SLOW))
def test_slow_planted_bug_is_caught(bug):
    spec, check_id = PLANTED_SLOW[bug]
    result = check(spec, checks=[check_id], examples=spec.example_configs()[:1])[check_id]
    assert result.failed, result.message


def test_broken_specs_are_judged_by_an_oracle_that_tells_sound_from_broken():
    """The planted bugs are caught by comparing with cross's oracle: on the same weights it
    agrees with the sound layer and disagrees with a broken one (so a bug is never its own
    reference)."""
    import torch

    from broken_layers import BrokenNoScale

    torch.manual_seed(0)
    fields = {"query_dim": 16, "context_dim": 12, "heads": 2, "dim_head": 4}
    sound = zoo.create(SOUND, **fields).double().eval()
    broken = zoo.create(broken_spec(BrokenNoScale), **fields).double().eval()
    broken.load_state_dict(sound.state_dict())
    x, c = torch.randn(2, 5, 16, dtype=torch.float64), torch.randn(2, 3, 12, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(sound(x, c), SOUND.reference(sound, x, c), atol=1e-12)
        assert not torch.allclose(broken(x, c), broken_spec(BrokenNoScale).reference(broken, x, c), atol=1e-3)


def test_progress_is_a_live_line_on_a_terminal():
    import io

    from zoo.harness.cli import _Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    progress = _Progress(2, stream=stream)
    report = check(SOUND, checks="shape,mask", progress=progress)
    progress.variant_done(report)
    text = stream.getvalue()
    assert "\r\033[K[1/2] cross: shape ..." in text and "[1/2] cross: mask ..." in text
    assert text.endswith("\r\033[K")  # the line is cleared before the table prints
    assert "\n" not in text


def test_progress_callback_sees_every_check_before_and_after():
    seen = []
    check(SOUND, checks="shape,law:*", progress=lambda v, c, r: seen.append((v, c, r and r.status)))
    assert seen == [("cross", "shape", None), ("cross", "shape", "passed"),
                    ("cross", "law:matches-multihead-attention", None),
                    ("cross", "law:matches-multihead-attention", "passed")]


def test_cli_verbose_lists_every_result(cross_registry, capsys):
    from zoo.cli import main

    assert main(["check", "cross", "-k", "dropout,shape", "-v", "-q"]) == 0
    out = capsys.readouterr().out
    assert "cross / dropout: passed" in out and "cross / shape: passed" in out


def test_spec_tolerances_override_the_defaults():
    spec, check_id = PLANTED["missing-scale"]
    loose = spec.replace(tolerances={"float32": (100.0, 0.0), "float64": (100.0, 0.0), "bfloat16": (100.0, 0.0)})
    assert check(loose, checks=[check_id]).passed
    tight_bf16_only = SOUND.replace(tolerances={"bfloat16": (0.0, 0.0)})
    result = check(tight_bf16_only, checks=[check_id])[check_id]
    assert result.failed and "bfloat16 forward" in result.message


def test_harness_leaves_the_global_rng_alone_and_is_deterministic():
    import torch

    state = torch.get_rng_state()
    first = check(SOUND).to_dict()
    assert torch.equal(torch.get_rng_state(), state)
    second = check(SOUND).to_dict()
    strip = lambda d: [(r["check"], r["status"], r["message"]) for r in d["results"]]  # noqa: E731
    assert strip(first) == strip(second)


def test_cli_json_to_stdout_keeps_stdout_pure(cross_registry, capsys):
    from zoo.cli import main

    assert main(["check", "cross", "-k", "shape", "--json", "-", "-q"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)["reports"][0]
    assert report["variant"] == "cross"
    assert report["source"] == "plugin 'cross' (attention-zoo)"  # the registry's record, not a copy's
    assert "variant" in err.splitlines()[0]


def test_check_reports_the_plugin_and_distribution_that_registered_the_variant(cross_registry, capsys):
    """``zoo check --json`` names the real source, though the harness checks a copy of the spec
    (its capabilities resolved): provenance is the registry's, by name, not a field of a copy."""
    from zoo.cli import main

    assert main(["check", "cross", "-k", "shape", "--json", "-", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["reports"][0]["source"] == "plugin 'cross' (attention-zoo)"
    assert check("cross", checks="shape").source == "plugin 'cross' (attention-zoo)"
    unregistered = zoo.get_variant("cross").replace(name="cross-unregistered")
    assert check(unregistered, checks="shape").source == "in-process registration (zoo.register)"


# -- non-finite values and laws that cannot be optimised away --------------------------------


def test_an_all_nan_output_passes_no_check_that_reads_an_output():
    from broken_layers import BrokenAllNaN

    report = check(broken_spec(BrokenAllNaN))
    ran = [r for r in report.results if not r.skipped]
    passed = [r.check for r in ran if r.passed]
    assert passed == ["bad-input"], report.table()  # the only check that never reads an output
    for cid in ("context-order", "query-order", "batch-independence", "mask", "shape"):
        assert "non-finite" in report[cid].message or "NaN" in report[cid].message, report[cid].message


def test_order_checks_fail_on_nan_even_without_the_forward_guard(monkeypatch):
    """context-order and query-order compare two outputs: a NaN difference must fail them by
    itself, not only through the harness's finite-output guard in _run."""
    import zoo.harness.case as case_mod
    import zoo.harness.symmetry as symmetry
    from broken_layers import BrokenAllNaN

    real = case_mod._run
    monkeypatch.setattr(symmetry, "_run", lambda m, i, what="forward", **kw: real(m, i, what, finite=False))
    report = check(broken_spec(BrokenAllNaN), checks="context-order,query-order,batch-independence")
    assert [r.status for r in report.results] == ["failed"] * 3, report.table()


def test_nonfinite_input_check_reports_clearly():
    spec_, check_id = PLANTED["nan-swallowed"]
    message = check(spec_, checks=[check_id])[check_id].message
    assert "nan in x[0] with no mask" in message and "finite output for batch element 0" in message


LAW_UNDER_O = """
import sys
sys.path.insert(0, {tests!r})
import zoo
from zoo.testing import expect
from broken_layers import SOUND

def false_law(spec, fields, generator):
    err = float("nan")
    expect(err < 1e-10, f"differs by {{err}}")

spec = SOUND.replace(laws=(zoo.Law("false", "never holds", false_law),))
result = zoo.check(spec, checks="law:*", examples=SOUND.example_configs()[:1])["law:false"]
print(sys.flags.optimize, result.status, result.message)
"""


@pytest.mark.slow  # subprocesses (a fresh torch import each)
def test_a_law_written_with_expect_still_fails_under_python_O():
    import subprocess
    import sys
    from pathlib import Path

    code = LAW_UNDER_O.format(tests=str(Path(__file__).parent))
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:2] == ["1", "failed"], out.stdout
    assert "differs by nan" in out.stdout


def test_each_check_is_declared_once_with_its_function():
    """One table, filled by one decorator per check: a second declaration of an id (or a
    column label) is refused, and every id runs the function declared with it."""
    from zoo.harness.table import TABLE, harness_check

    assert all(callable(c.func) for c in TABLE.values())
    assert CHECKS["shape"].func.__name__ == "check_shape" and CHECKS["mask"].applies.__name__ == "_needs_masks"
    with pytest.raises(ValueError, match="declared twice"):
        harness_check("shape", "other-label", "again")(lambda case: "ok")
    with pytest.raises(ValueError, match="already another check's column"):
        harness_check("a-new-check", "fwd", "same column as oracle-forward")(lambda case: "ok")
    assert "a-new-check" not in TABLE

"""The command line (zoo/cli.py)."""

from __future__ import annotations

import json

import pytest

from zoo.cli import main


def test_list_shows_variants(cross_registry, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["variant", "plugin", "summary"]
    assert "cross" in out and "multi-head cross-attention" in out


def test_list_pattern(cross_registry, capsys):
    assert main(["list", "cr*"]) == 0
    assert "cross" in capsys.readouterr().out
    assert main(["list", "zz*"]) == 1
    assert "no registered variant matches 'zz*'" in capsys.readouterr().err


def test_show_lists_config_fields_paper_and_source(cross_registry, capsys):
    assert main(["show", "cross-attention"]) == 0
    out = capsys.readouterr().out
    for expected in ("Vaswani", "plugin 'cross' (attention-zoo)", "query_dim", "int | None", "Number of attention heads", "matches-multihead-attention"):
        assert expected in out, expected


def test_schema_is_json_schema(cross_registry, capsys):
    assert main(["schema", "cross"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["additionalProperties"] is False
    assert schema["properties"]["heads"]["description"] == "Number of attention heads (h)."


@pytest.mark.parametrize("command", ["show", "schema"])
def test_unknown_name_exits_2_with_suggestion(cross_registry, capsys, command):
    assert main([command, "crosss"]) == 2
    err = capsys.readouterr().err
    assert "unknown attention variant 'crosss'" in err and "did you mean 'cross'" in err


def test_plugins_lists_loaded_and_failed(cross_registry, capsys):
    class Broken:
        @__import__("zoo").hookimpl
        def zoo_register_variants(self, register):
            raise RuntimeError("nope")

    cross_registry.load_plugin(Broken(), name="broken", distribution="broken-dist", version="0.1")
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "cross" in out and "loaded" in out
    assert "broken-dist" in out and "failed" in out and "nope" in out
    assert main(["plugins", "--strict"]) == 1


@pytest.mark.slow  # pip installs / fresh processes: seconds each
def test_python_dash_m_zoo_and_unknown_exit_code(zoo_cli):
    ok = zoo_cli("list")
    assert ok.returncode == 0 and "cross" in ok.stdout
    bad = zoo_cli("show", "selfdok")
    assert bad.returncode == 2 and "did you mean" in bad.stderr


# -- usage errors: exit 2, one line, no traceback, before any work (issue 17) ------------


def _one_line_usage_error(result, *needles):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["bench", "cross", "--shapes", "foo"], ["--shapes", "'foo'"]),
        (["bench", "cross", "--repeat", "0"], ["--repeat", "at least 1"]),
        (["bench", "cross", "--threads", "0"], ["--threads", "at least 1"]),
        (["bench", "cross", "--json", "/nonexistent/dir/x.json"], ["--json", "does not exist"]),
        (["check", "cross", "--device", "bogus"], ["--device", "'bogus'", "not a device"]),
        (["check", "cross", "--device", "meta"], ["--device", "meta"]),
        (["check", "cross", "--json", "/nonexistent/dir/x.json"], ["--json", "does not exist"]),
        (["check", "cross", "--no-such-flag"], ["unrecognized arguments"]),
    ],
)
def test_usage_errors_exit_2_with_one_line(cross_registry, capsys, monkeypatch, argv, needles):
    import zoo.bench.runner
    import zoo.harness

    def no_work(*args, **kwargs):
        raise AssertionError("the work started before the arguments were checked")

    monkeypatch.setattr(zoo.bench.runner, "main", no_work)
    monkeypatch.setattr(zoo.harness, "check", no_work)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    captured = capsys.readouterr()

    class Result:
        returncode, stdout, stderr = code, captured.out, captured.err

    _one_line_usage_error(Result, *needles)


def test_check_on_cuda_without_cuda_is_one_line(cross_registry, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["check", "cross", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CUDA is not available" in err[0]


def test_list_pattern_matches_substrings(cross_registry, capsys):
    assert main(["list", "ros"]) == 0
    assert "cross" in capsys.readouterr().out
    assert main(["list", "c?oss"]) == 0  # a glob still works as one
    assert "cross" in capsys.readouterr().out
    assert main(["list", "ross*"]) == 1  # ... and anchors as a glob does


def test_suggestions_prefer_canonical_names():
    from zoo.errors import UnknownVariantError

    # 'crossss' (an alias) is closer to 'crosss' than 'cross' by similarity alone
    err = UnknownVariantError("crosss", ["cross", "crossss", "film"], canonical=["cross", "film"])
    assert err.suggestions[0] == "cross" and "crossss" in err.suggestions


def test_unknown_plugin_in_zoo_load_plugins_is_explained(zoo_cli):
    result = zoo_cli("list", env={"ZOO_LOAD_PLUGINS": "crss"})
    assert "ZOO_LOAD_PLUGINS" in result.stderr and "'crss'" in result.stderr
    assert "matches no installed plugin" in result.stderr and "cross (attention-zoo)" in result.stderr
    assert "Traceback" not in result.stderr
    assert "no variant is registered" in result.stderr and "'*'" not in result.stderr  # no pattern was given


def test_the_plugins_footer_never_reports_a_torch_import_it_did_not_time(zoo_cli):
    footer = zoo_cli("plugins").stdout.strip().splitlines()[-1]
    assert "import times exclude torch" in footer
    assert ": 0 ms" not in footer and " 0 ms," not in footer


# -- output channels and encodings (issue 16) -------------------------------------------


def _printing_plugin(site):
    """A plugin distribution (dist-info + module) that prints when imported and when run."""
    dist = site / "zoo_printer-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-printer\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[zoo]\nprinter = zoo_printer\n")
    (site / "zoo_printer.py").write_text(
        "print('hello from import')\n"
        "import zoo\n"
        "@zoo.hookimpl\n"
        "def zoo_register_variants(register):\n"
        "    print('hello from the hook')\n"
    )


def test_json_to_stdout_survives_a_plugin_that_prints(zoo_cli, tmp_path):
    _printing_plugin(tmp_path)
    result = zoo_cli("check", "cross", "-k", "shape", "--dtype", "float32", "-q", "--json", "-", site=tmp_path)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)  # nothing but the JSON on stdout
    assert payload["passed"] is True
    assert "hello from import" in result.stderr  # printed while the parser was built (plugins load)


def test_show_under_an_ascii_terminal(zoo_cli):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}
    env["PYTHONIOENCODING"] = "ascii"
    result = subprocess.run([sys.executable, "-m", "zoo", "show", "cross"], capture_output=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr.decode("ascii", "replace")
    assert b"query_dim" in result.stdout


def test_ctrl_c_is_one_line_and_exit_130(cross_registry, capsys, monkeypatch):
    """Whatever command is running, an interrupt ends it with one line and the status a
    shell gives SIGINT, no traceback."""
    import zoo.harness

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(zoo.harness, "check", interrupted)
    assert main(["check", "cross"]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "zoo: interrupted" and "Traceback" not in err


@pytest.mark.slow
def test_a_real_sigint_during_a_command(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "zoo", "compare", "cross", "--quick", "--task", "recall",
                             "--json", str(tmp_path / "out.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "ZOO_LOAD_PLUGINS": "cross,tasks"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # wait until training has begun
        line = proc.stderr.readline()
        if "cross" in line:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, err[-2000:])
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "zoo: interrupted"
    assert not (tmp_path / "out.json").exists()  # nothing half-written


def test_builtin_commands_come_through_the_commands_hook(cross_registry):
    """check, bench and compare are the zoo's own plugin's zoo_register_commands, the
    hook every plugin uses, with one convention (add_arguments + run): without that
    plugin they are gone, and a plugin's command is added the same way, after them."""
    import argparse

    import zoo.commands
    from zoo.cli import build_parser
    from zoo.loader import CORE_PLUGIN

    def choices(parser):
        return list(next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices)

    assert [c for c in choices(build_parser()) if c in ("check", "bench", "compare")] == ["check", "bench", "compare"]
    assert cross_registry.pm.get_plugin(CORE_PLUGIN) is zoo.commands

    class Extra:
        @zoo.hookimpl
        def zoo_register_commands(self, subparsers):
            zoo.commands.add_command(subparsers, "extra", "a plugin's command", zoo.commands.importlib.import_module(
                "zoo.compare.cli"))

    cross_registry.load_plugin(Extra(), name="extra")
    assert choices(build_parser())[-1] == "extra"
    cross_registry.pm.unregister(name=CORE_PLUGIN)
    cross_registry.pm.register(object(), name=CORE_PLUGIN)  # a core plugin with no commands
    assert not {"check", "bench", "compare"} & set(choices(build_parser()))

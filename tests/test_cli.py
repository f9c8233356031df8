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


def test_python_dash_m_zoo_and_unknown_exit_code(zoo_cli):
    ok = zoo_cli("list")
    assert ok.returncode == 0 and "cross" in ok.stdout
    bad = zoo_cli("show", "selfdok")
    assert bad.returncode == 2 and "did you mean" in bad.stderr

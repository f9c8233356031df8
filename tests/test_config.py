"""Configs chosen by name: zoo.create, zoo.load_config, zoo.AttentionConfig (zoo/config.py)."""

from __future__ import annotations

import json
import sys
from typing import Literal

import pydantic
import pytest
import torch

import zoo

from attention_zoo_plugins import cross


def test_create_by_name_mapping_and_instance(cross_registry):
    a = zoo.create("cross", query_dim=16, heads=2, dim_head=8)
    b = zoo.create({"variant": "cross", "query_dim": 16, "heads": 2, "dim_head": 8})
    c = zoo.create(a.config)
    for m in (a, b, c):
        assert isinstance(m, cross.CrossAttention)
        assert m.config == a.config
    d = zoo.create(a.config, heads=4)  # overrides win
    assert d.config.heads == 4 and a.config.heads == 2
    e = zoo.create("cross-attention", query_dim=16)  # alias -> canonical name in the config
    assert e.config.variant == "cross"


def test_module_config_round_trips_state_dict(cross_registry):
    m = zoo.create("cross", query_dim=12, context_dim=20, heads=3, dim_head=4, bias=True)
    twin = zoo.create(m.config)
    twin.load_state_dict(m.state_dict(), strict=True)
    x, ctx = torch.randn(2, 5, 12), torch.randn(2, 6, 20)
    torch.testing.assert_close(twin(x, ctx), m(x, ctx))
    # and through JSON, as a config file would carry it
    again = zoo.create(json.loads(m.config.model_dump_json()))
    again.load_state_dict(m.state_dict(), strict=True)


def test_unknown_field_suggests_closest(cross_registry):
    with pytest.raises(ValueError, match=r"unknown field 'head'.*did you mean 'heads'\?"):
        zoo.create("cross", query_dim=8, head=2)


def test_field_values_validated(cross_registry):
    with pytest.raises(ValueError, match="heads"):
        zoo.create("cross", query_dim=8, heads=0)
    with pytest.raises(ValueError, match="dropout"):
        zoo.create("cross", query_dim=8, dropout=1.5)


def test_config_needs_registered_variant_and_never_imports(cross_registry, tmp_path, monkeypatch):
    sentinel = tmp_path / "zoo_sentinel_module.py"
    sentinel.write_text("raise SystemExit('imported!')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("zoo_sentinel_module", "zoo_sentinel_module.Layer", "os.system", "torch.nn.Linear"):
        with pytest.raises(zoo.UnknownVariantError):
            zoo.create({"variant": name, "query_dim": 8})
    assert "zoo_sentinel_module" not in sys.modules
    with pytest.raises(ValueError, match="'variant' key"):
        zoo.create({"query_dim": 8})


@pytest.mark.parametrize(
    "suffix, text",
    [
        (".yaml", "variant: cross\nquery_dim: 16\nheads: 2\ndim_head: 4\n"),
        (".yml", "variant: cross-attention\nquery_dim: 16\nheads: 2\ndim_head: 4\n"),
        (".json", '{"variant": "cross", "query_dim": 16, "heads": 2, "dim_head": 4}'),
        (".toml", 'variant = "cross"\nquery_dim = 16\nheads = 2\ndim_head = 4\n'),
    ],
)
def test_load_config_formats_build_working_layer(cross_registry, tmp_path, suffix, text):
    path = tmp_path / f"attn{suffix}"
    path.write_text(text)
    cfg = zoo.load_config(path)
    assert cfg.variant == "cross" and cfg.heads == 2
    layer = zoo.create(cfg)
    assert layer(torch.randn(2, 3, 16), torch.randn(2, 4, 16)).shape == (2, 3, 16)


@pytest.mark.parametrize(
    "suffix, text, line",
    [
        (".yaml", "variant: cross\nquery_dim: [16\nheads: 2\n", ":3"),
        (".json", '{"variant": "cross",\n "query_dim": 16,,\n}', ":2"),
        (".toml", 'variant = "cross"\nquery_dim = = 16\n', "line 2"),
    ],
)
def test_malformed_files_name_file_and_line(cross_registry, tmp_path, suffix, text, line):
    path = tmp_path / f"bad{suffix}"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        zoo.load_config(path)
    assert str(path) in str(info.value) and line in str(info.value)


def test_yaml_cannot_execute_code(cross_registry, tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("variant: !!python/object/apply:os.system ['echo pwned > %s']\n" % (tmp_path / "pwned"))
    with pytest.raises(ValueError, match="evil.yaml"):
        zoo.load_config(path)
    assert not (tmp_path / "pwned").exists()


def test_load_config_rejects_unsupported_and_non_mapping(cross_registry, tmp_path):
    (tmp_path / "a.ini").write_text("[x]\n")
    with pytest.raises(ValueError, match="unsupported config format"):
        zoo.load_config(tmp_path / "a.ini")
    (tmp_path / "b.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        zoo.load_config(tmp_path / "b.yaml")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        zoo.load_config(tmp_path / "missing.yaml")


class ModelConfig(pydantic.BaseModel):
    width: int
    attention: zoo.AttentionConfig


def test_attention_config_field_in_user_model(cross_registry):
    cfg = ModelConfig(width=16, attention={"variant": "cross", "query_dim": 16, "heads": 2})
    assert isinstance(cfg.attention, cross.CrossConfig) and cfg.attention.heads == 2
    dumped = cfg.model_dump()
    assert dumped["attention"]["variant"] == "cross" and dumped["attention"]["heads"] == 2
    again = ModelConfig.model_validate_json(cfg.model_dump_json())
    assert again == cfg
    layer = zoo.create(again.attention)
    assert layer(torch.randn(1, 2, 16)).shape == (1, 2, 16)


def test_attention_config_errors_name_the_problem(cross_registry):
    with pytest.raises(pydantic.ValidationError, match="did you mean 'heads'"):
        ModelConfig(width=1, attention={"variant": "cross", "query_dim": 16, "head": 2})
    with pytest.raises(zoo.UnknownVariantError):
        ModelConfig(width=1, attention={"variant": "crosss"})


def test_attention_config_accepts_variants_registered_later(cross_registry):
    class LateConfig(zoo.VariantConfig):
        variant: Literal["late"] = "late"
        query_dim: int = 8

    with pytest.raises(zoo.UnknownVariantError):
        ModelConfig(width=1, attention={"variant": "late"})
    zoo.register(zoo.VariantSpec(name="late", module=cross.CrossAttention, config=LateConfig, summary="late"))
    cfg = ModelConfig(width=1, attention={"variant": "late", "query_dim": 4})
    assert isinstance(cfg.attention, LateConfig)
    schema = ModelConfig.model_json_schema()
    assert "late" in json.dumps(schema) and "cross" in json.dumps(schema)

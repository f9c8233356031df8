"""Configs chosen by name: zoo.create, zoo.load_config, zoo.AttentionConfig (zoo/config.py)."""

from __future__ import annotations

import json
import sys
from typing import Literal

import pydantic
import numpy as np
import pytest
import torch

import zoo
import zoo.config

from attention_zoo_plugins.variants import cross


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
    assert again.config == m.config
    again.load_state_dict(m.state_dict(), strict=True)
    torch.testing.assert_close(again(x, ctx), m(x, ctx))


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
    with pytest.raises(pydantic.ValidationError, match="did you mean 'cross'"):  # CONTRACT: not a LookupError
        ModelConfig(width=1, attention={"variant": "crosss"})


def test_attention_config_accepts_variants_registered_later(cross_registry):
    class LateConfig(zoo.VariantConfig):
        variant: Literal["late"] = "late"
        query_dim: int = 8

    with pytest.raises(pydantic.ValidationError, match="unknown attention variant 'late'"):
        ModelConfig(width=1, attention={"variant": "late"})
    zoo.register(zoo.VariantSpec(name="late", module=cross.CrossAttention, config=LateConfig, summary="late"))
    cfg = ModelConfig(width=1, attention={"variant": "late", "query_dim": 4})
    assert isinstance(cfg.attention, LateConfig)
    schema = ModelConfig.model_json_schema()
    assert "late" in json.dumps(schema) and "cross" in json.dumps(schema)


# -- issue 16: config files validated before use, bounded, never expanded -------------------

ALIAS_BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "variant: cross\n"
)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bomb.yaml", ALIAS_BOMB.encode(), "YAML aliases"),
        ("alias.yaml", b"variant: cross\nquery_dim: &w 8\ncontext_dim: *w\n", "YAML aliases"),
        ("latin1.yaml", b"variant: cross\n# caf\xe9\n", "not UTF-8"),
        ("deep.json", b"[" * 5000 + b"]" * 5000, "nested"),
        # PyYAML's own depth limit may fire before the zoo's (its wording is PyYAML's): the
        # guarantee is a short ValueError naming the file; the zoo's limit is nested.yaml's
        ("deep.yaml", b"[" * 5000 + b"]" * 5000, r"deep\.yaml.*(nested|invalid YAML)"),
        ("deep.toml", b"a = " + b"[" * 5000 + b"]" * 5000, "nested"),
        ("nested.yaml", b"variant: cross\nquery_dim: " + b"[" * 40 + b"]" * 40 + b"\n", "nested more than"),
        ("huge.yaml", b"variant: cross\n" + b"# padding\n" * 8000, "larger than 64 KiB"),
        ("unknown.yaml", b"variant: crosss\n", "unknown attention variant 'crosss'"),
        ("strwidth.json", b'{"variant": "cross", "query_dim": "8"}', "query_dim.*must be an integer"),
        ("boolwidth.yaml", b"variant: cross\nquery_dim: true\n", "query_dim.*must be an integer"),
        ("bigint.json", b'{"variant": "cross", "query_dim": 1' + b"0" * 5000 + b"}", "cannot be parsed"),
        ("bigint.yaml", b"variant: cross\nquery_dim: 1" + b"0" * 5000 + b"\n", "bigint.yaml"),
        ("twice.json", b'{"variant": "cross", "query_dim": 8, "query_dim": 16}', "'query_dim' appears twice"),
        ("twice.yaml", b"variant: cross\nquery_dim: 8\nquery_dim: 16\n", r"twice.yaml:3: the key 'query_dim' appears twice"),
    ],
)
def test_bad_config_files_are_value_errors_naming_the_file(cross_registry, tmp_path, name, content, message):
    import time

    path = tmp_path / name
    path.write_bytes(content)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message) as info:
        zoo.load_config(path)
    assert str(path) in str(info.value)
    assert len(str(info.value)) < 2000
    assert time.perf_counter() - start < 30  # generous: the alias bomb used to take minutes


def test_unknown_variant_in_a_file_is_also_a_lookup_error(cross_registry, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("variant: crosss\n")
    with pytest.raises(zoo.UnknownVariantError) as info:
        zoo.load_config(path)
    assert info.value.suggestions[0] == "cross" and str(path) in str(info.value)
    # its public name: a LookupError and a ValueError, importable where the zoo's errors are
    assert type(info.value) is zoo.UnknownVariantInFileError is zoo.errors.UnknownVariantInFileError
    assert isinstance(info.value, ValueError) and info.value.path == path
    assert not type(info.value).__name__.startswith("_")


def test_load_config_on_a_directory(cross_registry, tmp_path):
    folder = tmp_path / "conf.yaml"
    folder.mkdir()
    with pytest.raises(ValueError, match="conf.yaml: is a directory"):
        zoo.load_config(folder)


def test_numbers_load_as_written_but_bools_and_strings_are_refused(cross_registry, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("variant: cross\nquery_dim: 16\ndim_head: 8.0\ndropout: 0\n")
    cfg = zoo.load_config(path)
    assert (cfg.query_dim, cfg.dim_head, cfg.dropout) == (16, 8, 0.0)
    with pytest.raises(ValueError, match="query_dim.*bool"):
        zoo.create("cross", query_dim=True)
    with pytest.raises(ValueError, match="dropout.*str"):
        zoo.create("cross", query_dim=8, dropout="0.1")
    with pytest.raises(ValueError, match="context_dim.*bool"):
        zoo.create("cross", query_dim=8, context_dim=False)


def test_long_values_are_cut_short_in_messages(cross_registry):
    with pytest.raises(ValueError) as info:
        zoo.create("cross", query_dim="9" * 100_000)
    assert len(str(info.value)) < 2000


def test_layer_config_is_frozen(cross_registry):
    layer = zoo.create("cross", query_dim=16, heads=2, dim_head=4)
    with pytest.raises(AttributeError, match="config is frozen"):
        layer.config = layer.config.model_copy(update={"heads": 4})
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        layer.config.heads = 4
    assert layer.config.heads == 2
    layer.config = layer.config  # the same config again is a no-op
    twin = zoo.create(layer.config.model_copy(update={"dropout": 0.1}))  # the documented way
    assert twin.config.dropout == 0.1 and layer.config.dropout == 0.0


def test_frozen_config_survives_copies_and_leaves_plain_modules_alone(cross_registry):
    import copy

    layer = zoo.create("cross", query_dim=16, heads=2, dim_head=4)
    clone = copy.deepcopy(layer)
    assert clone.config == layer.config
    with pytest.raises(AttributeError, match="frozen"):
        clone.config = None
    from zoo.nn import MultiHeadAttention

    bare = MultiHeadAttention(16, heads=2, dim_head=4)  # not a declared variant, not built by zoo.create
    assert getattr(bare, "config", None) is None
    bare.config = layer.config  # the first assignment is allowed (e.g. a classmethod constructor)
    assert bare.config is layer.config


def test_a_missing_config_file_is_a_value_error_and_a_file_not_found_error(tmp_path):
    path = tmp_path / "nowhere.yaml"
    for kind in (ValueError, FileNotFoundError):
        with pytest.raises(kind, match="nowhere.yaml: no such config file"):
            zoo.load_config(path)


@pytest.mark.parametrize("value", [np.True_, np.False_, b"8", bytearray(b"8")])
def test_widths_are_numbers_not_bool_likes_or_bytes(cross_registry, value):
    """pydantic would coerce these (np.True_ into a width of 1, b"8" into 8)."""
    with pytest.raises(ValueError, match="query_dim.*must be an integer"):
        zoo.create("cross", query_dim=value)
    assert zoo.create("cross", query_dim=np.int64(8), heads=2, dim_head=4).config.query_dim == 8


def test_messages_about_huge_inputs_stay_short(registry):
    """A mapping of 200,000 keys, a 52 KB config and hundreds of registered names each give a
    message of a line or two, not megabytes."""
    from attention_zoo_plugins.variants import cross

    registry.load_plugin(cross, name="cross", distribution="attention-zoo")
    keys = {str(i): 0 for i in range(200_000)}
    for call in (lambda: zoo.create(keys), lambda: zoo.config.parse_config({"x" * 52_000: 1})):
        with pytest.raises(ValueError) as info:
            call()
        assert len(str(info.value)) < 1_000, len(str(info.value))
    for i in range(300):  # the cut is at a dozen; more names only cost time
        registry.register(cross.SPEC.replace(name=f"cross-{i}", aliases=()))
    with pytest.raises(zoo.UnknownVariantError) as info:
        zoo.get_variant("q" * 5_000)
    assert len(str(info.value)) < 1_000, len(str(info.value))


def test_a_declared_layer_built_directly_carries_its_validated_config(cross_registry):
    """``@zoo.variant``: ``Layer(**fields)`` is validated by the config, defaults filled once."""
    direct = cross.CrossAttention(16, heads=2, dim_head=4)
    assert direct.config == zoo.create("cross", query_dim=16, heads=2, dim_head=4).config
    with pytest.raises(ValueError, match="heads"):
        cross.CrossAttention(16, heads=0)
    with pytest.raises(ValueError, match="unknown field"):
        cross.CrossAttention(16, head=2)
    with pytest.raises(AttributeError, match="frozen"):
        direct.config = direct.config.model_copy(update={"heads": 4})

"""The registry and the plugin seam (zoo/registry.py, zoo/spec.py, zoo/hookspecs.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Literal

import pytest
import torch

import zoo
from zoo.errors import PluginError
from zoo.registry import Registry, use_registry

from attention_zoo_plugins import cross


def _spec(name="toy", **kw):
    class ToyConfig(zoo.VariantConfig):
        variant: Literal[name] = name  # type: ignore[valid-type]
        query_dim: int = 8

    return zoo.VariantSpec(name=name, module=cross.CrossAttention, config=ToyConfig, summary="toy", **kw)


def test_list_variants_sorted_and_fnmatch(cross_registry):
    zoo.register(_spec("alpha"))
    zoo.register(_spec("cross-lite"))
    assert zoo.list_variants() == ["alpha", "cross", "cross-lite"]
    assert zoo.list_variants("cross*") == ["cross", "cross-lite"]
    assert zoo.list_variants("nothing*") == []


def test_get_variant_by_alias(cross_registry):
    assert zoo.get_variant("cross-attention") is zoo.get_variant("cross")
    assert zoo.get_variant("cross").plugin == "cross"
    assert zoo.get_variant("cross").distribution == "attention-zoo"


def test_unknown_variant_suggests_closest(cross_registry):
    with pytest.raises(zoo.UnknownVariantError) as info:
        zoo.get_variant("crosss")
    assert isinstance(info.value, LookupError)
    assert "'cross'" in str(info.value)
    assert info.value.suggestions[0] == "cross"


def test_duplicate_name_names_both_sources(cross_registry):
    with pytest.raises(zoo.RegistrationError) as info:
        zoo.register(_spec("cross"))
    msg = str(info.value)
    assert "plugin 'cross' (attention-zoo)" in msg and "in-process registration" in msg


def test_duplicate_alias_refused(cross_registry):
    with pytest.raises(zoo.RegistrationError, match="cross-attention"):
        zoo.register(_spec("other", aliases=("cross-attention",)))
    assert "other" not in zoo.list_variants()


@pytest.mark.parametrize(
    "bad, match",
    [
        ("not a spec", "expects a zoo.VariantSpec"),
        (zoo.VariantSpec(name="Bad Name", module=cross.CrossAttention, config=cross.CrossConfig, summary=""), "invalid"),
        (zoo.VariantSpec(name="nomodule", module=int, config=cross.CrossConfig, summary=""), "torch.nn.Module"),
        (zoo.VariantSpec(name="mismatch", module=cross.CrossAttention, config=cross.CrossConfig, summary=""),
         r"Literal\['mismatch'\]"),
    ],
)
def test_invalid_specs_refused(registry, bad, match):
    with pytest.raises(zoo.RegistrationError, match=match):
        zoo.register(bad)


def test_unregister_and_reregister(cross_registry):
    spec = zoo.unregister("cross-attention")
    assert spec.name == "cross" and "cross" not in zoo.list_variants()
    with pytest.raises(zoo.UnknownVariantError):
        zoo.get_variant("cross-attention")
    zoo.register(spec)
    assert zoo.get_variant("crossattention").name == "cross"


def test_spec_replace_returns_copy():
    spec = cross.SPEC
    other = spec.replace(summary="changed")
    assert other.summary == "changed" and spec.summary != "changed"
    with pytest.raises(AttributeError):
        spec.summary = "mutated"  # type: ignore[misc]


# -- plugins ---------------------------------------------------------------------


class RaisesInHook:
    @zoo.hookimpl
    def zoo_register_variants(self, register):
        raise KeyError("boom")


class RegistersClash:
    @zoo.hookimpl
    def zoo_register_variants(self, register):
        register(_spec("cross"))
        register(_spec("fine-one"))


class RegistersGarbage:
    @zoo.hookimpl
    def zoo_register_variants(self, register):
        register({"name": "dict-not-spec"})


class MisspeltHook:
    @zoo.hookimpl
    def zoo_register_variant(self, register):  # missing "s": must fail loudly, not silently
        pass


def test_broken_plugins_are_isolated(cross_registry):
    infos = {
        "raises": cross_registry.load_plugin(RaisesInHook(), name="raises", distribution="bad-dist", version="1.2"),
        "clash": cross_registry.load_plugin(RegistersClash(), name="clash"),
        "garbage": cross_registry.load_plugin(RegistersGarbage(), name="garbage"),
        "misspelt": cross_registry.load_plugin(MisspeltHook(), name="misspelt"),
    }
    assert infos["raises"].status == "failed" and "KeyError" in infos["raises"].error
    assert infos["raises"].label == "raises (bad-dist 1.2)"
    assert "already taken" in infos["clash"].problems[0] and infos["clash"].variants == ["fine-one"]
    assert "expects a zoo.VariantSpec" in infos["garbage"].problems[0]
    assert infos["misspelt"].status == "failed" and "zoo_register_variant" in infos["misspelt"].error
    # everything else still works
    assert zoo.list_variants() == ["cross", "fine-one"]
    layer = zoo.create("cross", query_dim=8, heads=2, dim_head=4)
    assert layer(torch.randn(1, 3, 8)).shape == (1, 3, 8)
    names = {p.name: p.status for p in zoo.plugins()}
    assert names["raises"] == "failed" and names["cross"] == "loaded"


@pytest.mark.parametrize("plugin", [RaisesInHook(), RegistersClash(), RegistersGarbage(), MisspeltHook()])
def test_strict_mode_turns_plugin_problems_into_errors(plugin):
    reg = Registry(load_entry_points=False, strict=True, env={})
    reg.load_plugin(cross, name="cross")
    with pytest.raises(PluginError):
        reg.load_plugin(plugin, name="bad")


def test_load_plugins_env_var_limits_entry_points():
    only_cross = Registry(env={"ZOO_LOAD_PLUGINS": "cross"})
    assert only_cross.names() == ["cross"]
    assert [p.name for p in only_cross.plugins()] == ["cross"]
    assert Registry(env={"ZOO_LOAD_PLUGINS": ""}).names() == []
    assert Registry(env={"ZOO_LOAD_PLUGINS": "none"}).names() == []
    by_dist = Registry(env={"ZOO_LOAD_PLUGINS": "attention-zoo"})
    assert "cross" in by_dist.names()


def test_slow_plugin_import_is_reported_and_strict_fails():
    slow = Registry(env={"ZOO_LOAD_PLUGINS": "cross", "ZOO_PLUGIN_SLOW_S": "0"})
    (info,) = slow.plugins()
    assert info.problems and info.problems[0].startswith("slow import")
    strict = Registry(env={"ZOO_LOAD_PLUGINS": "cross", "ZOO_PLUGIN_SLOW_S": "0", "ZOO_STRICT_PLUGINS": "1"})
    with pytest.raises(PluginError, match="slow import"):
        strict.names()


def test_builtins_register_through_entry_points():
    reg = Registry(env={})
    with use_registry(reg):
        info = {p.name: p for p in zoo.plugins()}
    assert info["cross"].distribution == "attention-zoo" and info["cross"].status == "loaded"
    assert reg.get("cross").plugin == "cross"


def test_entry_points_load_lazily_and_once(monkeypatch):
    from importlib import metadata

    calls = []
    real = metadata.entry_points

    def counting(**kw):
        calls.append(kw)
        return real(**kw)

    monkeypatch.setattr(metadata, "entry_points", counting)
    reg = Registry(env={"ZOO_LOAD_PLUGINS": "cross"})
    assert calls == []  # nothing happens at construction
    reg.names()
    reg.get("cross")
    reg.plugins()
    assert len(calls) == 1


def test_commands_hook_adds_subcommands_and_isolates_failures(cross_registry):
    import argparse

    class AddsCommand:
        @zoo.hookimpl
        def zoo_register_commands(self, subparsers):
            p = subparsers.add_parser("hello")
            p.set_defaults(func=lambda args: 7)

    class BreaksCommand:
        @zoo.hookimpl
        def zoo_register_commands(self, subparsers):
            raise RuntimeError("no commands today")

    cross_registry.load_plugin(AddsCommand(), name="adds")
    cross_registry.load_plugin(BreaksCommand(), name="breaks")
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cross_registry.call_commands_hook(sub)
    args = parser.parse_args(["hello"])
    assert args.func(args) == 7
    broken = {p.name: p for p in cross_registry.plugins()}["breaks"]
    assert "no commands today" in broken.problems[0]


# -- a third-party package installed for real --------------------------------------


@pytest.mark.slow  # pip installs / fresh processes: seconds each
def test_installed_thirdparty_plugin_is_listed_and_created(thirdparty_site, zoo_cli):
    out = zoo_cli("list", site=thirdparty_site)
    assert out.returncode == 0, out.stderr
    assert "demo-multiquery" in out.stdout and "cross" in out.stdout
    shown = zoo_cli("show", "demo-multiquery", site=thirdparty_site)
    assert "zoo-demo-multiquery" in shown.stdout and "heads" in shown.stdout
    code = (
        "import torch, zoo; m = zoo.create('demo-multiquery', query_dim=16, heads=2, dim_head=4);"
        "print(tuple(m(torch.randn(2, 5, 16), torch.randn(2, 3, 16)).shape))"
    )
    env = {**os.environ, "PYTHONPATH": str(thirdparty_site)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "(2, 5, 16)"


@pytest.mark.slow  # pip installs / fresh processes: seconds each
def test_plugin_raising_on_import_is_reported_and_rest_works(thirdparty_site, zoo_cli):
    out = zoo_cli("plugins", site=thirdparty_site)
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("broken-on-import"))
    assert "zoo-broken-plugin" in line and "6.6.6" in line and "failed" in line
    assert "broken on purpose" in " ".join(out.stdout.split())  # the table may wrap it
    listed = zoo_cli("list", site=thirdparty_site)
    assert listed.returncode == 0 and "cross" in listed.stdout and "demo-multiquery" in listed.stdout
    assert "see `zoo plugins`" in listed.stderr
    strict = zoo_cli("list", site=thirdparty_site, env={"ZOO_STRICT_PLUGINS": "1"})
    assert strict.returncode != 0 and "broken on purpose" in strict.stderr

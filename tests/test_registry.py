"""The registry and the plugin seam (zoo/registry.py, zoo/spec.py, zoo/hookspecs.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Literal

import pytest
import torch

import zoo
from zoo.errors import PluginError
from zoo.registry import Registry, use_registry

from attention_zoo_plugins.variants import cross


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


class _Thief:
    """A plugin that removes the built-in ``cross`` and registers its own class under the name."""

    @zoo.hookimpl
    def zoo_register_variants(self, register):
        stolen = zoo.unregister("cross")
        register(stolen.replace(summary="not the built-in"))


@pytest.mark.parametrize("strict", [False, True])
def test_a_plugin_cannot_take_a_name_by_unregistering_it(strict):
    from attention_zoo_plugins.variants import cross as builtin

    from zoo.registry import Registry, use_registry

    env = {"ZOO_LOAD_PLUGINS": "", **({"ZOO_STRICT_PLUGINS": "1"} if strict else {})}
    reg = Registry(env=env)
    with use_registry(reg):
        reg.load_plugin(builtin, name="cross", distribution="attention-zoo")
        if strict:
            with pytest.raises(PluginError, match="tried to unregister 'cross'"):
                reg.load_plugin(_Thief(), name="thief", distribution="thief-dist")
        else:
            info = reg.load_plugin(_Thief(), name="thief", distribution="thief-dist")
            assert info.status == "failed" and "tried to unregister 'cross'" in info.error
        assert reg.get("cross").summary == builtin.SPEC.summary and reg.get("cross").plugin == "cross"


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


@pytest.mark.parametrize("value", ["abc", "-1", "nan"])
def test_a_bad_slow_threshold_is_reported_and_the_default_used(value):
    """A typo in a diagnostic knob neither stops the tool nor leaves it empty."""
    reg = Registry(env={"ZOO_LOAD_PLUGINS": "cross", "ZOO_PLUGIN_SLOW_S": value})
    with pytest.warns(UserWarning, match=f"ZOO_PLUGIN_SLOW_S={value!r} is not a number of seconds"):
        assert reg.names() == ["cross"]
    assert reg.names() == ["cross"]


def test_an_unexpected_error_while_loading_never_leaves_an_empty_registry(monkeypatch):
    """The same error on every call, never a first call that raises and a second that says
    nothing is registered."""
    import zoo.loader

    def broken(*args, **kwargs):
        raise RuntimeError("entry points unreadable")

    monkeypatch.setattr(zoo.loader.metadata, "entry_points", broken)
    reg = Registry(env={})
    for _ in range(2):
        with pytest.raises(PluginError, match="entry points unreadable"):
            reg.names()


@pytest.mark.parametrize("name", ["cross\n", "cross\r", "cross ", "\ncross"])
def test_names_are_whole_strings(registry, name):
    """A trailing newline is not part of a valid name ("cross\n" would list as a look-alike)."""
    from attention_zoo_plugins.variants.cross import SPEC

    with pytest.raises((ValueError, zoo.RegistrationError)):
        registry.register(SPEC.replace(name=name))


def test_builtins_register_through_entry_points():
    reg = Registry(env={})
    with use_registry(reg):
        info = {p.name: p for p in zoo.plugins()}
        assert reg.get("cross").plugin == "cross"  # spec.plugin: the default registry's record (reg, here)
    assert info["cross"].distribution == "attention-zoo" and info["cross"].status == "loaded"
    assert reg.provenance("cross") == {"plugin": "cross", "distribution": "attention-zoo"}


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


# -- strangers' plugins: nothing declared, no name taken, no tool taken down -------------------

STRANGERS = ("zoo-stranger-gated", "zoo-stranger-context", "aaa-zoo-squatter")


@pytest.fixture(scope="session")
def stranger_site(tmp_path_factory):
    """Contract-only plugins and a name squatter, installed for real with pip."""
    from conftest import PACKAGES, pip_install_target

    target = tmp_path_factory.mktemp("strangers")
    pip_install_target(target, *(PACKAGES / name for name in STRANGERS))
    return target


@pytest.mark.slow  # subprocesses (a fresh torch import each)
def test_contract_only_plugins_pass_zoo_check_declaring_nothing(stranger_site, zoo_cli):
    """Written against CONTRACT.md alone (plain torch), no capabilities declared: one needs a
    context and drops attention weights in training, one has no dropout field at all."""
    out = zoo_cli("check", "--all", "-q", site=stranger_site)  # with every installed plugin
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {ln.split()[0] for ln in out.stdout.splitlines() if ln[:1].strip()}
    assert {"stranger-gated", "stranger-context", "cross"} <= rows and "variant(s) passed" in out.stdout
    shown = zoo_cli("show", "stranger-context", site=stranger_site)
    caps = " ".join(shown.stdout.split()).split("capabilities ")[1].split(" laws ")[0]
    yes, no = caps.split("; not: ")
    assert "dropout (inferred)" in yes and "masks (inferred)" in yes
    assert "self_attention (inferred)" in no and "equal_lengths (inferred)" in no
    shown = " ".join(zoo_cli("show", "stranger-gated", site=stranger_site).stdout.split())
    assert "self_attention (inferred)" in shown.split("; not: ")[0]
    assert "dropout (inferred)" in shown.split("; not: ")[1]


def test_capabilities_are_inferred_and_declared_values_win():
    from attention_zoo_plugins.variants import selfdoc
    from zoo.harness.capabilities import resolve_capabilities

    caps = zoo.Capabilities(context_order_invariant=False)  # declares only what cannot be observed
    assert caps.inferred == {"dropout", "masks", "self_attention", "equal_lengths"}
    resolved = resolve_capabilities(selfdoc.SPEC.replace(capabilities=caps))
    assert resolved.equal_lengths and resolved.dropout and resolved.masks  # observed from the layer
    assert resolved.inferred == caps.inferred and not resolved.context_order_invariant
    declared = zoo.Capabilities(dropout=False, equal_lengths=False)
    resolved = resolve_capabilities(cross.SPEC.replace(capabilities=declared))
    assert not resolved.dropout and not resolved.equal_lengths  # the config has dropout: declared wins
    assert resolved.inferred == {"masks", "self_attention"}


def test_a_variant_that_needs_a_context_is_not_forced_into_self_attention():
    import math

    class NeedsContext(cross.CrossAttention):
        def forward(self, x, context=None, *, context_mask=None):
            if context is None:
                raise ValueError("context is required")
            return super().forward(x, context, context_mask=context_mask)

    spec = cross.SPEC.replace(module=NeedsContext, capabilities=zoo.Capabilities(), laws=(),
                              examples=({"query_dim": 8, "heads": 2, "dim_head": 4},))
    report = zoo.check(spec, checks="shape,oracle-forward,batch-independence")
    assert report.passed, report.table()
    assert math.isfinite(report.seconds)


@pytest.mark.slow  # subprocesses (a fresh torch import each)
def test_builtin_names_win_and_the_loser_is_blamed(stranger_site, zoo_cli):
    listed = zoo_cli("list", site=stranger_site)
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[0] for line in listed.stdout.splitlines()[2:] if line[:1].strip()]
    assert {"cross", "film", "squatter-ok"} <= set(names)  # the squatter's honest variant loads
    assert "cross-attention" not in names and "squatter-film" not in names  # its claims are refused
    code = ("import zoo; f = zoo.get_variant('film'); c = zoo.get_variant('cross-attention');"
            "print(f.name, f.module.__module__, c.name, c.summary.startswith('squatter'))")
    env = {**os.environ, "PYTHONPATH": str(stranger_site)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.stdout.split() == ["film", "attention_zoo_plugins.variants.film", "cross", "False"], res.stderr
    plugins = zoo_cli("plugins", site=stranger_site)
    text = " ".join(plugins.stdout.split())
    rows = {ln.split()[0]: " ".join(ln.split()) for ln in plugins.stdout.splitlines() if ln[:1].strip()}
    assert rows["cross"].split()[1:4] == ["attention-zoo", rows["cross"].split()[2], "loaded"]
    squatter = rows["cross@aaa-zoo-squatter"]
    assert "aaa-zoo-squatter 0.0.1 loaded" in squatter
    code = "import json, zoo; print(json.dumps({p.name: p.problems for p in zoo.plugins()}))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    problems = json.loads(res.stdout)
    assert not problems["cross"] and not problems["film"]  # the holders are not blamed
    blamed = " | ".join(problems["cross@aaa-zoo-squatter"])
    assert "plugin name 'cross' is held by plugin cross (attention-zoo" in blamed
    assert "cannot register 'cross-attention' from plugin 'cross@aaa-zoo-squatter'" in blamed
    assert "alias 'film' of 'squatter-film'" in blamed and "already taken by variant 'film'" in blamed


@pytest.mark.slow  # subprocesses (a fresh torch import each)
def test_a_plugin_exiting_on_import_takes_no_command_down(stranger_site, zoo_cli):
    out = zoo_cli("plugins", site=stranger_site)
    assert out.returncode == 0, out.stderr
    line = " ".join(next(ln for ln in out.stdout.splitlines() if ln.startswith("exits-on-import")).split())
    assert "aaa-zoo-squatter" in line and "failed" in line
    assert "import failed: SystemExit: 3" in " ".join(out.stdout.split())  # the table may wrap it
    assert zoo_cli("list", site=stranger_site).returncode == 0


class ExitsInHook:
    @zoo.hookimpl
    def zoo_register_variants(self, register):
        register(_spec("half-registered"))
        sys.exit(3)


def test_a_hook_raising_system_exit_is_contained_and_leaves_nothing(cross_registry):
    info = cross_registry.load_plugin(ExitsInHook(), name="exits")
    assert info.status == "failed" and "SystemExit: 3" in info.error
    assert zoo.list_variants() == ["cross"]  # what it registered before exiting is gone


def test_strict_mode_raises_the_same_error_on_every_call(monkeypatch):
    from importlib import metadata

    real = metadata.entry_points

    def with_a_broken_one(**kw):
        return [*real(**kw), metadata.EntryPoint("boom", "zoo_no_such_module_anywhere", "zoo")]

    monkeypatch.setattr(metadata, "entry_points", with_a_broken_one)
    reg = Registry(env={"ZOO_STRICT_PLUGINS": "1", "ZOO_LOAD_PLUGINS": "cross,boom"})
    messages = []
    for call in (reg.names, reg.plugins, lambda: reg.get("cross"), reg.names):
        with pytest.raises(PluginError, match="boom") as info:
            call()
        messages.append(str(info.value))
    assert len(set(messages)) == 1


def test_strict_in_process_plugin_failure_rolls_back(cross_registry):
    cross_registry.strict = True
    with pytest.raises(PluginError, match="SystemExit"):
        cross_registry.load_plugin(ExitsInHook(), name="exits")
    assert cross_registry.names() == ["cross"]


def test_hooks_are_called_through_pluggy(cross_registry):
    class Wrapper:
        @zoo.hookimpl(wrapper=True)
        def zoo_register_variants(self, register):
            register(_spec("wrapped"))
            return (yield)

    class OldWrapper:
        @zoo.hookimpl(hookwrapper=True)
        def zoo_register_variants(self, register):
            register(_spec("old-wrapped"))
            yield

    class TriesFirst:
        @zoo.hookimpl(tryfirst=True)
        def zoo_register_variants(self, register):
            register(_spec("jumps-the-queue"))

    assert cross_registry.load_plugin(Wrapper(), name="wrapper").variants == ["wrapped"]
    assert cross_registry.load_plugin(OldWrapper(), name="old").variants == ["old-wrapped"]
    refused = cross_registry.load_plugin(TriesFirst(), name="first")
    assert refused.status == "failed" and "plugin 'first' marks zoo_register_variants tryfirst" in refused.error
    assert "jumps-the-queue" not in zoo.list_variants()


def test_every_hook_is_called_in_load_order_and_reordering_markers_are_refused(cross_registry):
    """One calling rule for every hook: plugin by plugin in load order; a tryfirst/trylast
    on any zoo hook (here the commands hook) is refused like on zoo_register_variants."""
    import argparse

    calls = []

    def adder(label, **marks):
        class Adds:
            @zoo.hookimpl(**marks)
            def zoo_register_commands(self, subparsers):
                calls.append(label)

        return Adds()

    assert cross_registry.load_plugin(adder("one"), name="c").status == "loaded"
    assert cross_registry.load_plugin(adder("two"), name="a").status == "loaded"
    refused = cross_registry.load_plugin(adder("first", tryfirst=True), name="b")
    assert refused.status == "failed" and "plugin 'b' marks zoo_register_commands tryfirst" in refused.error
    last = cross_registry.load_plugin(adder("last", trylast=True), name="d")
    assert last.status == "failed" and "trylast" in last.error
    cross_registry.call_commands_hook(argparse.ArgumentParser().add_subparsers())
    assert calls == ["one", "two"]


@pytest.mark.slow  # subprocesses (a fresh torch import each)
def test_plugin_import_time_excludes_torch():
    code = """
import sys
from importlib import metadata
from zoo.registry import Registry
seen, real = [], metadata.EntryPoint.load
def load(self):
    seen.append((self.name, "torch" in sys.modules))
    return real(self)
metadata.EntryPoint.load = load
reg = Registry(env={"ZOO_LOAD_PLUGINS": "cross,film"})
reg.names()
print(seen, reg.torch_import_seconds is not None)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if not k.startswith("ZOO_")})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[('cross', True), ('film', True)] True"


def test_spec_replace_with_a_new_name_registers_and_checks(registry):
    copy = cross.SPEC.replace(name="my-copy")
    assert copy.aliases == () and copy.config is not cross.CrossConfig
    zoo.register(copy)
    layer = zoo.create("my-copy", query_dim=8, heads=2, dim_head=4)
    assert layer.config.variant == "my-copy" and isinstance(layer.config, cross.CrossConfig)
    assert zoo.check("my-copy", checks="shape,config-roundtrip,state-dict").passed
    assert cross.SPEC.replace(summary="same name").config is cross.CrossConfig


@pytest.mark.parametrize("value, fragment", [
    ({"variant": "crosss", "query_dim": 8}, "did you mean 'cross'"),
    ({"query_dim": 8}, "needs a 'variant' key"),
])
def test_attention_config_errors_are_validation_errors(cross_registry, value, fragment):
    import pydantic

    class Model(pydantic.BaseModel):
        width: int
        attention: zoo.AttentionConfig

    with pytest.raises(pydantic.ValidationError) as info:
        Model(width=8, attention=value)
    (error,) = info.value.errors()
    assert error["loc"] == ("attention",) and fragment in error["msg"]


CLOSED_PIPE = """
import sys
sys.path.insert(0, {tests!r})
from zoo.registry import Registry, use_registry
from broken_layers import PLANTED, SOUND
reg = Registry(load_entry_points=False, env={{}})
reg.register({spec})
with use_registry(reg):
    from zoo.cli import main
    sys.exit(main(["check", "cross", "-k", "mask,shape", "-q"]))
"""


@pytest.mark.slow  # subprocesses (a fresh torch import each)
@pytest.mark.parametrize("spec, status", [('PLANTED["ignored-mask"][0]', 1), ("SOUND", 0)])
def test_exit_status_survives_a_closed_output_stream(spec, status):
    from pathlib import Path

    code = CLOSED_PIPE.format(tests=str(Path(__file__).parent), spec=spec)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # like `| head -0`: nobody reads what zoo prints
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == status, err.decode()
    assert b"Traceback" not in err and b"BrokenPipeError" not in err


def test_other_threads_never_see_a_half_loaded_registry(monkeypatch):
    import threading
    import types
    from importlib import metadata

    started, release = threading.Event(), threading.Event()
    slow = types.ModuleType("zoo_test_slow_plugin")

    @zoo.hookimpl
    def zoo_register_variants(register):
        register(_spec("slow-one"))
        started.set()
        release.wait(30)
        register(_spec("slow-two"))

    slow.zoo_register_variants = zoo_register_variants
    monkeypatch.setitem(sys.modules, "zoo_test_slow_plugin", slow)
    monkeypatch.setattr(metadata, "entry_points",
                        lambda **kw: [metadata.EntryPoint("slow", "zoo_test_slow_plugin", "zoo")])
    reg = Registry(env={})
    loader = threading.Thread(target=reg.names)
    loader.start()
    assert started.wait(30)
    seen = []
    reader = threading.Thread(target=lambda: seen.append(reg.names()))
    reader.start()
    reader.join(0.5)  # the reader waits for the loader instead of reading half a registry
    release.set()
    loader.join(30)
    reader.join(30)
    assert seen == [["slow-one", "slow-two"]]

"""``@zoo.variant``: a variant declared once (config literal, spec, registration, layer
built from its validated config), and the built-ins all declared that way."""

from __future__ import annotations

import ast
import types
from pathlib import Path

import pytest
from pydantic import Field

import zoo
from zoo.declare import declared_in
from zoo.nn import MultiHeadAttention, MultiHeadFields
from zoo.oracle import multihead_reference

ROOT = Path(__file__).resolve().parents[1]
BUILTINS = ("cross", "selfdoc", "persistent", "retro", "film", "gqa", "linear", "perceiver", "crossvit")


def _plugin_module(name: str, *, hook: bool = False) -> types.ModuleType:
    """A module declaring variant ``name`` (a fresh config and layer class each time)."""
    mod = types.ModuleType(f"decl_{name.replace('-', '_')}")

    class Config(MultiHeadFields):
        scale: float = Field(1.0, gt=0, description="Output scale.")

    Config.__module__ = mod.__name__

    class Layer(MultiHeadAttention):
        def __init__(self, *, scale, **fields):
            super().__init__(**fields)
            self.scale = scale

        def forward(self, x, context=None, *, context_mask=None):
            return super().forward(x, context, context_mask=context_mask) * self.scale

    Layer.__module__ = mod.__name__
    mod.Config, mod.Layer = Config, Layer
    zoo.variant(name, config=Config, summary="scaled attention",
                reference=lambda m, x, context=None, *, context_mask=None:
                multihead_reference(m, x, context, context_mask=context_mask) * m.scale)(Layer)
    if hook:
        @zoo.hookimpl
        def zoo_register_variants(register):
            register(Layer.spec)
        mod.zoo_register_variants = zoo_register_variants
    return mod


def test_a_declared_variant_registers_with_no_hook_and_keeps_its_provenance(registry):
    mod = _plugin_module("scaled-a")
    assert not hasattr(mod, "zoo_register_variants")
    info = registry.load_plugin(mod, name="scaled", distribution="zoo-scaled", version="1.0")
    assert info.variants == ["scaled-a"] and info.status == "loaded"
    assert zoo.get_variant("scaled-a").module is mod.Layer
    assert registry.provenance("scaled-a") == {"plugin": "scaled", "distribution": "zoo-scaled"}
    layer = zoo.create("scaled-a", query_dim=8, heads=2, dim_head=4, scale=2.0)
    assert layer.scale == 2.0 and layer.config.variant == "scaled-a"
    assert zoo.check("scaled-a").passed


def test_the_declaration_adds_the_variant_literal_and_builds_from_the_config():
    mod = _plugin_module("scaled-b")
    assert mod.Config().variant == "scaled-b"
    with pytest.raises(ValueError):
        mod.Config(variant="other")
    assert mod.Config.model_json_schema()["properties"]["variant"]["const"] == "scaled-b"
    layer = mod.Layer(8, heads=2, dim_head=4)  # positional in field order, defaults from the config
    assert layer.scale == 1.0 and layer.config == mod.Config(query_dim=8, heads=2, dim_head=4)
    with pytest.raises(ValueError, match="scale"):
        mod.Layer(query_dim=8, scale=0)
    with pytest.raises(TypeError, match="positional"):
        mod.Layer(*range(1, 12))
    assert mod.Layer.spec in declared_in(mod.__name__)


def test_bad_declarations_are_clear_errors():
    mod = _plugin_module("scaled-c")
    with pytest.raises(zoo.RegistrationError, match="already declared"):
        zoo.declare_variant(mod.Layer, "scaled-c2", config=mod.Config, summary="again")

    class Other(MultiHeadAttention):
        pass

    with pytest.raises(zoo.RegistrationError, match="already belongs to variant 'scaled-c'"):
        zoo.declare_variant(Other, "scaled-c3", config=mod.Config, summary="shared config")
    with pytest.raises(zoo.RegistrationError, match="invalid"):
        zoo.declare_variant(Other, "Not A Name", config=type("C", (MultiHeadFields,), {}), summary="x")
    with pytest.raises(zoo.RegistrationError, match="'module' is the declaration's own"):
        zoo.declare_variant(Other, "scaled-c4", config=type("C", (MultiHeadFields,), {}), summary="x", module=Other)


def test_a_module_that_also_registers_its_declared_spec_gets_a_clash_reported(registry):
    """Declaring is registering: a hook registering the same spec again is a reported clash."""
    info = registry.load_plugin(_plugin_module("scaled-d", hook=True), name="both")
    assert info.variants == ["scaled-d"]
    assert any("already taken" in p for p in info.problems), info.problems


def _top_level(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_is_declared_once(name):
    """One declaration per built-in: no hook registering it, no ``SPEC.replace`` after it,
    no ``variant: Literal[...]`` restating its name in the config."""
    spec = zoo.get_variant(name)
    assert spec.module.spec.name == name and spec.module.spec.config is spec.config
    path = ROOT / ("plugins/retro/layer.py" if name == "retro" else f"plugins/variants/{name}.py")
    tree = _top_level(path)
    source = path.read_text(encoding="utf-8")
    assert "zoo_register_variants" not in source
    assert "SPEC.replace(" not in source and "Literal[" not in source
    declarations = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func) in
                    ("zoo.declare_variant", "zoo.variant")]
    assert len(declarations) == 1


def test_capabilities_shrank_to_the_input_contract_and_old_arguments_warn():
    """``context_required`` said what ``self_attention=False`` says; ``min_query_len`` no
    variant declared: both gone, accepted with a DeprecationWarning for older plugins."""
    fields = set(zoo.Capabilities().as_dict())
    assert not {"context_required", "min_query_len"} & fields
    with pytest.warns(DeprecationWarning, match="self_attention=False"):
        caps = zoo.Capabilities(context_required=True, self_attention=False)
    assert caps.self_attention is False
    with pytest.warns(DeprecationWarning, match="min_query_len"):
        zoo.Capabilities(min_query_len=4)

"""attention-zoo: attention variants as interchangeable, checked parts.

Pick a layer by name, validate its config, check it against its oracle:

```python
import zoo
layer = zoo.create("cross", query_dim=320, context_dim=768, heads=8, dim_head=40)
report = zoo.check("cross")
```
"""

from __future__ import annotations

from typing import Any

from zoo.benchspec import STANDARD_SHAPES, BenchShape, BenchSpec, Workload
from zoo.config import AttentionConfig, VariantConfig, create, load_config
from zoo.declare import declare_variant, variant
from zoo.errors import PluginError, RegistrationError, UnknownVariantError, UnknownVariantInFileError
from zoo.hookspecs import hookimpl
from zoo.io import load, save
from zoo.registry import get_variant, list_variants, plugins, register, unregister
from zoo.spec import Capabilities, Law, VariantSpec

__version__ = "0.1.0"

__all__ = [
    "AttentionConfig",
    "BenchShape",
    "BenchSpec",
    "Capabilities",
    "CheckReport",
    "DistillReport",
    "Law",
    "PluginError",
    "RegistrationError",
    "STANDARD_SHAPES",
    "UnknownVariantError",
    "UnknownVariantInFileError",
    "VariantConfig",
    "VariantSpec",
    "Workload",
    "check",
    "create",
    "declare_variant",
    "distill",
    "get_variant",
    "hookimpl",
    "list_variants",
    "load",
    "load_config",
    "plugins",
    "register",
    "save",
    "swap",
    "SwapAdapter",
    "SwapReport",
    "SwapTarget",
    "unregister",
    "variant",
]


def check(name_or_spec: Any, **options: Any):
    """Run the shared harness on a variant (name, alias or :class:`VariantSpec`).

    Returns a :class:`zoo.harness.CheckReport`; see :func:`zoo.harness.check` for options.
    """
    from zoo.harness import check as _check

    return _check(name_or_spec, **options)


# Imported on first use: ``import zoo`` stays cheap (no torch until a layer is needed).
_LAZY = {
    "CheckReport": ("zoo.harness", "CheckReport"),
    "DistillReport": ("zoo.distilling", "DistillReport"),
    "distill": ("zoo.distilling", "distill"),
    "swap": ("zoo.swapping", "swap"),
    "SwapAdapter": ("zoo.swapping", "Adapter"),
    "SwapReport": ("zoo.swapping", "SwapReport"),
    "SwapTarget": ("zoo.swapping", "SwapTarget"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")

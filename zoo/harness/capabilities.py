"""Capabilities the zoo observes instead of asking the author to declare them.

A plugin may declare nothing (CONTRACT.md, Capabilities). What can be observed is
inferred here, from the spec's first example; a declared value always wins:

============== =====================================================================
capability     when not declared
============== =====================================================================
dropout        True exactly when the config has a ``dropout`` field
masks          True when ``forward`` accepts ``context_mask``
self_attention True when ``forward(x)`` (context ``None``) returns; a ``ValueError``
               means the variant needs a context
equal_lengths  True when a context of another length than ``x`` is refused with a
               ``ValueError`` (and one of ``x``'s length is accepted)
============== =====================================================================

The order properties default to True and ``chunk_causal`` to False: those cannot be
observed from a handful of calls, so a variant with positions declares them.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from zoo.spec import Capabilities, VariantSpec

__all__ = ["resolve_capabilities", "describe_capabilities"]

_PROBE_LEN = 4


def _accepts_mask(module_cls: type) -> bool:
    try:
        params = inspect.signature(module_cls.forward).parameters
    except (TypeError, ValueError):
        return True
    return "context_mask" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _probe(spec: VariantSpec, caps: Capabilities) -> dict[str, bool]:
    """Build each example and watch how it treats ``context=None`` and a context of
    another length: a capability holds when some example shows it."""
    import torch

    import zoo

    seen: dict[str, list[bool]] = {"self_attention": [], "equal_lengths": []}
    for index, fields in enumerate(spec.example_configs()):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(index)
            module = zoo.create(spec, **dict(fields)).eval()
        n = _PROBE_LEN

        def inputs(query_len: int, context_len: int, module=module) -> dict[str, Any]:
            gen = torch.Generator().manual_seed(0)
            return dict(spec.make_inputs(module, batch=1, query_len=query_len, context_len=context_len,
                                         generator=gen, dtype=torch.float32))

        def refuses(kwargs: dict[str, Any], module=module) -> bool | None:
            """True: ValueError; False: returned; None: crashed otherwise (left to the checks)."""
            try:
                with torch.no_grad():
                    module(**kwargs)
            except ValueError:
                return True
            except Exception:  # noqa: BLE001 - the harness's checks report crashes
                return None
            return False

        same = inputs(n, n)
        seen["self_attention"].append(refuses({"x": same["x"]}) is not True)
        ctx = same.get("context")
        if isinstance(ctx, torch.Tensor) and ctx.ndim >= 3 and ctx.shape[1] == same["x"].shape[1]:
            longer = torch.cat([ctx, ctx[:, :3]], dim=1)  # the same context, three items longer
            other = {k: v for k, v in same.items() if k != "context_mask"}
            seen["equal_lengths"].append(refuses({**other, "context": longer}) is True
                                         and refuses(same) is False)
    return {k: any(v) for k, v in seen.items() if k in caps.inferred and v}


_CACHE: dict[int, tuple[VariantSpec, Capabilities]] = {}


def resolve_capabilities(spec: VariantSpec) -> Capabilities:
    """``spec.capabilities`` with every undeclared capability observed (declared ones kept).

    The result's ``inferred`` names the capabilities that were observed. A layer that
    cannot even be built or called keeps plain attention's values: the harness's checks
    then report the crash itself.
    """
    caps = spec.capabilities
    if not caps.inferred:
        return caps
    hit = _CACHE.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    values: dict[str, bool] = {}
    if "dropout" in caps.inferred:
        values["dropout"] = "dropout" in getattr(spec.config, "model_fields", {})
    if "masks" in caps.inferred:
        values["masks"] = _accepts_mask(spec.module)
    try:
        values.update(_probe(spec, caps))
    except Exception:  # noqa: BLE001 - a broken layer: the checks say what is wrong
        pass
    resolved = dataclasses.replace(caps, **values)
    object.__setattr__(resolved, "inferred", caps.inferred)
    if len(_CACHE) > 256:
        _CACHE.clear()
    _CACHE[id(spec)] = (spec, resolved)
    return resolved


def describe_capabilities(caps: Capabilities) -> str:
    """``masks, dropout (inferred), ...; not: chunk_causal`` for ``zoo show``."""
    def label(k: str) -> str:
        return f"{k} (inferred)" if k in caps.inferred else k

    flags = {k: v for k, v in caps.as_dict().items() if isinstance(v, bool)}
    yes = [label(k) for k, v in flags.items() if v]
    no = [label(k) for k, v in flags.items() if not v]
    return ", ".join(yes) + ("; not: " + ", ".join(no) if no else "")

"""Adapter for diffusers' ``Attention`` (every UNet and transformer model; ``attn2`` is cross-attention).

The replacement takes ``Attention``'s call signature ``(hidden_states,
encoder_hidden_states=None, attention_mask=None, **cross_attention_kwargs)``; the
mask a UNet passes to ``attn2`` (its ``encoder_attention_mask``, turned into an
additive bias of 0 / -10000) becomes the zoo's bool ``context_mask``. Of the
``cross_attention_kwargs``, ``scale`` is ignored with a warning (as diffusers'
own processors do); any other raises a ``ValueError`` (a zoo layer has no place for
it), so none is lost silently. diffusers is imported only when one of its modules
is seen. The adapter relies on that call signature: when a model is swapped, the
replaced module's ``forward`` must still take it, or the swap is refused naming the
diffusers version (never a wrapper that would misread its arguments).
"""

from __future__ import annotations

import inspect
import warnings

from torch import Tensor, nn

import zoo
from zoo.swapping import Adapter, SwapTarget, call_layer, keep_mask

from .linears import linear_like, weights_of

# Processors whose computation is plain attention (no LoRA, IP-Adapter, ... state to lose).
_PLAIN_PROCESSORS = {"AttnProcessor", "AttnProcessor2_0", "XFormersAttnProcessor", "AttnProcessorNPU"}


# The leading arguments of ``Attention.forward`` that callers pass and the wrapper takes.
CALL_SIGNATURE = ("hidden_states", "encoder_hidden_states", "attention_mask")


def calling_convention_problem(module: nn.Module) -> str | None:
    """Why ``module.forward`` is not called the way the wrapper is (else ``None``)."""
    params = [n for n in inspect.signature(type(module).forward).parameters if n != "self"]
    if tuple(params[:len(CALL_SIGNATURE)]) == CALL_SIGNATURE:
        return None
    import diffusers

    return (f"diffusers {diffusers.__version__}: {type(module).__name__}.forward({', '.join(params)}) no longer "
            f"starts with ({', '.join(CALL_SIGNATURE)}), the call the zoo's wrapper takes; use a diffusers "
            f"version in attention-zoo's tested range (constraints.txt) or report it")


class SwappedDiffusersAttention(nn.Module):
    """A zoo layer behind diffusers' ``Attention`` call signature.

    Args:
        layer: the zoo layer (its parameters are this module's ``layer.*``).
        kind: ``"cross"`` or ``"self"``.
    """

    def __init__(self, layer: nn.Module, kind: str) -> None:
        super().__init__()
        self.layer, self.kind = layer, kind

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                attention_mask: Tensor | None = None, **cross_attention_kwargs) -> Tensor:
        if cross_attention_kwargs.pop("scale", None) is not None:
            warnings.warn("cross_attention_kwargs['scale'] is ignored (as diffusers' own attention "
                          "processors ignore it); pass LoRA scales to the pipeline instead", stacklevel=2)
        if cross_attention_kwargs:
            raise ValueError(
                f"a zoo-swapped attention module takes no cross_attention_kwargs but got "
                f"{sorted(cross_attention_kwargs)}; these belong to custom diffusers processors "
                f"(IP-Adapter, GLIGEN, ...), which zoo.swap replaces: drop them or keep the original module"
            )
        if hidden_states.ndim != 3:
            raise ValueError(f"hidden_states: expected (B, N, query_dim), got shape {tuple(hidden_states.shape)}")
        context = encoder_hidden_states
        keys = hidden_states if context is None else context
        mask = keep_mask(attention_mask, batch=keys.shape[0], length=keys.shape[1], name="attention_mask")
        return call_layer(self.layer, hidden_states, context, mask)


class DiffusersAdapter(Adapter):
    """Recognises ``diffusers.models.attention_processor.Attention``."""

    name = "diffusers"

    def match(self, path: str, module: nn.Module) -> SwapTarget | None:
        if not type(module).__module__.startswith("diffusers."):
            return None
        from diffusers.models.attention_processor import Attention

        if not isinstance(module, Attention):
            return None
        kind = "cross" if module.is_cross_attention else "self"
        heads = module.heads
        to_out = getattr(module, "to_out", None)
        projections = {"to_q": module.to_q, "to_k": module.to_k, "to_v": module.to_v,
                       "to_out.0": to_out[0] if isinstance(to_out, nn.ModuleList) and len(to_out) else None}
        missing = [n for n, lin in projections.items() if not linear_like(lin)]
        if missing:  # e.g. SimpleCrossAttn* with only_cross_attention (no to_k/to_v), pre_only (no to_out)
            p = next(q for q in module.parameters())
            why = ("pre_only=True: it has no output projection" if getattr(module, "pre_only", False)
                   else "only_cross_attention=True with added key/value projections" if module.only_cross_attention
                   else "")
            return SwapTarget(
                kind=kind, query_dim=module.query_dim, context_dim=module.cross_attention_dim, heads=heads,
                dim_head=module.inner_dim // heads, dtype=p.dtype, device=p.device, training=module.training,
                problem=(f"diffusers Attention without {', '.join(missing)} as a linear projection"
                         f"{' (' + why + ')' if why else ''}: a zoo layer needs q, k, v and output projections"),
                wrap=lambda layer, kind=kind: SwappedDiffusersAttention(layer, kind))
        base = {n: getattr(lin, "base_layer", lin) for n, lin in projections.items()}
        inner = base["to_q"].out_features
        dim_head = inner // heads
        out = base["to_out.0"]
        unsupported = {
            "spatial_norm": module.spatial_norm is not None,
            "group_norm": module.group_norm is not None,
            "norm_cross": module.norm_cross is not None,
            "norm_q/norm_k (QK-norm)": module.norm_q is not None or module.norm_k is not None,
            "residual_connection": bool(module.residual_connection),
            "rescale_output_factor != 1": module.rescale_output_factor != 1.0,
            "added key/value projections": getattr(module, "add_k_proj", None) is not None,
            "a scale other than dim_head**-0.5": abs(module.scale - dim_head ** -0.5) > 1e-12,
            "key/value heads other than heads": base["to_k"].out_features != inner,
            "an output width other than query_dim": out.out_features != module.query_dim,
            f"processor {type(module.processor).__name__}": type(module.processor).__name__ not in _PLAIN_PROCESSORS,
        }
        used = [what for what, present in unsupported.items() if present]
        weights, notes, problems = weights_of({n: (f"{path}.{n}", lin) for n, lin in projections.items()})
        problem = calling_convention_problem(module)
        if used and not problem:
            problem = f"diffusers Attention with {', '.join(used)}: a zoo layer has no such part"
        if problems and not problem:
            problem = "; ".join(problems)
        p = base["to_q"].weight
        return SwapTarget(
            kind=kind, query_dim=module.query_dim, context_dim=base["to_k"].in_features, heads=heads,
            dim_head=dim_head, bias=base["to_q"].bias is not None, out_bias=out.bias is not None,
            dropout=to_out[1].p if len(to_out) > 1 else 0.0, notes=tuple(notes),
            weights=weights, problem=problem, dtype=p.dtype, device=p.device, training=module.training,
            wrap=lambda layer, kind=kind: SwappedDiffusersAttention(layer, kind),
        )


@zoo.hookimpl
def zoo_register_adapters(register):
    register(DiffusersAdapter())

"""Adapters for transformers' attention: the BERT family and the BART family.

- BERT family (``BertModel`` as a decoder with ``add_cross_attention=True``,
  ``EncoderDecoderModel``, ...): the core of ``crossattention`` (``.self``: ``query``,
  ``key``, ``value``) is replaced; ``crossattention.output`` (``BertSelfOutput``: dense,
  dropout, residual, LayerNorm) is kept as it is. That core has no output projection,
  so the zoo layer's ``to_out.0`` is set to the identity (its bias off).
- BART family (``encoder_attn`` modules with ``q_proj``, ``k_proj``, ``v_proj``,
  ``out_proj``: BART, Marian, mBART, Pegasus, Whisper, ...): the whole module is
  replaced; ``out_proj`` becomes ``to_out.0``.

During ``generate()`` (a cache is passed, gradients off) the zoo layer's projections
of the encoder states are computed once per generation and reused at every step: the
layer's ``nn.Linear`` modules remember their last output for the very same input
tensor. The memo belongs to the generation's cache object: a new generation (a new
cache) starts empty, the memo is dropped when that cache is freed, and an entry is
used only while the input tensor and the weights are unchanged (their version
counters), so it never serves stale keys and values. Which argument carries the cache
(``cache`` from transformers 5.2x, ``past_key_values`` before) is read from the
replaced module's signature when the model is swapped; a signature the adapter does
not know is refused, naming the transformers version, instead of losing the reuse
in silence. Self-attention that is neither causal nor cached (BERT-family encoders,
the encoders of BART, Marian, Whisper, ...) is swapped with ``where="self"``; causal
decoder self-attention (with its own key/value cache) is not, and the report lists it.
Projections are read through :mod:`.linears` (PEFT LoRA merged or refused, never
dropped). transformers is imported only when one of its modules is seen.
"""

from __future__ import annotations

import functools
import inspect
import weakref

import torch
from torch import Tensor, nn
from torch.nn import functional as F

import zoo
from zoo.swapping import Adapter, SwapTarget, call_layer, keep_mask

from .linears import linear_like, weights_of


class _MemoLinear(nn.Linear):
    """``nn.Linear`` that returns its last output again for the same, unchanged input
    while memoising is on (same parameters and state-dict keys as ``nn.Linear``).

    "Unchanged" covers the input and the weights: the same tensor objects at the same
    version counters (an in-place write, ``load_state_dict`` or an optimizer step
    bumps them)."""

    _zoo_memo_on = False
    _zoo_memo = None

    def _memo_key(self, x: Tensor) -> tuple:
        return (x._version, *((p, p._version) for p in (self.weight, self.bias) if p is not None))

    def forward(self, x: Tensor) -> Tensor:
        memo = self._zoo_memo
        if memo is not None and memo[0] is x and _same_key(memo[1], self._memo_key(x)):
            return memo[2]
        out = F.linear(x, self.weight, self.bias)
        if self._zoo_memo_on:
            self._zoo_memo = (x, self._memo_key(x), out)
        return out


def _same_key(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and a[0] == b[0] and all(p is q and v == w for (p, v), (q, w) in zip(a[1:], b[1:]))


# The names transformers has given the argument that carries the key/value cache.
CACHE_ARGUMENTS = ("cache", "past_key_values", "past_key_value")
# Every named argument of a replaced module's forward that the wrapper knows what to do with.
KNOWN_ARGUMENTS = {"hidden_states", "key_value_states", "encoder_hidden_states", "attention_mask",
                   "encoder_attention_mask", "output_attentions", "layer_head_mask", "cache_position",
                   "position_embeddings", *CACHE_ARGUMENTS}


def calling_convention(module: nn.Module) -> tuple[str | None, str | None]:
    """``(cache argument, problem)`` for a transformers attention module's ``forward``.

    The problem (else ``None``) names the transformers version and what is unknown: an
    argument the wrapper would not understand, or no (or more than one) cache argument.
    """
    params = inspect.signature(type(module).forward).parameters
    named = [n for n, p in params.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    caches = [n for n in named if n in CACHE_ARGUMENTS]
    unknown = [n for n in named if n not in KNOWN_ARGUMENTS]
    if len(caches) == 1 and not unknown:
        return caches[0], None
    import transformers

    what = (f"arguments {unknown} this adapter does not know" if unknown
            else f"{'no' if not caches else 'more than one'} cache argument (known: {', '.join(CACHE_ARGUMENTS)})")
    return None, (f"transformers {transformers.__version__}: {type(module).__name__}.forward"
                  f"({', '.join(named)}) has {what}; the zoo's adapter cannot promise the same model and "
                  f"its decoding speed: use a transformers version in attention-zoo's tested range "
                  f"(constraints.txt) or report it")


class SwappedTransformersAttention(nn.Module):
    """A zoo layer behind the call signature of transformers' attention modules.

    Accepts ``(hidden_states, ...)`` with the context as ``key_value_states`` (BART
    family) or ``encoder_hidden_states`` (BERT family), ``attention_mask`` (2-D,
    or the 4-D additive or bool masks transformers prepares) and ``past_key_values``;
    returns ``(output, None)`` (no attention weights).

    Args:
        layer: the zoo layer.
    """

    reuse_encoder_kv: bool = True
    """Reuse the projections of the encoder states across decoding steps (set False to
    recompute them at every step, e.g. to measure what the reuse saves)."""

    def __init__(self, layer: nn.Module, cache_argument: str = "cache", kind: str = "cross") -> None:
        super().__init__()
        self.layer = layer
        self.cache_argument = cache_argument
        self.kind = kind
        memo = []
        for module in layer.modules():
            if type(module) is nn.Linear and kind == "cross":
                module.__class__ = _MemoLinear
                memo.append(module)
        self._memo_linears = tuple(memo)  # a plain tuple: not registered twice, copied by deepcopy
        self._memo_owner = None  # weakref to the cache of the generation the memo belongs to

    def _memoise(self, cache) -> None:
        """Memoise for ``cache``'s generation (``None``: off, and forget everything)."""
        owner = self._memo_owner() if self._memo_owner is not None else None
        if cache is not None and owner is cache:
            return
        _forget(self._memo_linears)
        self._memo_owner = None
        if cache is not None:
            # the memo lives as long as the generation's cache, and no longer
            linears = self._memo_linears
            self._memo_owner = weakref.ref(cache, lambda _, linears=linears: _forget(linears))
            for module in linears:
                module._zoo_memo_on = True

    def forward(self, hidden_states: Tensor, key_value_states: Tensor | None = None,
                attention_mask: Tensor | None = None, encoder_hidden_states: Tensor | None = None,
                **kwargs) -> tuple[Tensor, None]:
        context = key_value_states if key_value_states is not None else encoder_hidden_states
        if self.kind == "self":
            if context is not None or kwargs.get(self.cache_argument) is not None:
                raise ValueError("a zoo-swapped encoder self-attention module takes neither encoder states nor a "
                                 "key/value cache (it replaced non-causal, uncached self-attention)")
            mask = keep_mask(attention_mask, batch=hidden_states.shape[0], length=hidden_states.shape[1])
            return call_layer(self.layer, hidden_states, None, mask), None
        if context is None:
            raise ValueError("a zoo-swapped cross-attention module needs the encoder states "
                             "(key_value_states or encoder_hidden_states), got None")
        cache = kwargs.get(self.cache_argument)
        reuse = self.reuse_encoder_kv and cache is not None and not torch.is_grad_enabled()
        self._memoise(cache if reuse else None)
        mask = keep_mask(attention_mask, batch=context.shape[0], length=context.shape[1],
                         name="encoder attention_mask")
        return call_layer(self.layer, hidden_states, context, mask), None


def _forget(linears: tuple[_MemoLinear, ...]) -> None:
    for module in linears:
        module._zoo_memo_on = False
        module._zoo_memo = None


def _from_transformers(module: nn.Module) -> bool:
    return type(module).__module__.startswith("transformers.")


_CAUSAL = ("causal self-attention with a key/value cache (a decoder's): no zoo layer keeps a decoding cache")


def _dropout_note(p: float) -> tuple[str, ...]:
    return (f"attention-probability dropout p={p} is not reproduced (no zoo layer has it)",) if p else ()


class BartFamilyAdapter(Adapter):
    """Recognises attention modules with ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``:
    ``encoder_attn`` is cross-attention; other (self-)attention is swapped when it is
    neither causal nor cached (an encoder's), and reported as causal otherwise."""

    name = "transformers-bart"

    def match(self, path: str, module: nn.Module) -> SwapTarget | None:
        if not _from_transformers(module):
            return None
        lins = {n: getattr(module, a, None) for n, a in
                (("to_q", "q_proj"), ("to_k", "k_proj"), ("to_v", "v_proj"), ("to_out.0", "out_proj"))}
        if not all(map(linear_like, lins.values())) or not hasattr(module, "num_heads"):
            return None
        q, k, v, o = (getattr(lin, "base_layer", lin) for lin in lins.values())
        kind = "cross" if path.rsplit(".", 1)[-1] == "encoder_attn" else "self"
        causal = kind == "self" and bool(getattr(module, "is_causal", False) or getattr(module, "is_decoder", False))
        heads = module.num_heads
        dim_head = q.out_features // heads
        cache_argument, convention = calling_convention(module)
        bias = any(lin.bias is not None for lin in (q, k, v))
        attrs = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out.0": "out_proj"}
        weights, notes, problems = weights_of({n: (f"{path}.{attrs[n]}", lin) for n, lin in lins.items()}, bias)
        problem = None
        if causal:
            problem = _CAUSAL
        elif convention:
            problem = convention
        elif abs(getattr(module, "scaling", dim_head ** -0.5) - dim_head ** -0.5) > 1e-12:
            problem = f"scaling {module.scaling} is not dim_head**-0.5; a zoo layer has no other scale"
        elif k.out_features != q.out_features or o.out_features != q.in_features:
            problem = "key/value heads or output width differ from the queries'"
        elif problems:
            problem = "; ".join(problems)
        p = q.weight
        return SwapTarget(
            kind=kind, query_dim=q.in_features, context_dim=k.in_features, heads=heads, dim_head=dim_head,
            bias=bias, out_bias=o.bias is not None, weights=weights, causal=causal,
            problem=problem, notes=_dropout_note(getattr(module, "dropout", 0.0)) + tuple(notes),
            dtype=p.dtype, device=p.device, training=module.training,
            wrap=functools.partial(SwappedTransformersAttention, cache_argument=cache_argument, kind=kind),
        )


class BertFamilyAdapter(Adapter):
    """Recognises BERT-family attention cores (``query``, ``key``, ``value``; no output
    projection): ``crossattention.self`` is cross-attention; self-attention is swapped
    when it is neither causal nor cached (an encoder's: ``BertModel`` and models built on
    it), and reported as causal otherwise (``is_decoder``)."""

    name = "transformers-bert"

    def match(self, path: str, module: nn.Module) -> SwapTarget | None:
        if not _from_transformers(module):
            return None
        lins = {n: getattr(module, a, None) for n, a in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"))}
        if not all(map(linear_like, lins.values())) or not hasattr(module, "num_attention_heads"):
            return None
        q, k, v = (getattr(lin, "base_layer", lin) for lin in lins.values())
        cross = type(module).__name__.endswith("CrossAttention") or path.endswith("crossattention.self")
        causal = not cross and bool(getattr(module, "is_causal", False) or getattr(module, "is_decoder", False))
        heads = module.num_attention_heads
        dim_head = q.out_features // heads
        cache_argument, convention = calling_convention(module)
        attrs = {"to_q": "query", "to_k": "key", "to_v": "value"}
        weights, notes, problems = weights_of({n: (f"{path}.{attrs[n]}", lin) for n, lin in lins.items()}, True)
        problem = None
        if causal:
            problem = _CAUSAL
        elif convention:
            problem = convention
        elif getattr(module, "position_embedding_type", "absolute") != "absolute":
            problem = f"relative position scores ({module.position_embedding_type}) have no zoo counterpart"
        elif k.out_features != q.out_features:
            problem = "key/value width differs from the queries'"
        elif abs(getattr(module, "scaling", dim_head ** -0.5) - dim_head ** -0.5) > 1e-12:
            problem = f"scaling {module.scaling} is not dim_head**-0.5; a zoo layer has no other scale"
        elif problems:
            problem = "; ".join(problems)
        p = q.weight
        weights["to_out.0.weight"] = torch.eye(q.out_features, dtype=p.dtype, device=p.device)
        dropout = getattr(getattr(module, "dropout", None), "p", 0.0)
        kind = "cross" if cross else "self"
        return SwapTarget(
            kind=kind, query_dim=q.in_features, context_dim=k.in_features,
            heads=heads, dim_head=dim_head, bias=True, out_bias=False, weights=weights, problem=problem,
            causal=causal, zero_init=("to_out.0.bias",),
            notes=("to_out.0 set to the identity: the attention block's output module (dense, dropout, "
                   "residual, LayerNorm) is kept and stays the output projection",
                   *_dropout_note(dropout), *notes),
            dtype=p.dtype, device=p.device, training=module.training,
            wrap=functools.partial(SwappedTransformersAttention, cache_argument=cache_argument, kind=kind),
        )


@zoo.hookimpl
def zoo_register_adapters(register):
    register(BartFamilyAdapter())
    register(BertFamilyAdapter())

"""Layers broken on purpose, one bug each, to prove the harness catches every bug with
the check meant for it.

:class:`Sound` re-implements ``cross`` in small overridable steps (validate, project,
attend, output) and passes every check; each ``Broken*`` class overrides one step.
:data:`PLANTED` maps a short bug name to ``(spec, check id that must fail)``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

import zoo
from attention_zoo_plugins.variants.cross import SPEC as CROSS, CrossAttention, CrossConfig
from zoo.functional import merge_heads, split_heads


class Sound(CrossAttention):
    """``cross`` again, in steps a broken subclass can override (a control: passes all)."""

    def validate(self, x, context, context_mask):
        return self.check_context(x, context, context_mask)

    def project(self, x, c):
        return (split_heads(self.to_q(x), self.heads), split_heads(self.to_k(c), self.heads),
                split_heads(self.to_v(c), self.heads))

    def scores(self, q, k):
        return (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])

    def attend(self, q, k, v, mask):
        s = self.scores(q, k)
        if mask is None:
            return torch.softmax(s, dim=-1) @ v
        keep = mask[:, None, None, :]  # (B, 1, 1, M)
        empty = ~mask.any(-1)[:, None, None, None]
        s = s.masked_fill(~keep, float("-inf")).masked_fill(empty, 0.0)
        return (torch.softmax(s, dim=-1) @ v).masked_fill(empty, 0.0)

    def output(self, o):
        return self.to_out[1](self.to_out[0](merge_heads(o)))

    def forward(self, x, context=None, *, context_mask=None):
        c = self.validate(x, context, context_mask)
        q, k, v = self.project(x, c)
        return self.output(self.attend(q, k, v, context_mask))


class BrokenNoScale(Sound):
    """Forgets the 1/sqrt(d) scale."""

    def scores(self, q, k):
        return q @ k.transpose(-1, -2)


class BrokenIgnoresMask(Sound):
    """Attends to masked context elements as well."""

    def attend(self, q, k, v, mask):
        return super().attend(q, k, v, None)


class BrokenKVFromX(Sound):
    """Takes K and V from x instead of the context (needs query_dim == context_dim)."""

    def project(self, x, c):
        return super().project(x, x)

    def attend(self, q, k, v, mask):
        if mask is not None and mask.shape[-1] != k.shape[-2]:
            mask = None  # the context's mask no longer fits the keys
        return super().attend(q, k, v, mask)


class BrokenSoftmaxAxis(Sound):
    """Normalises over the queries (dim -2) instead of the keys."""

    def attend(self, q, k, v, mask):
        s = self.scores(q, k)
        if mask is not None:
            s = s.masked_fill(~mask[:, None, None, :], -1e4)
        return torch.softmax(s, dim=-2) @ v


class BrokenBatchMixing(Sound):
    """Leaks keys across the batch (a roll along the batch axis)."""

    def project(self, x, c):
        q, k, v = super().project(x, c)
        return q, k + 0.5 * k.roll(1, dims=0), v


class BrokenDropoutInEval(Sound):
    """Applies its dropout whether training or not."""

    def output(self, o):
        return F.dropout(self.to_out[0](merge_heads(o)), self.to_out[1].p, training=True)


class BrokenDropoutNeverActs(Sound):
    """Never applies its dropout."""

    def output(self, o):
        return self.to_out[0](merge_heads(o))


class BrokenDetachedParam(Sound):
    """Cuts to_k.weight off from the gradient."""

    def project(self, x, c):
        q, _, v = super().project(x, c)
        k = F.linear(c, self.to_k.weight.detach(), self.to_k.bias)
        return q, split_heads(k, self.heads), v


class BrokenNaNOnMaskedRows(Sound):
    """The textbook masked_fill(-inf) softmax: a fully masked row becomes NaN."""

    def attend(self, q, k, v, mask):
        s = self.scores(q, k)
        if mask is not None:
            s = s.masked_fill(~mask[:, None, None, :], float("-inf"))
        return torch.softmax(s, dim=-1) @ v


class BrokenEmptyRowsAttendAll(Sound):
    """A fully masked row attends to everything (finite, but not a zero attention term)."""

    def attend(self, q, k, v, mask):
        if mask is not None:
            mask = mask | ~mask.any(-1, keepdim=True)
        return super().attend(q, k, v, mask)


class BrokenWrongShape(Sound):
    """Drops the last query position from the output."""

    def forward(self, x, context=None, *, context_mask=None):
        out = super().forward(x, context, context_mask=context_mask)
        return out[:, :-1] if out.shape[1] > 1 else out[:, :, :-1]


class BrokenWrongDtype(Sound):
    """Always returns float32."""

    def forward(self, x, context=None, *, context_mask=None):
        return super().forward(x, context, context_mask=context_mask).float()


class BrokenStateDict(Sound):
    """Keeps a random gain as a plain tensor attribute: not in the state dict."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gain = torch.rand(self.query_dim) + 0.5

    def _apply(self, fn, recurse=True):
        self.gain = fn(self.gain)
        return super()._apply(fn, recurse)

    def output(self, o):
        return super().output(o) * self.gain


class BrokenQueryPositions(Sound):
    """Adds a position signal to the queries."""

    def project(self, x, c):
        pos = torch.arange(x.shape[1], dtype=x.dtype, device=x.device)[None, :, None] / x.shape[1]
        _, k, v = super().project(x, c)
        return split_heads(self.to_q(x + pos), self.heads), k, v


class BrokenContextPositions(Sound):
    """Adds a position signal to the context tokens."""

    def project(self, x, c):
        pos = torch.arange(c.shape[1], dtype=c.dtype, device=c.device)[None, :, None] / c.shape[1]
        return super().project(x, c + pos)


class BrokenNoValidation(Sound):
    """Validates nothing: a wrong feature size crashes deep inside torch."""

    def validate(self, x, context, context_mask):
        return x if context is None else context


class ExcludedHeadsConfig(CrossConfig):
    """A config whose ``heads`` is left out of serialisation: it does not round-trip."""

    variant: Literal["cross"] = "cross"
    heads: int = Field(8, gt=0, exclude=True)


class BrokenSwallowsNaN(Sound):
    """Replaces NaN/inf in x by finite numbers (a fused kernel's behaviour leaking)."""

    def forward(self, x, context=None, *, context_mask=None):
        return super().forward(torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0), context,
                               context_mask=context_mask)


class BrokenAllNaN(Sound):
    """Validates its input, then returns NaN everywhere: no check that looks at an output may pass."""

    def forward(self, x, context=None, *, context_mask=None):
        return torch.full_like(super().forward(x, context, context_mask=context_mask), float("nan"))


class BrokenCompile(Sound):
    """Computes something else when traced by torch.compile."""

    def output(self, o):
        out = super().output(o)
        if torch.compiler.is_compiling():
            out = out * 1.5
        return out


class BrokenBatchStatistics(Sound):
    """Normalises by a statistic of the whole batch (breaks batch independence and DDP)."""

    def output(self, o):
        out = super().output(o)
        return out / (1.0 + out.detach().pow(2).mean().sqrt())


class BrokenCachedWeight(Sound):
    """Keeps its own reference to ``to_q.weight`` (in a list, so not a registered
    parameter) and projects with it. One process: the same tensor, correct. Under FSDP2,
    ``fully_shard`` swaps the registered parameter for a sharded one; the cached tensor is
    neither gathered nor updated, so training silently uses a stale weight."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._cached_q = [self.to_q.weight]

    def project(self, x, c):
        _, k, v = super().project(x, c)
        return split_heads(F.linear(x, self._cached_q[0], self.to_q.bias), self.heads), k, v


EQUAL_DIMS = ({"query_dim": 16, "heads": 2, "dim_head": 8, "bias": True, "dropout": 0.25},)


def spec(cls, **changes) -> zoo.VariantSpec:
    """``cross``'s spec with ``module=cls`` (unregistered: the harness checks it as given)."""
    return CROSS.replace(module=cls, plugin=None, distribution=None, **changes)


def _failing_law(spec_, fields, generator):
    raise AssertionError("deliberately false")


# bug name -> (spec, the check id that must fail)
PLANTED: dict[str, tuple[zoo.VariantSpec, str]] = {
    "missing-scale": (spec(BrokenNoScale), "oracle-forward"),
    "ignored-mask": (spec(BrokenIgnoresMask), "mask"),
    "kv-from-x": (spec(BrokenKVFromX, examples=EQUAL_DIMS), "oracle-forward"),
    "softmax-wrong-axis": (spec(BrokenSoftmaxAxis), "oracle-forward"),
    "batch-mixing": (spec(BrokenBatchMixing), "batch-independence"),
    "batch-statistics": (spec(BrokenBatchStatistics), "batch-independence"),
    "dropout-in-eval": (spec(BrokenDropoutInEval), "eval-determinism"),
    "dropout-never-acts": (spec(BrokenDropoutNeverActs), "dropout"),
    "detached-parameter": (spec(BrokenDetachedParam), "oracle-grad"),
    "nan-on-masked-rows": (spec(BrokenNaNOnMaskedRows), "masked-rows"),
    "empty-rows-attend-all": (spec(BrokenEmptyRowsAttendAll), "masked-rows"),
    "wrong-output-shape": (spec(BrokenWrongShape), "shape"),
    "wrong-output-dtype": (spec(BrokenWrongDtype), "shape"),
    "state-not-in-state-dict": (spec(BrokenStateDict), "state-dict"),
    "config-not-round-tripping": (spec(Sound, config=ExcludedHeadsConfig), "config-roundtrip"),
    "query-positions": (spec(BrokenQueryPositions), "query-order"),
    "context-positions": (spec(BrokenContextPositions), "context-order"),
    "no-input-validation": (spec(BrokenNoValidation), "bad-input"),
    "nan-swallowed": (spec(BrokenSwallowsNaN), "nonfinite-input"),
    "false-law": (spec(Sound, laws=(zoo.Law("always-false", "a law that never holds", _failing_law),)),
                  "law:always-false"),
}

# Bugs only the slow checks see.
PLANTED_SLOW: dict[str, tuple[zoo.VariantSpec, str]] = {
    "differs-under-compile": (spec(BrokenCompile), "compile"),
    "batch-statistics-under-ddp": (spec(BrokenBatchStatistics), "ddp"),
    "cached-weight-under-fsdp": (spec(BrokenCachedWeight), "fsdp"),
}

SOUND = spec(Sound)


class BrokenCountsPadding(Sound):
    """Sigmoid attention with bias -log M, where M counts the masked padding too: every check
    but masked-padding passes it (the mask does hide the padded values)."""

    def attend(self, q, k, v, mask):
        w = torch.sigmoid(self.scores(q, k) - math.log(k.shape[-2]))
        if mask is not None:
            w = w * mask[:, None, None, :].to(w.dtype)
        return w @ v


PLANTED["counts-padding"] = (spec(BrokenCountsPadding), "masked-padding")


class ScalarGate(Sound):
    """Correct, with a 0-dim learned gate (as a tanh gate often is): FSDP2's ``fully_shard``
    refuses 0-dim parameters, so the fsdp check must skip it with the reason, not fail it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = torch.nn.Parameter(torch.zeros(()))

    def forward(self, *args, **kwargs):
        return super().forward(*args, **kwargs) * (1 + self.gate)

"""The attention-pattern picture of any variant: what to draw, and the drawing."""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.harness.capabilities import resolve_capabilities
from zoo.spec import VariantSpec

__all__ = ["Pattern", "PictureExample", "attention_pattern", "render_pattern"]


@dataclass
class Pattern:
    """A matrix to draw: ``values (rows, cols)`` with axis labels and a caption."""

    kind: str  # "attention", "influence" or "modulation" (signed, no attention)
    values: Any
    row_labels: list[str]
    col_labels: list[str]
    title: str
    caption: str
    xlabel: str = "context tokens (c)"
    ylabel: str = "query tokens (x)"


@dataclass(frozen=True)
class PictureExample:
    """Hand-made inputs to draw every variant on (the docs pass their worked example).

    A variant whose config takes ``config`` and whose layer accepts these inputs is drawn
    on them, with ``weights`` loaded into the parameters of the same name and shape;
    any other variant is drawn on its own ``make_inputs``.

    Attributes:
        x: ``(1, N, Dq)`` queries; ``row_labels`` name its N tokens.
        context: ``(1, M, Dc)``; ``col_labels`` name its M tokens.
        config: config overrides (only the fields a variant's config has are used).
        weights: parameter name -> tensor in the module's layout (``to_q.weight`` ...).
        aligned_context, aligned_labels: a context of N tokens for variants that need
            ``N == M`` (``Capabilities.equal_lengths``).
        description: how the caption names these inputs.
    """

    x: Any
    context: Any
    row_labels: tuple[str, ...]
    col_labels: tuple[str, ...]
    config: Mapping[str, Any] = field(default_factory=dict)
    weights: Mapping[str, Any] = field(default_factory=dict)
    aligned_context: Any = None
    aligned_labels: tuple[str, ...] = ()
    description: str = "a hand-made example"


def _build_for_picture(spec: VariantSpec, example: PictureExample | None
                       ) -> tuple[Any, dict[str, Any], list[str], list[str], str]:
    """The layer and inputs of the picture: ``example`` where the variant accepts it,
    else the variant's own ``make_inputs`` on its first example config."""
    import torch

    import zoo

    fields = spec.config.model_fields
    if example is not None:
        overrides = {k: v for k, v in example.config.items() if k in fields}
        if "dropout" in fields:
            overrides["dropout"] = 0.0
        aligned = resolve_capabilities(spec).equal_lengths
        torch.manual_seed(0)
        try:
            layer = zoo.create(spec, **overrides).double().eval()
            _load_weights(layer, example.weights)
            _randomise_zeros(layer)
            if aligned:
                if example.aligned_context is None:
                    raise ValueError("the example has no aligned context")
                inputs, words = {"x": example.x, "context": example.aligned_context}, list(example.aligned_labels)
            else:
                inputs, words = {"x": example.x, "context": example.context}, list(example.col_labels)
            inputs = {k: v.double() for k, v in inputs.items()}
            with torch.no_grad():
                layer(**inputs)
            source = (f"{example.description}, with one context token per query (this variant needs N = M)"
                      if aligned else example.description)
            return layer, inputs, list(example.row_labels), words, source
        except Exception:  # noqa: BLE001 - the variant needs inputs of its own kind
            pass
    torch.manual_seed(0)
    config = dict(spec.example_configs()[0])
    if "dropout" in fields:
        config["dropout"] = 0.0
    layer = zoo.create(spec, **config).double().eval()
    _randomise_zeros(layer)
    gen = torch.Generator().manual_seed(0)
    inputs = _small_inputs(spec, layer, gen)
    x = inputs["x"]
    ctx = inputs.get("context")
    rows = [f"x{i}" for i in range(x.shape[1])]
    cols = [] if ctx is None else _context_labels(ctx)
    return layer, inputs, rows, cols, "random inputs from the variant's make_inputs"


def _small_inputs(spec: VariantSpec, layer: Any, gen: Any) -> dict[str, Any]:
    import torch

    last: Exception | None = None
    for query_len, context_len in ((8, 3), (12, 3), (16, 4), (32, 4), (64, 4)):
        try:
            inputs = spec.make_inputs(layer, batch=1, query_len=query_len, context_len=context_len,
                                      generator=gen, dtype=torch.float64)
            with torch.no_grad():
                layer(**inputs)
            return inputs
        except Exception as exc:  # noqa: BLE001
            last = exc
    raise RuntimeError(f"could not build small inputs for {spec.name!r}: {last}")


def _context_labels(ctx: Any) -> list[str]:
    import itertools

    lead = list(ctx.shape[1:-1])
    if len(lead) == 1:
        return [f"c{i}" for i in range(lead[0])]
    return ["c[" + ",".join(map(str, idx)) + "]" for idx in itertools.product(*map(range, lead))]


def _load_weights(layer: Any, weights: Mapping[str, Any]) -> None:
    """Copy ``weights`` into the parameters of the same name where the shapes match."""
    import torch

    params = dict(layer.named_parameters())
    with torch.no_grad():
        for name, w in weights.items():
            p = params.get(name)
            if p is not None and tuple(p.shape) == tuple(w.shape):
                p.copy_(w)


def _randomise_zeros(layer: Any) -> None:
    """Zero-initialised parameters (FiLM's generator, a tanh gate) make the picture
    blank: give them small random values, so the pattern shows what the layer can do."""
    import torch

    with torch.no_grad():
        for p in layer.parameters():
            if p.numel() and bool((p == 0).all()):
                p.copy_(0.5 * torch.randn_like(p))


def _capture_sdpa(layer: Any, inputs: dict[str, Any]) -> list[tuple[Any, Any, Any]]:
    """``(q, k, attn_mask, scale)`` of every ``scaled_dot_product_attention`` call in a forward."""
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    calls: list = []

    class Capture(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is F.scaled_dot_product_attention:
                names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")
                bound = dict(zip(names, args)) | kwargs
                calls.append((bound["query"].detach(), bound["key"].detach(),
                              bound.get("attn_mask"), bound.get("scale"), bool(bound.get("is_causal"))))
            return func(*args, **kwargs)

    with torch.no_grad(), Capture():
        layer(**inputs)
    return calls


def _probs(q: Any, k: Any, mask: Any, scale: Any, causal: bool) -> Any:
    import torch

    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q @ k.transpose(-1, -2)) * scale
    if causal:
        n, m = scores.shape[-2:]
        scores = scores.masked_fill(~torch.ones(n, m, dtype=torch.bool).tril(), float("-inf"))
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    return torch.softmax(scores, dim=-1).nan_to_num(0.0)


def attention_pattern(spec: VariantSpec, example: PictureExample | None = None) -> Pattern:
    """What to draw for ``spec``.

    For a variant that computes softmax attention through
    ``torch.nn.functional.scaled_dot_product_attention`` with one score matrix of
    ``N`` query rows, the attention probabilities ``softmax(s Q K^T)`` recomputed
    from the captured ``Q`` and ``K`` (averaged over heads; keys observed not to move
    when the context does are labelled ``fixed``). Without attention
    (``capabilities.attention`` False) the change ``y - x``; otherwise (several score
    matrices, other shapes) the influence of each context token on each output token,
    ``|d y_n / d c_m|`` normalised per row. Captions say only what the spec declares
    or the picture observes.

    Drawn on ``example`` where the variant accepts it, else on its own ``make_inputs``.
    """
    import torch

    layer, inputs, rows, cols, source = _build_for_picture(spec, example)
    x, ctx = inputs["x"], inputs.get("context")
    n = x.shape[1]
    calls = _capture_sdpa(layer, inputs) if resolve_capabilities(spec).attention else []
    if len(calls) == 1 and calls[0][0].ndim == 4 and calls[0][0].shape[-2] == n and ctx is not None:
        q, k, mask, scale, causal = calls[0]
        probs = _probs(q, k, mask, scale, causal)[0].mean(0)  # (N, M')
        # which keys come from the context? perturb it and see which keys move
        other = dict(inputs, context=ctx + 1.0)
        k2 = _capture_sdpa(layer, other)[0][1]
        moved = ((k2 - k).abs().amax(dim=(0, 1, 3)) > 0).tolist()
        ctx_iter = iter(cols)
        labels, mem = [], 0
        for m in moved:
            if m:
                labels.append(next(ctx_iter, "c?"))
            else:
                labels.append(f"fixed {mem}")
                mem += 1
        heads = q.shape[1]
        caption = (f"Attention probabilities softmax(QK^T/sqrt(d)) of `{spec.name}` on {source}, "
                   f"{'averaged over its ' + str(heads) + ' heads' if heads > 1 else 'one head'}; "
                   "each row sums to 1.")
        if mem:
            caption += f" The {mem} `fixed` columns are keys the layer holds itself: they do not move with the context."
        return Pattern("attention", probs, rows, labels, f"{spec.name}: attention probabilities", caption)
    if ctx is None:
        raise RuntimeError(f"{spec.name!r}: no context to draw a pattern against")
    ctx = ctx.detach().clone()
    if not resolve_capabilities(spec).attention:
        with torch.no_grad():
            delta = (layer(**inputs) - x)[0]  # (N, Dq)
        feats = ["R", "G", "B"] if delta.shape[-1] == 3 else [f"f{i}" for i in range(delta.shape[-1])]
        caption = (f"`{spec.name}` has no attention matrix: no query chooses among context tokens. "
                   f"Shown instead is what the pooled context does to each query, the change "
                   f"y - x per token and feature on {source} (parameters that start at zero "
                   f"are given random values here, so the picture shows what the layer can do).")
        return Pattern("modulation", delta, rows, feats, f"{spec.name}: change y - x", caption,
                       xlabel="features of x", ylabel="query tokens (x)")

    def f(c):
        return layer(**dict(inputs, context=c))

    jac = torch.autograd.functional.jacobian(f, ctx)  # (B, N, Dq, B, *ctx_lead, Dc)
    j = jac[0, :, :, 0]  # (N, Dq, *lead, Dc)
    j = j.reshape(n, j.shape[1], -1, j.shape[-1])
    infl = j.pow(2).sum(dim=(1, 3)).sqrt()  # (N, tokens)
    infl = infl / infl.sum(-1, keepdim=True).clamp_min(1e-30)
    caption = (f"`{spec.name}` does not expose a single N x M attention matrix; shown instead is how "
               f"strongly each context token influences each output token, |dy_n/dc_m| normalised "
               f"per row, on {source}.")
    if resolve_capabilities(spec).chunk_causal:
        caption += (" Zero cells show its declared chunk causality (capabilities.chunk_causal): no position "
                    "sees the context of a later chunk.")
    lead = ctx.shape[1:-1]
    shape = (spec.context_shape or str(tuple(ctx.shape))).split(":")[0].strip()  # the shape, not its gloss
    xlabel = ("context tokens (c)" if len(lead) == 1
              else f"context tokens c[{', '.join(f'i{k}' for k in range(len(lead)))}], flattened\n"
                   f"(the context is {shape if len(shape) <= 40 else str(tuple(ctx.shape))})")
    return Pattern("influence", infl, rows, cols, f"{spec.name}: influence of context on output", caption,
                   xlabel=xlabel)


#: The widest picture, in pixels: the docs' content column, so a page never shrinks it
#: (and its 9-point labels) to fit.
MAX_WIDTH_PX = 680
_DPI = 110


def render_pattern(spec: VariantSpec, path: str | Path | None = None,
                   example: PictureExample | None = None) -> tuple[bytes, Pattern]:
    """Draw :func:`attention_pattern` as a labelled heatmap (matplotlib, Agg backend).

    The picture is at most :data:`MAX_WIDTH_PX` wide, so the page shows it at its own
    size: many columns get narrower cells and vertical labels, never smaller type.

    Returns the PNG bytes (also written to ``path`` when given) and the pattern.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    pat = attention_pattern(spec, example)
    values = pat.values.detach().double().cpu().numpy()
    rows, cols = values.shape
    width = min(MAX_WIDTH_PX / _DPI, max(4.8, 1.8 + 0.45 * cols))
    height = min(7.0, max(3.0, 1.8 + 0.4 * rows))
    fig = Figure(figsize=(width, height), dpi=_DPI)
    ax = fig.add_subplot()
    if pat.kind == "modulation":
        lim = max(float(abs(values).max()), 1e-12)
        im = ax.imshow(values, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    else:
        im = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=max(float(values.max()), 1e-12), aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if cols <= 40:
        ax.set_xticks(range(cols), labels=pat.col_labels[:cols], rotation=90 if cols > 8 else 0,
                      ha="center", fontsize=9)
    if rows <= 40:
        ax.set_yticks(range(rows), labels=pat.row_labels[:rows], fontsize=9)
    if rows * cols <= 64:
        for i in range(rows):
            for j in range(cols):
                v = values[i, j]
                light = abs(v) < 0.6 * abs(values).max() if pat.kind == "modulation" else v > 0.6 * values.max()
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if light else "white")
    ax.set_xlabel(pat.xlabel)
    ax.set_ylabel(pat.ylabel)
    ax.set_title(pat.title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data, pat

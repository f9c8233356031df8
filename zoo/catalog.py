"""The variant catalog: documentation pages generated from the registry.

Everything the catalog shows comes from a variant's :class:`zoo.VariantSpec`, its
config model, the shared harness and the benchmark results, so the pages cannot
drift from the code. The docs build (``docs/hooks.py``) calls :func:`build_catalog`
once per build and serves the pages from memory; nothing generated is committed.

Functions:
    index_markdown: the catalog's index page (one table row per variant).
    variant_markdown: one variant's page.
    render_pattern: the attention-pattern picture of a variant on the worked example.
    build_catalog: all of the above for every registered variant, as ``{path: content}``.
"""

from __future__ import annotations

import html
import inspect
import io
import json
import math
import textwrap
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.spec import VariantSpec

__all__ = [
    "CATALOG_DIR",
    "HarnessSummary",
    "Pattern",
    "WorkedExample",
    "attention_pattern",
    "bench_ratios",
    "bench_table",
    "build_catalog",
    "config_table",
    "harness_summary",
    "hook_signature",
    "index_markdown",
    "page_path",
    "render_pattern",
    "runnable_example",
    "variant_markdown",
    "worked_example",
    "worked_example_markdown",
]

CATALOG_DIR = "catalog"
NOT_MEASURED = "not measured"


def page_path(name: str) -> str:
    """Where a variant's page lives in the docs: ``catalog/<name>.md``."""
    return f"{CATALOG_DIR}/{name}.md"


def _image_name(name: str) -> str:
    return f"{name}-pattern.png"


# ---------------------------------------------------------------------------
# small markdown helpers
# ---------------------------------------------------------------------------


def _cell(value: Any) -> str:
    """A markdown table cell: one line, pipes escaped, HTML escaped."""
    text = " ".join(str(value).split())
    return html.escape(text, quote=False).replace("|", "\\|")


def _code(value: Any) -> str:
    # pipes inside a code span do not split a table cell (and a backslash would show)
    text = " ".join(str(value).split()).replace("`", "'")
    return f"`{text}`" if text else ""


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _type_name(annotation: Any) -> str:
    """``int | None`` style names for config field annotations."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(annotation, "__name__", str(annotation))


_OPS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "multiple_of": "multiple of",
        "min_length": "min length", "max_length": "max length"}


def _constraint(meta: Any) -> str:
    for attr, op in _OPS.items():
        if hasattr(meta, attr) and getattr(meta, attr) is not None:
            return f"{op} {getattr(meta, attr)}"
    return str(meta)


def config_table(config: type) -> list[tuple[str, str, str, str]]:
    """``(field, type, default, description)`` for every config field but ``variant``."""
    rows = []
    for name, f in config.model_fields.items():
        if name == "variant":
            continue
        default = "required" if f.is_required() else repr(f.get_default(call_default_factory=True))
        constraints = [_constraint(m) for m in f.metadata]
        description = f.description or ""
        if constraints:
            description = (description + " " if description else "") + "(" + ", ".join(constraints) + ")"
        rows.append((name, _type_name(f.annotation), default, description))
    return rows


def hook_signature(func: Any) -> str:
    """A hook's signature as written in its source, e.g.
    ``zoo_register_variants(register: Callable[[VariantSpec], None]) -> None``."""
    sig = inspect.signature(func)

    def ann(a: Any) -> str:
        return a if isinstance(a, str) else inspect.formatannotation(a)

    params = []
    for p in sig.parameters.values():
        text = p.name
        if p.annotation is not inspect.Parameter.empty:
            text += f": {ann(p.annotation)}"
        params.append(text)
    ret = "" if sig.return_annotation is inspect.Signature.empty else f" -> {ann(sig.return_annotation)}"
    return f"{func.__name__}({', '.join(params)}){ret}"


# ---------------------------------------------------------------------------
# harness and benchmark results
# ---------------------------------------------------------------------------


@dataclass
class HarnessSummary:
    """What the shared harness said about one variant (or why it could not say)."""

    available: bool
    passed: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    results: list[tuple[str, str, str]] = field(default_factory=list)
    note: str = ""

    @property
    def short(self) -> str:
        """``"34/34 passed"``, ``"2 failed"`` or ``"not available"`` for the index."""
        if not self.available:
            return "not available"
        ran = self.counts.get("passed", 0) + self.counts.get("failed", 0)
        text = f"{self.counts.get('passed', 0)}/{ran} passed"
        if self.counts.get("failed"):
            text += f", {self.counts['failed']} failed"
        if self.counts.get("skipped"):
            text += f", {self.counts['skipped']} skipped"
        return text


def harness_summary(spec: VariantSpec) -> HarnessSummary:
    """Run the shared harness (:func:`zoo.check`) on ``spec``; never raises."""
    try:
        from zoo.harness import check
    except ImportError as exc:
        return HarnessSummary(False, note=f"the harness is not installed ({exc})")
    try:
        report = check(spec)
    except Exception as exc:  # noqa: BLE001 - a page must still be built
        return HarnessSummary(False, note=f"the harness raised {type(exc).__name__}: {exc}")
    results = [(str(r.check), str(r.status), str(r.message or "")) for r in report.results]
    counts: dict[str, int] = {}
    for _, status, _ in results:
        counts[status] = counts.get(status, 0) + 1
    return HarnessSummary(True, bool(report.passed), counts, results)


def _load_bench(path: str | Path | None) -> list[dict[str, Any]]:
    if path is None:
        return []
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    rows = data.get("results") if isinstance(data, Mapping) else None
    if not isinstance(rows, list):
        return []
    return [r for r in rows if isinstance(r, Mapping) and isinstance(r.get("variant"), str)
            and isinstance(r.get("ratio"), (int, float)) and math.isfinite(r["ratio"])]


def bench_ratios(path: str | Path | None) -> dict[str, str]:
    """Per-variant speed ratios from a ``zoo bench`` results JSON (schema ``zoo-bench/1``).

    A ratio is ``zoo_ms / baseline_ms``: the variant's time over a bare
    ``scaled_dot_product_attention`` layer doing the same work (lower is faster).
    Summarised per pass (``fwd``, ``fwd+bwd``, ...) as the median over the benchmark's
    shapes and dtypes, e.g. ``{"cross": "fwd 1.01x, fwd+bwd 1.03x"}``. A missing or
    unreadable file gives ``{}`` (the catalog then says "not measured").
    """
    import statistics

    by_variant: dict[str, dict[str, list[float]]] = {}
    for row in _load_bench(path):
        passes = by_variant.setdefault(row["variant"], {})
        passes.setdefault(str(row.get("pass", "")), []).append(float(row["ratio"]))
    return {name: ", ".join(f"{label} {statistics.median(r):.2f}x".strip() for label, r in passes.items())
            for name, passes in by_variant.items()}


def bench_table(path: str | Path | None, name: str) -> str | None:
    """The benchmark rows of one variant as a markdown table (``None`` if not measured)."""
    rows = [r for r in _load_bench(path) if r["variant"] == name]
    if not rows:
        return None

    def ms(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, (int, float)) else "-"

    def compare(r: Mapping) -> str:
        c = r.get("compare")
        if isinstance(c, Mapping) and isinstance(c.get("ratio"), (int, float)):
            return f"{c['ratio']:.3f} of `{c.get('variant', '?')}` ({ms(c.get('ms'))} ms)"
        return "-"

    headers = ["shape", "dtype", "pass", "zoo ms", "bare SDPA ms", "ratio"]
    body = [[_cell(r.get("shape", "")), _cell(r.get("dtype", "")), _cell(r.get("pass", "")),
             ms(r.get("zoo_ms")), ms(r.get("baseline_ms")), f"{r['ratio']:.3f}"] for r in rows]
    if any(isinstance(r.get("compare"), Mapping) for r in rows):
        headers.append("time relative to")
        for line, r in zip(body, rows):
            line.append(compare(r))
    return _table(headers, body)


# ---------------------------------------------------------------------------
# the worked example (seed 000: a 2x2 RGB image attending to "I love mountains")
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkedExample:
    """A 2x2 RGB image (4 pixel tokens x 3 channels) attending to the caption
    "I love mountains" (3 tokens x 6 dims), projected to 2 dimensions. For variants
    whose context is aligned with ``x`` (N = M), ``block_caption`` gives one word per pixel.

    The numbers are made up but small enough to follow by hand. ``W_q (3, 2)``,
    ``W_k (6, 2)``, ``W_v (6, 2)`` and ``W_o (2, 3)`` are written the way the maths
    reads (``Q = x W_q``); a ``torch.nn.Linear`` stores the transpose.
    """

    pixels: tuple[str, ...] = ("sky", "sky, light", "snow", "rock")
    words: tuple[str, ...] = ("I", "love", "mountains")
    image: tuple[tuple[float, ...], ...] = (
        (0.2, 0.4, 0.9),
        (0.5, 0.7, 1.0),
        (0.9, 0.9, 0.9),
        (0.4, 0.3, 0.2),
    )
    caption: tuple[tuple[float, ...], ...] = (
        (0.9, 0.1, 0.0, 0.3, 0.0, 0.2),
        (0.1, 0.8, 0.3, 0.0, 0.5, 0.1),
        (0.0, 0.2, 0.9, 0.7, 0.1, 0.8),
    )
    blocks: tuple[str, ...] = ("blue", "pale", "white", "grey")
    block_caption: tuple[tuple[float, ...], ...] = (
        (0.1, 0.2, 0.9, 0.1, 0.0, 0.3),
        (0.3, 0.1, 0.6, 0.5, 0.2, 0.1),
        (0.9, 0.8, 0.1, 0.4, 0.0, 0.2),
        (0.2, 0.9, 0.3, 0.0, 0.7, 0.6),
    )
    W_q: tuple[tuple[float, ...], ...] = ((-1.0, 1.5), (1.5, 0.5), (1.5, -0.5))
    W_k: tuple[tuple[float, ...], ...] = (
        (0.5, 1.0), (-1.0, 1.5), (1.5, -1.0), (1.5, -1.0), (0.5, 0.5), (0.0, 0.0),
    )
    W_v: tuple[tuple[float, ...], ...] = (
        (1.0, 0.0), (0.0, 1.0), (0.5, 0.5), (0.0, 0.5), (1.0, 0.0), (0.5, 1.0),
    )
    W_o: tuple[tuple[float, ...], ...] = ((0.5, 0.5, 0.0), (0.0, 0.5, 1.0))

    def tensors(self, dtype: Any = None) -> dict[str, Any]:
        """``x (1, 4, 3)``, ``context (1, 3, 6)`` and the four weight matrices as tensors."""
        import torch

        dtype = dtype or torch.float64
        t = lambda v: torch.tensor(v, dtype=dtype)  # noqa: E731
        return {
            "x": t(self.image)[None], "context": t(self.caption)[None],
            "blocks": t(self.block_caption)[None],
            "W_q": t(self.W_q), "W_k": t(self.W_k), "W_v": t(self.W_v), "W_o": t(self.W_o),
        }

    def layer(self):
        """The zoo's ``cross`` layer with exactly these weights (1 head of width 2)."""
        import torch

        import zoo

        t = self.tensors()
        layer = zoo.create("cross", query_dim=3, context_dim=6, heads=1, dim_head=2, out_bias=False)
        layer = layer.double().eval()
        with torch.no_grad():
            layer.to_q.weight.copy_(t["W_q"].T)
            layer.to_k.weight.copy_(t["W_k"].T)
            layer.to_v.weight.copy_(t["W_v"].T)
            layer.to_out[0].weight.copy_(t["W_o"].T)
        return layer


def worked_example() -> dict[str, Any]:
    """Every intermediate of the worked example, computed by the zoo's ``cross`` layer
    and checked against the maths written out: ``Q, K, V, scores, A, O, out, y``."""
    import torch

    ex = WorkedExample()
    t = ex.tensors()
    x, c = t["x"][0], t["context"][0]
    Q, K, V = x @ t["W_q"], c @ t["W_k"], c @ t["W_v"]
    scores = Q @ K.T / math.sqrt(2)
    A = torch.softmax(scores, dim=-1)
    O = A @ V
    out = O @ t["W_o"]
    with torch.no_grad():
        layer_out = ex.layer()(t["x"], t["context"])[0]
    if not torch.allclose(layer_out, out, atol=1e-12):
        raise AssertionError("the cross layer disagrees with the worked example's maths")
    return {"example": ex, "x": x, "context": c, "Q": Q, "K": K, "V": V, "scores": scores,
            "A": A, "O": O, "out": layer_out, "y": x + layer_out}


def _matrix_md(m: Any, rows: Sequence[str], cols: Sequence[str], digits: int = 2) -> str:
    body = [[f"**{_cell(r)}**"] + [f"{float(v):.{digits}f}" for v in row] for r, row in zip(rows, m.tolist())]
    return _table(["", *[_cell(c) for c in cols]], body)


def worked_example_markdown() -> str:
    """The worked example's numbers as markdown tables (inserted into the guide at build time)."""
    w = worked_example()
    ex: WorkedExample = w["example"]
    px, words = ex.pixels, ex.words
    d2 = ("dim 1", "dim 2")
    rgb = ("R", "G", "B")
    a = w["A"]
    top = [f"**{px[i]}** attends {', '.join(f'{100 * a[i, j]:.0f} % to *{words[j]}*' for j in range(3))}"
           for i in range(4)]
    def grid(*cells: tuple[str, str]) -> list[str]:
        out = ['<div class="zoo-grid" markdown>', ""]
        for title, table in cells:
            out += ["<div markdown>", "", title, "", table, "", "</div>", ""]
        return out + ["</div>", ""]

    parts = [
        "**Inputs**: the image and the caption.", "",
        *grid(("`x` (4 pixels x RGB)", _matrix_md(w["x"], px, rgb)),
              ("`c` (3 tokens x 6 dims)", _matrix_md(w["context"], words, [f"e{i}" for i in range(1, 7)]))),
        "**Projections** to 2 dimensions:", "",
        *grid(("`Q = x W_q` (4 x 2)", _matrix_md(w["Q"], px, d2)),
              ("`K = c W_k` (3 x 2)", _matrix_md(w["K"], words, d2)),
              ("`V = c W_v` (3 x 2)", _matrix_md(w["V"], words, d2))),
        "**Scores** and, after a softmax over each row, the **attention** (every row sums to 1):", "",
        *grid(("`Q K^T / sqrt(2)` (4 pixels x 3 words)", _matrix_md(w["scores"], px, words)),
              ("`A = softmax(...)`", _matrix_md(a, px, words))),
        *[f"- {line}" for line in top], "",
        "**Weighted values**, **projected back** to RGB, and **added to the image** (the skip connection):", "",
        *grid(("`O = A V` (4 x 2)", _matrix_md(w["O"], px, d2)),
              ("`O W_o` (4 x 3): the layer's output", _matrix_md(w["out"], px, rgb)),
              ("`y = x + O W_o`", _matrix_md(w["y"], px, rgb))),
    ]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------
# attention pattern of any variant on the worked example
# ---------------------------------------------------------------------------


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


def _build_for_picture(spec: VariantSpec) -> tuple[Any, dict[str, Any], list[str], list[str], str]:
    """The layer and inputs of the picture: the worked example where the variant accepts it
    (1 head of width 2), else the variant's own ``make_inputs`` on its first example."""
    import torch

    import zoo

    ex = WorkedExample()
    fields = spec.config.model_fields
    wanted = {"query_dim": 3, "context_dim": 6, "heads": 1, "dim_head": 2}
    overrides = {k: v for k, v in wanted.items() if k in fields}
    if "dropout" in fields:
        overrides["dropout"] = 0.0
    torch.manual_seed(0)
    try:
        layer = zoo.create(spec, **overrides).double().eval()
        _load_worked_weights(layer, ex)
        _randomise_zeros(layer)
        t = ex.tensors()
        if spec.capabilities.equal_lengths:  # one caption word per pixel (aligned blocks)
            inputs, words = {"x": t["x"], "context": t["blocks"]}, list(ex.blocks)
        else:
            inputs, words = {"x": t["x"], "context": t["context"]}, list(ex.words)
        with torch.no_grad():
            layer(**inputs)
        source = ("the worked example, with one caption word per pixel (this variant needs N = M)"
                  if spec.capabilities.equal_lengths else "the worked example")
        return layer, inputs, list(ex.pixels), words, source
    except Exception:  # noqa: BLE001 - the variant needs inputs of its own kind
        pass
    torch.manual_seed(0)
    example = dict(spec.example_configs()[0])
    if "dropout" in fields:
        example["dropout"] = 0.0
    layer = zoo.create(spec, **example).double().eval()
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


def _load_worked_weights(layer: Any, ex: WorkedExample) -> None:
    """Give the diffusers-named projections (``to_q``, ``to_k``, ``to_v``, ``to_out.0``)
    the worked example's weights where their shapes match, so the picture of every
    such variant is drawn with the numbers of the guide."""
    import torch

    t = ex.tensors()
    params = dict(layer.named_parameters())
    with torch.no_grad():
        for name, w in (("to_q.weight", t["W_q"]), ("to_k.weight", t["W_k"]),
                        ("to_v.weight", t["W_v"]), ("to_out.0.weight", t["W_o"])):
            p = params.get(name)
            if p is not None and tuple(p.shape) == tuple(w.T.shape):
                p.copy_(w.T)


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


def attention_pattern(spec: VariantSpec) -> Pattern:
    """What to draw for ``spec``.

    For a variant that computes softmax attention through
    ``torch.nn.functional.scaled_dot_product_attention`` with one score matrix of
    ``N`` query rows, the attention probabilities ``softmax(s Q K^T)`` recomputed
    from the captured ``Q`` and ``K`` (averaged over heads; keys that do not depend
    on the context, such as persistent memory, are labelled ``mem``). Otherwise
    (FiLM, RETRO's chunked attention, anything else) the influence of each context
    token on each output token, ``|d y_n / d c_m|`` normalised per row.
    """
    import torch

    layer, inputs, rows, cols, source = _build_for_picture(spec)
    x, ctx = inputs["x"], inputs.get("context")
    n = x.shape[1]
    calls = _capture_sdpa(layer, inputs) if spec.capabilities.attention else []
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
                labels.append(f"mem {mem}")
                mem += 1
        heads = q.shape[1]
        caption = (f"Attention probabilities softmax(QK^T/sqrt(d)) of `{spec.name}` on {source}, "
                   f"{'averaged over its ' + str(heads) + ' heads' if heads > 1 else 'one head'}; "
                   "each row sums to 1.")
        if mem:
            caption += f" The {mem} `mem` columns are learned keys that do not depend on the context."
        return Pattern("attention", probs, rows, labels, f"{spec.name}: attention probabilities", caption)
    if ctx is None:
        raise RuntimeError(f"{spec.name!r}: no context to draw a pattern against")
    ctx = ctx.detach().clone()
    if not spec.capabilities.attention:
        with torch.no_grad():
            delta = (layer(**inputs) - x)[0]  # (N, Dq)
        feats = ["R", "G", "B"] if delta.shape[-1] == 3 else [f"f{i}" for i in range(delta.shape[-1])]
        caption = (f"`{spec.name}` has no attention matrix: no query chooses among context tokens. "
                   f"Shown instead is what the pooled context does to each query, the change "
                   f"y - x per token and feature on {source} (for FiLM: gamma * x + beta, the "
                   f"generator given random weights since it starts at zero).")
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
    if spec.capabilities.chunk_causal:
        caption += " Zero cells show the chunk causality: no position sees the neighbours of a later chunk."
    lead = ctx.shape[1:-1]
    xlabel = ("context tokens (c)" if len(lead) == 1
              else f"context tokens c[{', '.join(f'i{k}' for k in range(len(lead)))}], flattened\n"
                   f"(context {(spec.context_shape or str(tuple(ctx.shape))).split(',  ')[0][:40]})")
    return Pattern("influence", infl, rows, cols, f"{spec.name}: influence of context on output", caption,
                   xlabel=xlabel)


def render_pattern(spec: VariantSpec, path: str | Path | None = None) -> tuple[bytes, Pattern]:
    """Draw :func:`attention_pattern` as a labelled heatmap (matplotlib, Agg backend).

    Returns the PNG bytes (also written to ``path`` when given) and the pattern.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    pat = attention_pattern(spec)
    values = pat.values.detach().double().cpu().numpy()
    rows, cols = values.shape
    width = min(11.0, max(4.8, 1.4 + 0.55 * cols))
    height = min(9.0, max(2.8, 1.2 + 0.5 * rows))
    fig = Figure(figsize=(width, height), dpi=110)
    ax = fig.add_subplot()
    if pat.kind == "modulation":
        lim = max(float(abs(values).max()), 1e-12)
        im = ax.imshow(values, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    else:
        im = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=max(float(values.max()), 1e-12), aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if cols <= 40:
        ax.set_xticks(range(cols), labels=pat.col_labels[:cols], rotation=45 if cols > 6 else 0,
                      ha="right" if cols > 6 else "center", fontsize=8 if cols > 12 else 9)
    if rows <= 40:
        ax.set_yticks(range(rows), labels=pat.row_labels[:rows], fontsize=8 if rows > 12 else 9)
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
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data, pat


# ---------------------------------------------------------------------------
# pages
# ---------------------------------------------------------------------------

_CAP_LABELS = {
    "self_attention": "self-attention (context=None)",
    "masks": "context masks",
    "dropout": "dropout",
    "query_order_equivariant": "query-order equivariant",
    "context_order_invariant": "context-order invariant",
    "equal_lengths": "N = M (aligned)",
    "chunk_causal": "chunk-causal",
    "context_required": "context required",
}
_CAP_SHORT = {"self_attention": "self", "masks": "masks", "dropout": "dropout", "chunk_causal": "causal",
              "equal_lengths": "N=M", "context_required": "needs ctx"}


def _capabilities(spec: VariantSpec, short: bool = False) -> list[str]:
    caps = spec.capabilities.as_dict()
    labels = _CAP_SHORT if short else _CAP_LABELS
    out = [] if caps.get("attention", True) else ["no attention matrix"]
    return out + [labels[k] for k, v in caps.items() if k in labels and v is True]


def _example_fields(spec: VariantSpec) -> dict[str, Any]:
    fields = dict(spec.example_configs()[0])
    fields.pop("variant", None)
    return fields


def runnable_example(spec: VariantSpec) -> str:
    """A complete Python snippet that builds the variant from its first example config,
    makes inputs of the right shape with the spec's ``make_inputs`` and runs it."""
    fields = _example_fields(spec)
    name = json.dumps(spec.name)
    args = ", ".join([name, *(f"{k}={v!r}" for k, v in fields.items())])
    if len(args) > 60:
        args = "\n" + "".join(f"    {a},\n" for a in [name, *(f"{k}={v!r}" for k, v in fields.items())])
    return textwrap.dedent("""\
        import torch
        import zoo

        """) + f"layer = zoo.create({args})\n" + textwrap.dedent(f"""\
        spec = zoo.get_variant({name})
        inputs = spec.make_inputs(
            layer, batch=2, query_len=16, context_len=4,
            generator=torch.Generator().manual_seed(0), dtype=torch.float32,
        )
        out = layer(**inputs)
        assert out.shape == inputs["x"].shape
        print(tuple(out.shape))
        """)


def _yaml_example(spec: VariantSpec) -> str:
    lines = [f"variant: {spec.name}"]
    for k, v in _example_fields(spec).items():
        lines.append(f"{k}: {json.dumps(v)}")
    return "\n".join(lines)


def _paper_md(paper: str | None) -> str:
    if not paper:
        return "No paper given."
    import re

    text = _cell(paper)
    text = re.sub(r"arXiv:(\d{4}\.\d{4,5})", r"[arXiv:\1](https://arxiv.org/abs/\1)", text)
    return text


def index_markdown(specs: Sequence[VariantSpec], harness: Mapping[str, HarnessSummary] | None = None,
                   speeds: Mapping[str, str] | None = None) -> str:
    """The catalog's index page: one row per variant with its one-line summary,
    complexity, inputs, capabilities, harness result and measured speed ratio."""
    harness = harness or {}
    speeds = speeds or {}
    rows = []
    for spec in specs:
        h = harness.get(spec.name)
        rows.append((
            f"[`{spec.name}`]({spec.name}.md)",
            _cell(spec.summary),
            _cell(spec.complexity or "-"),
            _cell(spec.context_shape or "-"),
            _cell(", ".join(_capabilities(spec, short=True)) or "-"),
            f"[{_cell(h.short)}]({spec.name}.md#harness)" if h else "not run",
            _cell(speeds.get(spec.name, NOT_MEASURED)),
        ))
    third = [s for s in specs if s.distribution and s.distribution != "attention-zoo"]
    parts = [
        "---", "hide:", "  - navigation", "---", "",  # the table needs the width
        "# Variant catalog",
        "",
        "Every attention variant registered in the environment that built these docs, generated "
        "from the registry at build time (`zoo.catalog`), so the pages cannot drift from the code. "
        "Variants from third-party plugins that are installed appear here too"
        + (f" (here: {', '.join(f'`{s.name}` from `{s.distribution}`' for s in third)})." if third else "."),
        "",
        _table(("variant", "summary", "complexity (N queries, M context)", "context", "capabilities",
                "harness", "speed vs SDPA"), rows),
        "",
        "*Capabilities*: **self** accepts `context=None`; **masks** accepts `context_mask`; "
        "**dropout** has dropout that acts in training; **causal** never lets a position see the "
        "context of a later chunk; **N=M** needs `x` and `context` of equal length. "
        "*Harness*: the shared checks (`zoo check NAME`) run on this build. "
        f"*Speed*: the variant's time over a bare `scaled_dot_product_attention` layer doing the same "
        f"work (`zoo_ms / baseline_ms`, median over the benchmark's shapes and dtypes per pass), from "
        f"`benchmarks/results/cpu.json` (`zoo bench`); lower is faster; "
        f"\"{NOT_MEASURED}\" when that file has no entry.",
        "",
    ]
    return "\n".join(parts)


def variant_markdown(spec: VariantSpec, harness: HarnessSummary | None = None, speed: str | None = None,
                     image: str | None = None, pattern: Pattern | None = None,
                     bench: str | None = None) -> str:
    """One variant's page: summary, paper, equation, shapes, config table, runnable
    example, harness result and (when ``image`` is given) its attention pattern."""
    layer_path = f"{spec.module.__module__}.{spec.module.__qualname__}"
    facts = [
        ("name", f"`{spec.name}`"),
        ("aliases", ", ".join(f"`{a}`" for a in spec.aliases) or "-"),
        ("paper", _paper_md(spec.paper)),
        ("layer", f"`{layer_path}`"),
        ("config", f"`{spec.config.__module__}.{spec.config.__qualname__}`"),
        ("source", _cell(f"{spec.plugin or '-'} ({spec.distribution or 'in-process'})")),
        ("complexity", _cell(spec.complexity or "-")),
        ("capabilities", _cell(", ".join(_capabilities(spec)) or "-")),
        ("speed vs SDPA", _cell(speed or NOT_MEASURED)),
    ]
    out = [f"# `{spec.name}`", "", _cell(spec.summary), ""]
    out += [f"- **{k}**: {v}" for k, v in facts] + [""]
    out += ["## Equation", ""]
    if spec.equation:
        out += ["$$", spec.equation.strip(), "$$", ""]
    else:
        out += ["The spec gives no equation.", ""]
    out += [
        "## Shapes", "",
        _table(("argument", "shape"), [
            ("`x`", "`(B, N, query_dim)`"),
            ("`context`", _code(spec.context_shape or "see the layer's docstring")
             + (" or `None` (self-attention)" if spec.capabilities.self_attention else "")),
            ("`context_mask`", "bool `context.shape[:-1]`, True = may be attended"
             if spec.capabilities.masks else "not accepted"),
            ("output", "`(B, N, query_dim)`, the dtype and device of `x`"),
        ]), "",
        "B is the batch size, N the number of queries (tokens of `x`), M the number of context "
        "tokens; `query_dim` (Dq) and `context_dim` (Dc) are the feature widths, h the heads and "
        "d the width of each head.", "",
        "## Config", "",
        f"`{spec.config.__name__}`; unknown keys are refused. In a file or a model config, "
        f"select it with `variant: {spec.name}`.", "",
        _table(("field", "type", "default", "description"),
               [(f"`{n}`", _code(t), _code(d), _cell(desc)) for n, t, d, desc in config_table(spec.config)]),
        "",
        "## Example", "",
        "```python", runnable_example(spec).rstrip(), "```", "",
        "The same layer from a YAML file (`zoo.load_config(path)`, then `zoo.create(config)`):", "",
        "```yaml", _yaml_example(spec), "```", "",
    ]
    if spec.laws:
        out += ["## Laws", "", "Variant-specific properties the harness proves:", ""]
        out += [f"- **`law:{law.name}`**: {_cell(law.description)}" for law in spec.laws]
        out += [""]
    out += ["## Harness", ""]
    if harness is None or not harness.available:
        note = harness.note if harness else "the harness was not run for this build"
        out += [f"Harness result not available: {_cell(note)}.", ""]
    else:
        verdict = "all checks passed" if harness.passed else "**some checks failed**"
        kind = "success" if harness.passed else "failure"
        out += [f"`zoo check {spec.name}` on this build: {verdict} ({harness.short}). "
                "A skipped check does not apply to this variant; the table gives the reason.", "",
                f'???{"" if harness.passed else "+"} {kind} "{len(harness.results)} checks: {harness.short}"', ""]
        table = _table(("check", "status", "message"),
                       [(f"`{c}`", s, _cell(m[:300])) for c, s, m in harness.results])
        out += [textwrap.indent(table, "    "), ""]
    out += ["## Speed", ""]
    if bench:
        out += ["Time of this layer over a bare `scaled_dot_product_attention` layer doing the same "
                "work, from `benchmarks/results/cpu.json` (`zoo bench`); lower is faster.", "", bench, ""]
    else:
        out += [f"{NOT_MEASURED.capitalize()}: `benchmarks/results/cpu.json` has no entry for "
                f"`{spec.name}` (run `zoo bench`).", ""]
    out += ["## Attention pattern", ""]
    if image:
        caption = pattern.caption if pattern else ""
        out += [f"![Attention pattern of {spec.name}]({image})", "", _cell(caption), ""]
    else:
        out += ["No picture could be drawn for this variant on this build.", ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------
# everything at once
# ---------------------------------------------------------------------------


def build_catalog(specs: Sequence[VariantSpec] | None = None, *, run_harness: bool = True,
                  bench_path: str | Path | None = None, pictures: bool = True,
                  log: Any = None) -> dict[str, str | bytes]:
    """Every catalog file, keyed by its path in the docs (``catalog/index.md``,
    ``catalog/<name>.md``, ``catalog/<name>-pattern.png``).

    Args:
        specs: the variants (default: every registered one).
        run_harness: run the shared harness on each variant.
        bench_path: the benchmark results JSON (default: ``benchmarks/results/cpu.json``
            if it exists in the working directory).
        pictures: draw the attention-pattern pictures.
        log: a ``logging.Logger`` for problems (a picture that could not be drawn).
    """
    import zoo

    if specs is None:
        specs = [zoo.get_variant(n) for n in zoo.list_variants()]
    if bench_path is None:
        bench_path = Path("benchmarks/results/cpu.json")
    speeds = bench_ratios(bench_path)
    harness = {s.name: harness_summary(s) for s in specs} if run_harness else {}
    files: dict[str, str | bytes] = {f"{CATALOG_DIR}/index.md": index_markdown(specs, harness, speeds)}
    for spec in specs:
        image = pattern = None
        if pictures:
            try:
                data, pattern = render_pattern(spec)
            except Exception as exc:  # noqa: BLE001
                if log is not None:
                    log.warning("catalog: no attention picture for %r: %s: %s", spec.name, type(exc).__name__, exc)
            else:
                image = _image_name(spec.name)
                files[f"{CATALOG_DIR}/{image}"] = data
        files[page_path(spec.name)] = variant_markdown(
            spec, harness.get(spec.name) if run_harness else None, speeds.get(spec.name), image, pattern,
            bench_table(bench_path, spec.name))
    return files

"""``film``: Feature-wise Linear Modulation, the cheap alternative to cross-attention.

Perez et al., "FiLM: Visual Reasoning with a General Conditioning Layer", AAAI 2018,
arXiv:1709.07871. A per-feature scale and shift generated from a pooled conditioning
vector modulates every token of ``x``: linear in N, no N x M interaction.

When to prefer which:

- ``film`` when the conditioning is a *global* signal (a class label or timestep
  embedding, a pooled sentence embedding, style, task id) that should change every
  token the same way. Cost O(N·Dq + M·Dc + Dc·Dq): linear in N, and M only enters
  through the pooling.
- ``cross`` (or another attention variant) when different tokens must read different
  parts of the conditioning -- a pixel attending to the word that describes it, a
  decoder token aligning to a source word. Cost O(N·M·h·d). FiLM cannot route: all
  M tokens are averaged into one vector before anything sees ``x``.
"""

from __future__ import annotations


import torch
from pydantic import Field
from torch import Tensor, nn

import zoo
from zoo.functional import validate_mask, validate_same_batch, validate_tensor

from zoo.oracle import linear
from zoo.testing import expect


class FiLMConfig(zoo.VariantConfig):
    """Config of :class:`FiLM`."""

    query_dim: int = Field(64, gt=0, description="Width of x, the modulated features (Dq).")
    context_dim: int | None = Field(
        None, gt=0, description="Width of the conditioning (Dc); None means query_dim."
    )
    residual: bool = Field(
        True,
        description=(
            "y = (1 + gamma) * x + beta with a zero-initialised generator (identity at start); "
            "False: y = gamma * x + beta with nn.Linear's default initialisation."
        ),
    )


class FiLM(nn.Module):
    r"""Feature-wise linear modulation of ``x`` by a pooled conditioning vector.

    .. math::

        z = \frac{\sum_m \mathrm{mask}_m\, c_m}{\max(1, \sum_m \mathrm{mask}_m)},\quad
        [\gamma;\ \beta] = z W + b,\quad
        y = (1 + \gamma) \odot x + \beta \ \ (\text{residual})\quad\text{or}\quad
        y = \gamma \odot x + \beta

    ``gamma`` and ``beta`` (each ``Dq`` wide: the first and second half of
    ``to_scale_shift``'s output) are the same for every token of a batch element.
    The context is pooled by its masked mean over M; a fully masked context pools to
    ``z = 0`` (so ``gamma`` and ``beta`` are the generator's bias: finite, and the
    identity for a zero-initialised residual layer). A 2-D context ``(B, Dc)`` is
    used as ``z`` directly (its mask, if any, is ``(B,)``: False means ``z = 0``).

    With ``residual=True`` (the default, as the official code's ``gamma = 1 + dgamma``)
    ``to_scale_shift`` starts at zero, so a freshly built layer is the identity and
    can be inserted into a trained network without changing it. With
    ``residual=False`` it keeps ``nn.Linear``'s default initialisation.

    FiLM costs O(N·Dq) per layer on top of the pooling: use it when the condition is a
    global signal that should modulate all tokens alike; use ``cross`` when tokens must
    attend to different parts of the conditioning (see the module docs).

    Args:
        query_dim: width of ``x`` (Dq).
        context_dim: width of the conditioning (Dc); ``None`` means ``query_dim``.
        residual: ``(1 + gamma) * x + beta`` with zero initialisation (True) or
            ``gamma * x + beta`` (False).

    Shape:
        - x: ``(B, N, Dq)``
        - context: ``(B, Dc)`` or ``(B, M, Dc)`` (required)
        - context_mask: bool ``context.shape[:-1]``: ``(B, M)`` or ``(B,)``, True = used
        - output: ``(B, N, Dq)``

        where B is the batch size, N the length of x and M the number of conditioning
        tokens.

    Paper:
        Perez et al., "FiLM: Visual Reasoning with a General Conditioning Layer",
        AAAI 2018, arXiv:1709.07871.
    """

    def __init__(self, *, query_dim: int, context_dim: int | None, residual: bool) -> None:  # FiLMConfig's fields
        super().__init__()
        context_dim = context_dim or query_dim
        self.query_dim, self.context_dim, self.residual = query_dim, context_dim, residual
        self.to_scale_shift = nn.Linear(context_dim, 2 * query_dim)
        if residual:
            nn.init.zeros_(self.to_scale_shift.weight)
            nn.init.zeros_(self.to_scale_shift.bias)

    @property
    def output_includes_x(self) -> bool:
        """True in the residual form: ``forward`` returns ``x`` plus the modulation, so
        :func:`zoo.swap` uses ``forward(x, c) - x = gamma * x + beta`` in place of an
        attention branch (zero at start: the model starts without that branch)."""
        return self.residual

    def _check(self, x: Tensor, context: Tensor | None, context_mask: Tensor | None) -> None:
        w = self.to_scale_shift.weight
        validate_tensor("x", x, ndim=3, last_dim=self.query_dim, like=w, legend=f"(B, N, query_dim={self.query_dim})")
        if context is None:
            raise ValueError(
                f"film needs a context to modulate x with: expected (B, context_dim={self.context_dim}) "
                f"or (B, M, context_dim={self.context_dim}), got None"
            )
        validate_tensor("context", context, ndim=(2, 3), last_dim=self.context_dim, like=w,
                        legend=f"(B, context_dim={self.context_dim}) or (B, M, context_dim={self.context_dim})")
        validate_same_batch(x, context)
        if context_mask is not None:
            validate_mask("context_mask", context_mask, context.shape[:-1], like=context)

    def pool(self, context: Tensor, context_mask: Tensor | None = None) -> Tensor:
        """The conditioning vector ``z (B, Dc)``: the masked mean over M (0 if nothing is left)."""
        if context.ndim == 2:
            return context if context_mask is None else torch.where(context_mask[:, None], context, 0.0)
        if context_mask is None:
            return context.mean(dim=1)
        kept = torch.where(context_mask[..., None], context, 0.0)  # masked values cannot leak, even inf/NaN
        count = context_mask.sum(dim=1, keepdim=True).clamp_min(1).to(context.dtype)
        return kept.sum(dim=1) / count

    def forward(self, x: Tensor, context: Tensor | None = None, *, context_mask: Tensor | None = None) -> Tensor:
        self._check(x, context, context_mask)
        gamma, beta = self.to_scale_shift(self.pool(context, context_mask)).unsqueeze(1).chunk(2, dim=-1)
        if self.residual:
            gamma = gamma + 1.0
        if torch.is_grad_enabled() and (x.requires_grad or gamma.requires_grad):
            # Training: autograd's backward of the plain expression is the cheaper one
            # (addcmul's backward adds a full-size pass); measured with `zoo bench film`.
            return x * gamma + beta
        return torch.addcmul(beta, x, gamma)  # inference: one pass over (B, N, Dq), no temporary


def reference(module: FiLM, x: Tensor, context: Tensor, *, context_mask=None) -> Tensor:
    """Naive oracle: pool each batch element's kept tokens one by one, then scale and shift."""
    b, _, dq = x.shape
    out = []
    for i in range(b):
        c = context[i] if context.ndim == 3 else context[i][None]  # (M, Dc)
        keep = torch.ones(c.shape[0], dtype=torch.bool, device=c.device) if context_mask is None else context_mask[i].reshape(-1)
        rows = [c[j] for j in range(c.shape[0]) if bool(keep[j])]
        z = torch.stack(rows).sum(0) / len(rows) if rows else torch.zeros_like(c[0])
        gb = linear(z[None], module.to_scale_shift)[0]
        gamma, beta = gb[:dq], gb[dq:]
        scale = 1 + gamma if module.residual else gamma
        out.append(x[i] * scale + beta)
    return torch.stack(out)


def make_inputs(module, *, batch, query_len, context_len, generator, dtype):
    """``x (B, N, Dq)`` and a conditioning sequence ``context (B, M, Dc)`` (the masked-mean form)."""
    cfg = module.config
    context_dim = cfg.context_dim or cfg.query_dim
    x = torch.randn(batch, query_len, cfg.query_dim, generator=generator, dtype=dtype)
    context = torch.randn(batch, context_len, context_dim, generator=generator, dtype=dtype)
    return {"x": x, "context": context}


def _randomise(layer: FiLM, generator: torch.Generator) -> None:
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype))


def _law_identity_when_generator_zero(spec, fields, generator):
    """Residual form with a zero generator: the output is x exactly, whatever the context."""
    layer = zoo.create(spec, **{**fields, "residual": True}).double().eval()
    _randomise(layer, generator)
    with torch.no_grad():
        layer.to_scale_shift.weight.zero_()
        layer.to_scale_shift.bias.zero_()
    x = torch.randn(2, 5, layer.query_dim, generator=generator, dtype=torch.float64)
    c = torch.randn(2, 4, layer.context_dim, generator=generator, dtype=torch.float64) * 10
    mask = torch.tensor([[True, False, True, True], [False] * 4])
    with torch.no_grad():
        for ctx, m in ((c, None), (c, mask), (c[:, 0], None)):
            out = layer(x, ctx, context_mask=m)
            expect(torch.equal(out, x), (
                f"with a zero generator the residual FiLM should return x exactly, but differs by "
                f"{(out - x).abs().max().item():.2e}"
            ))


def _law_identity_at_init(spec, fields, generator):
    """A freshly built residual layer is the identity (zero-initialised generator)."""
    layer = zoo.create(spec, **{**fields, "residual": True}).double().eval()
    x = torch.randn(2, 5, layer.query_dim, generator=generator, dtype=torch.float64)
    c = torch.randn(2, 3, layer.context_dim, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        out = layer(x, c)
    expect(torch.equal(out, x), (
        f"a new residual FiLM layer should be the identity (zero-initialised to_scale_shift), "
        f"but differs from x by {(out - x).abs().max().item():.2e}"
    ))


def _law_tokenwise(spec, fields, generator):
    """Linear in N: each output token depends on its own x token and the pooled context only,
    so running the tokens one at a time gives the same result as the whole sequence."""
    layer = zoo.create(spec, **fields).double().eval()
    _randomise(layer, generator)
    x = torch.randn(2, 6, layer.query_dim, generator=generator, dtype=torch.float64)
    c = torch.randn(2, 3, layer.context_dim, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        whole = layer(x, c)
        pieces = torch.cat([layer(x[:, i : i + 1], c) for i in range(x.shape[1])], dim=1)
    err = (whole - pieces).abs().max().item()
    expect(err < 1e-12, (
        f"FiLM should act on each token independently (cost linear in N), but the whole sequence "
        f"differs from token-by-token evaluation by {err:.2e}"
    ))


def _law_sequence_is_its_masked_mean(spec, fields, generator):
    """A context sequence (B, M, Dc) with a mask acts as the 2-D context of its masked mean."""
    layer = zoo.create(spec, **fields).double().eval()
    _randomise(layer, generator)
    x = torch.randn(3, 4, layer.query_dim, generator=generator, dtype=torch.float64)
    c = torch.randn(3, 5, layer.context_dim, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[True] * 5, [True, False, False, True, False], [False] * 5])
    mean = torch.stack([c[0].mean(0), c[1, [0, 3]].mean(0), torch.zeros_like(c[2, 0])])
    with torch.no_grad():
        seq, vec = layer(x, c, context_mask=mask), layer(x, mean)
    err = (seq - vec).abs().max().item()
    expect(err < 1e-12, (
        f"a masked context sequence should act as its masked mean (zero when fully masked), "
        f"but differs from it by {err:.2e}"
    ))


# --------------------------------------------------------------------------- benchmark (`zoo bench`)


def hand_written(m: FiLM, x: Tensor, context: Tensor, **_) -> Tensor:
    """FiLM by hand on the same weights: ``(1 + gamma) * x + beta`` from the mean-pooled
    context (no attention, so no SDPA: the baseline is the expression itself)."""
    import torch.nn.functional as F

    z = context.mean(dim=1) if context.ndim == 3 else context
    gamma, beta = F.linear(z, m.to_scale_shift.weight, m.to_scale_shift.bias).unsqueeze(1).chunk(2, dim=-1)
    if m.config.residual:
        return x * (1 + gamma) + beta
    return x * gamma + beta


# Timed at the standard attention workloads, next to the attention layer it can replace.
SPEC = zoo.declare_variant(
    FiLM, "film",
    aliases=("feature-wise-linear-modulation",),
    config=FiLMConfig,
    summary="FiLM: per-feature scale and shift of x from a pooled conditioning vector (linear in N).",
    paper=(
        'Perez et al., "FiLM: Visual Reasoning with a General Conditioning Layer", '
        "AAAI 2018, arXiv:1709.07871"
    ),
    make_inputs=make_inputs,
    examples=(
        {"query_dim": 16, "context_dim": 12},
        {"query_dim": 8, "residual": False},
    ),
    reference=reference,
    capabilities=zoo.Capabilities(
        attention=False,
        self_attention=False,
        dropout=False,
        context_set_axes=(1,),  # the masked mean over M ignores order
    ),
    laws=(
        zoo.Law("identity-when-generator-zero",
                "residual form with a zero generator returns x exactly, for any context",
                _law_identity_when_generator_zero),
        zoo.Law("identity-at-init", "a freshly built residual layer is the identity",
                _law_identity_at_init),
        zoo.Law("tokenwise-linear-in-n",
                "each token is modulated independently (cost linear in N): token-by-token "
                "evaluation equals the whole sequence",
                _law_tokenwise),
        zoo.Law("sequence-is-its-masked-mean",
                "a (B, M, Dc) context with a mask acts as the (B, Dc) context of its masked mean",
                _law_sequence_is_its_masked_mean),
    ),
    equation=(
        r"y = (1 + \gamma(z)) \odot x + \beta(z),\ "
        r"[\gamma;\beta] = zW + b,\ z = \mathrm{masked\_mean}_M(c)"
    ),
    complexity="O(N·Dq + M·Dc + Dc·Dq) time: linear in N, no N x M term",
    context_shape="(B, Dc) or (B, M, Dc) (masked mean over M)",
    bench=zoo.BenchSpec(shapes=zoo.STANDARD_SHAPES, baseline=hand_written,
        baseline_label="hand-written FiLM", compare=True),
)

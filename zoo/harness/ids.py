"""The one table of harness check ids: id, column label, what it proves, slow or not.

Everything else derives from :data:`CHECK_TABLE`: the order checks run in, the ids the
selectors accept, ``zoo check --list-checks``, the table's column labels and the
pytest plugin's slow marker. Plain data: importing it needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CheckInfo", "CHECK_TABLE", "CHECK_IDS", "OPT_IN_CHECK_IDS", "SLOW_CHECK_IDS", "ALL_CHECK_IDS", "SHORT_NAMES", "info"]


@dataclass(frozen=True)
class CheckInfo:
    """One check's stable ``id``, its short ``label`` (a table column), a one-line
    ``description``, whether it is ``slow`` (runs only with ``slow=True``) and whether it
    runs by ``default`` (an opt-in check runs only when selected by id or pattern, e.g.
    while some built-in variant still fails it)."""

    id: str
    label: str
    description: str
    slow: bool = False
    default: bool = True


CHECK_TABLE: tuple[CheckInfo, ...] = (
    CheckInfo("shape", "shape", "output has x's shape, dtype and device over batch sizes, lengths and widths"),
    CheckInfo("oracle-forward", "fwd", "forward equals the float64 naive oracle (float32, float64, bfloat16)"),
    CheckInfo("oracle-grad", "grad", "input and parameter gradients equal the oracle's"),
    CheckInfo("mask", "mask", "masked context elements have no influence"),
    CheckInfo("masked-rows", "rows", "fully masked rows are finite, context-free, zero attention term"),
    CheckInfo("batch-independence", "batch", "batch elements do not influence each other"),
    CheckInfo("context-order", "c-ord", "permuting orderless context axes leaves the output unchanged"),
    CheckInfo("query-order", "q-ord", "permuting queries permutes the output"),
    CheckInfo("eval-determinism", "det", "eval() is deterministic and dropout is off"),
    CheckInfo("dropout", "drop", "dropout acts in training (and only there)"),
    CheckInfo("state-dict", "sd", "state dict round-trips into a fresh layer"),
    CheckInfo("config-roundtrip", "cfg", "zoo.create(module.config) rebuilds the layer"),
    CheckInfo("bad-input", "input", "bad input raises ValueError"),
    # Opt-in until the built-ins' fused path passes it (issue 16: cross, persistent, retro and
    # selfdoc turn NaN in x or the context into a finite output without a mask); flip to default then.
    CheckInfo("nonfinite-input", "nan", "NaN/inf in an input gives NaN out (or a ValueError), with and without a mask"),
    CheckInfo("compile", "compile", "torch.compile gives the eager output and gradients", slow=True),
    CheckInfo("ddp", "ddp", "a 2-process DistributedDataParallel step equals single-process training", slow=True),
)

CHECK_IDS: tuple[str, ...] = tuple(c.id for c in CHECK_TABLE if not c.slow and c.default)
"""The default checks, in the order they run."""
OPT_IN_CHECK_IDS: tuple[str, ...] = tuple(c.id for c in CHECK_TABLE if not c.slow and not c.default)
"""Checks that run only when selected (``checks=["nonfinite-input"]``, ``-k nonfinite-input``)."""
SLOW_CHECK_IDS: tuple[str, ...] = tuple(c.id for c in CHECK_TABLE if c.slow)
ALL_CHECK_IDS: tuple[str, ...] = tuple(c.id for c in CHECK_TABLE)
SHORT_NAMES: dict[str, str] = {c.id: c.label for c in CHECK_TABLE}
_BY_ID = {c.id: c for c in CHECK_TABLE}


def info(check_id: str) -> CheckInfo:
    """The table entry of ``check_id`` (``KeyError`` for an unknown id)."""
    return _BY_ID[check_id]

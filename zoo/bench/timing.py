"""Interleaved, repeated wall-clock timing with medians.

On a shared machine the speed of the CPU drifts by a factor of two from one second
to the next. Timing A for a minute and then B for a minute compares two different
machines. :func:`interleaved` therefore runs the candidates in rounds, one sample
of each per round, alternating the order (A B, B A, ...) so that a slow spell hits
both equally, and reports per-candidate medians. Ratios are taken between medians
measured in the same rounds of the same process.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["Samples", "interleaved", "calibrate", "sync"]


@dataclass
class Samples:
    """Seconds per call, one entry per round."""

    name: str
    seconds: list[float] = field(default_factory=list)
    number: int = 1  # calls per sample

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else math.nan

    @property
    def ms(self) -> float:
        return self.median * 1e3

    def iqr_ms(self) -> tuple[float, float]:
        if len(self.seconds) < 4:
            return (min(self.seconds) * 1e3, max(self.seconds) * 1e3)
        q = statistics.quantiles(self.seconds, n=4)
        return (q[0] * 1e3, q[2] * 1e3)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def calibrate(fn: Callable[[], object], *, min_sample_s: float, device: str = "cpu") -> int:
    """How many calls make one sample last at least ``min_sample_s`` (at least 1)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    dt = time.perf_counter() - t0
    if dt >= min_sample_s:
        return 1
    # a second, warmer call gives a better estimate for fast functions
    t0 = time.perf_counter()
    fn()
    sync(device)
    dt = max(time.perf_counter() - t0, 1e-7)
    return max(1, math.ceil(min_sample_s / dt))


def interleaved(
    fns: Mapping[str, Callable[[], object]],
    *,
    repeat: int,
    warmup: int = 1,
    number: int | None = None,
    min_sample_s: float = 0.02,
    budget_s: float | None = None,
    max_repeat: int | None = None,
    device: str = "cpu",
    on_round: Callable[[int, int], None] | None = None,
) -> dict[str, Samples]:
    """Time every function in ``fns`` in ``repeat`` interleaved rounds.

    Args:
        fns: name -> zero-argument callable (one call = one unit of work).
        repeat: rounds; each round takes one sample of every function.
        warmup: untimed calls of each function before the first round.
        number: calls per sample; ``None`` calibrates it so a sample lasts at least
            ``min_sample_s`` (the slowest function decides, so all share it).
        device: ``"cuda..."`` synchronises around every sample.
        budget_s, max_repeat: when given, the number of rounds grows from ``repeat``
            towards ``max_repeat`` so that all rounds take about ``budget_s`` seconds,
            estimated from the warm-up calls (before any sample is taken).
        on_round: ``on_round(done, repeat)`` after each round (progress display).

    Returns:
        name -> :class:`Samples` of seconds per call.
    """
    names = list(fns)
    t0 = time.perf_counter()
    for _ in range(warmup):
        for n in names:
            fns[n]()
    sync(device)
    per_round = (time.perf_counter() - t0) / max(warmup, 1)
    if number is None:
        number = min(calibrate(fns[n], min_sample_s=min_sample_s, device=device) for n in names)
    if budget_s is not None and max_repeat is not None and warmup > 0:
        fit = int(budget_s / max(per_round * number, 1e-9))
        repeat = max(repeat, min(max_repeat, fit))
    out = {n: Samples(n, number=number) for n in names}
    for r in range(repeat):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            fn = fns[n]
            sync(device)
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            sync(device)
            out[n].seconds.append((time.perf_counter() - t0) / number)
        if on_round is not None:
            on_round(r + 1, repeat)
    return out


def median_ci(values: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free confidence interval for the median of ``values`` (order
    statistics of the binomial(n, 1/2)); ``None`` when there are too few values for
    that confidence (fewer than 6 at 95 %).

    Used on paired ratios (zoo / baseline within one round): a smoke run gives a
    verdict only when the whole interval lies on one side of the target.
    """
    n = len(values)
    xs = sorted(values)
    alpha = 1.0 - confidence
    # largest k with P(Bin(n, 1/2) <= k - 1) <= alpha / 2: the interval is [x_(k), x_(n-k+1)]
    k, cdf = 0, 0.0
    for i in range(n + 1):
        cdf += math.comb(n, i) / 2**n
        if cdf > alpha / 2:
            break
        k = i + 1
    if k < 1:
        return None
    return xs[k - 1], xs[n - k]

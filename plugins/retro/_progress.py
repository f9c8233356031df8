"""A one-line stderr progress display (no dependency)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``label: done/total (pct%) rate/s, eta`` on stderr, redrawn in place on a
    terminal and printed at most every few seconds otherwise (logs stay short).

    ``Progress(..., enabled=False)`` does nothing, so callers need no branches.
    """

    def __init__(self, label: str, total: int, *, enabled: bool = True, stream: TextIO | None = None,
                 unit: str = "chunks") -> None:
        self.label, self.total, self.enabled, self.unit = label, max(int(total), 0), enabled, unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self.done = 0
        self._last = -1e9

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.done < self.total and now - self._last >= (0.2 if self.tty else 5.0):
            self._last = now
            self._draw(now, final=False)

    def _draw(self, now: float, *, final: bool) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = (self.total - self.done) / rate if rate > 0 and not final else 0.0
        tail = f"{elapsed:.1f}s" if final else f"eta {eta:.0f}s"
        line = f"{self.label}: {self.done:,}/{self.total:,} {self.unit} ({pct:.0f}%) {rate:,.0f}/s, {tail}"
        self.stream.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.perf_counter(), final=True)
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def note(message: str, *, enabled: bool = True) -> None:
    """A one-off status line (e.g. 'training IVF quantizer ...')."""
    if enabled:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()

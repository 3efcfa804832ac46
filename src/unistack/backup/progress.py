"""Progress of long backup work: a bar on a terminal, a plain line every 10 % (or 5 s)
when not, nothing with --json (whose one document is the answer)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_QUIET_BELOW = 64 << 20  # bytes: smaller work ends before plain lines would help


class Meter:
    """Counts bytes of one phase against its total and shows how far it is."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self._stream = stream or sys.stderr
        self._enabled = enabled
        self._tty = enabled and self._stream.isatty()
        self._label, self._total, self._done = "", 0, 0
        self._shown, self._last = -1, 0.0
        self._begun = time.monotonic()

    def phase(self, label: str, total: int) -> None:
        self.close()
        self._label, self._total, self._done = label, max(total, 1), 0
        self._shown, self._last, self._begun = -1, time.monotonic(), time.monotonic()

    def __call__(self, count: int) -> None:
        self._done += count
        if not self._enabled:
            return
        percent = min(100, self._done * 100 // self._total)
        now = time.monotonic()
        if self._tty and (percent != self._shown):
            filled = percent * 30 // 100
            self._stream.write(f"\r  {self._label:<10} [{'#' * filled}{'.' * (30 - filled)}]"
                               f" {percent:3d}% {self._rate(now)}")
            self._stream.flush()
            self._shown = percent
        elif not self._tty and self._total >= _QUIET_BELOW and (
                percent >= self._shown + 10 or now - self._last >= 5):
            self._stream.write(f"  {self._label}: {percent}% {self._rate(now)}\n")
            self._stream.flush()
            self._shown, self._last = percent, now

    def _rate(self, now: float) -> str:
        seconds = max(now - self._begun, 1e-6)
        return f"{self._done / seconds / 1e6:7.1f} MB/s"

    def close(self) -> None:
        if self._tty and self._shown >= 0:
            self._stream.write("\n")
            self._stream.flush()
        self._shown = -1

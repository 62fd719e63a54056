"""Progress lines for long profiling runs: a rewritten line on a terminal, every 10% otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Reports ``done/total`` steps with a label to a stream (stderr by default)."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_decile = -1
        self._start = time.monotonic()
        # The line at ``total`` is written once: the profiler goes on reporting retries of noisy points
        # after every point's first timing, and each wrote another finished line.
        self._finished = False

    def __call__(self, done: int, total: int, label: str) -> None:
        """Report that ``done`` of ``total`` steps are finished; ``label`` names the current one."""
        if not self.enabled or total <= 0 or self._finished:
            return
        self._finished = done >= total
        elapsed = time.monotonic() - self._start
        line = f"[{done:>{len(str(total))}}/{total}] {100 * done // total:3d}% {elapsed:6.1f}s  {label}"
        if self._tty:
            self.stream.write("\r" + line[:110].ljust(110) + ("\n" if done == total else ""))
            self.stream.flush()
            return
        decile = 10 * done // total
        if decile != self._last_decile or done == total:
            self._last_decile = decile
            self.stream.write(line + "\n")
            self.stream.flush()

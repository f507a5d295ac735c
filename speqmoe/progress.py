"""Progress lines for long work (stderr, one line per step, flushed)."""

from __future__ import annotations

import sys
import time


class Progress:
    """Prints ``[  12.3s] section: message`` lines on stderr."""

    def __init__(self, section: str = "speqmoe", *, quiet: bool = False):
        self.section = section
        self.quiet = quiet
        self._start = time.perf_counter()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            elapsed = time.perf_counter() - self._start
            # One write per line, so that lines from threads never interleave.
            sys.stderr.write(f"[{elapsed:7.1f}s] {self.section}: {message}\n")
            sys.stderr.flush()

    def child(self, section: str) -> "Progress":
        p = Progress(section, quiet=self.quiet)
        p._start = self._start
        return p

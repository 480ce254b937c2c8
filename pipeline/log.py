"""Progress and log lines on stderr (stdout stays for results and --json).

Several builds run at once, so every line carries the label of the build it belongs to.
Download progress redraws one line on a terminal and prints a single line per file elsewhere.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO
from urllib.parse import urlsplit, urlunsplit


def redact(url: str) -> str:
    """The URL without any user:password@ part, for display."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Reporter:
    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self._lock = threading.Lock()
        self._live = False  # a progress line is on screen and must be ended before a log line

    def info(self, label: str, message: str) -> None:
        if self.quiet:
            return
        with self._lock:
            self._end_live()
            print(f"[{label}] {message}" if label else message, file=self.stream, flush=True)

    def progress(self, label: str, done: int, total: int | None, started: float) -> None:
        """Redraw a download's progress line (terminals only)."""
        if self.quiet or not self.tty:
            return
        rate = done / max(time.monotonic() - started, 1e-6)
        share = f"{100 * done // total:3d}% " if total else ""
        text = f"[{label}] {share}{human_size(done)}" + (f"/{human_size(total)}" if total else "")
        with self._lock:
            print(f"\r\033[K{text} {human_size(rate)}/s", end="", file=self.stream, flush=True)
            self._live = True

    def _end_live(self) -> None:
        if self._live:
            print(file=self.stream)
            self._live = False

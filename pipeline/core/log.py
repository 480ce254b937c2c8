"""Progress and log lines on stderr (stdout stays for results and --json), through stdlib
`logging`.

Every line carries a label: the image being built (`[wasmtime 49.0.4 x86-64] ...`) when one is
set for the current context with `labelled(...)` (a context variable, so concurrent builds in
threads each keep their own), else the step's logger name (`[vm] ...`). Modules log with
`log = logging.getLogger("wsx.<step>")`; the CLI calls `setup()` once. Download progress
redraws one line on a terminal and is silent elsewhere.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TextIO
from urllib.parse import urlsplit, urlunsplit

ROOT = "wsx"
_label: ContextVar[str] = ContextVar("wsx_label", default="")


def get(step: str) -> logging.Logger:
    """The logger of a pipeline step; its name is the default label."""
    return logging.getLogger(f"{ROOT}.{step}")


@contextmanager
def labelled(label: str) -> Iterator[None]:
    """Label every line logged in this context (this thread or task) with `label`."""
    token = _label.set(label)
    try:
        yield
    finally:
        _label.reset(token)


def current_label() -> str:
    return _label.get()


class _Handler(logging.Handler):
    """Writes `[label] message` lines; ends a live progress line before a log line."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self.tty = stream.isatty()
        self.live = False
        self.guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        label = getattr(record, "wsx_label", "") or record.name.removeprefix(f"{ROOT}.")
        text = printable(record.getMessage())
        if record.levelno >= logging.WARNING:
            text = f"warning: {text}"  # stands out among progress lines, and greps
        line = f"[{label}] {text}" if label and label != ROOT else text
        with self.guard:
            self._end_live()
            self.stream.write(line + "\n")
            self.stream.flush()

    def progress(self, text: str) -> None:
        with self.guard:
            self.stream.write(f"\r\033[K{text}")
            self.stream.flush()
            self.live = True

    def _end_live(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.live = False


class _LabelFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.wsx_label = _label.get()
        return True


_handler: _Handler | None = None


def setup(quiet: bool = False, stream: TextIO | None = None) -> None:
    """Send the pipeline's log to `stream` (stderr); `quiet` keeps only warnings and errors."""
    global _handler
    root = logging.getLogger(ROOT)
    if _handler is not None:
        root.removeHandler(_handler)
    _handler = _Handler(stream or sys.stderr)
    _handler.addFilter(_LabelFilter())
    root.addHandler(_handler)
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    root.propagate = False


def progress(done: int, total: int | None, started: float) -> None:
    """Redraw the current download's progress line (terminals only, not when quiet)."""
    root = logging.getLogger(ROOT)
    if _handler is None or not _handler.tty or not root.isEnabledFor(logging.INFO):
        return
    rate = done / max(time.monotonic() - started, 1e-6)
    share = f"{100 * done // total:3d}% " if total else ""
    label = _label.get()
    text = (
        (f"[{label}] " if label else "")
        + share
        + human_size(done)
        + (f"/{human_size(total)}" if total else "")
    )
    _handler.progress(f"{text} {human_size(rate)}/s")


def printable(text: str) -> str:
    """`text` safe for a terminal: each line's control and other non-printable characters
    (a server's ESC sequences, a carriage return rewriting the line) shown as escapes."""
    return "\n".join(
        "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in line)
        for line in text.split("\n")
    )


def redact(url: str) -> str:
    """The URL without any user:password@ part, for display (also when it does not parse)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. a bad IPv6 host: hide whatever stands before an @
        return re.sub(r"^([^:/]*://)?[^/]*@", lambda m: f"{m.group(1) or ''}***@", url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows (the first a header) as aligned columns; the last column is not padded, so a long
    detail does not widen the table."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return (
        "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
            for row in rows
        ).rstrip()
        + "\n"
    )

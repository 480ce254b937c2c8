"""Where the tests keep what is slow to make and safe to reuse across runs (tools built from
the Go proxy, upstream archives, Debian roots, the reference VM disks, the shim build)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

CACHE = Path(
    os.environ.get("WASM_SYSEXTS_TEST_CACHE", Path.home() / ".cache" / "wasm-sysexts-tests")
)
# The pipeline cache every VM and signing test shares: Debian roots (the reference VM's,
# systemd-repart's) and the reference VM disk are built once, then reused across runs.
VM_CACHE = CACHE / "vm-cache"


def keep(target: Path, make: Callable[[Path], object]) -> Path:
    """`target`, made once by `make(path)` writing `path`. Concurrent makers (pytest-xdist
    workers) each write a file of their own and rename it into place: same bytes, last wins."""
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        make(Path(name))
        os.replace(name, target)
    finally:
        Path(name).unlink(missing_ok=True)
    return target

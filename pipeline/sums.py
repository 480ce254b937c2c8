"""SHA256SUMS files: the manifest systemd-sysupdate reads, in sha256sum(1) format.

Shared by build (writes it), sign, verify and publish (read it). Updates take a lock and
replace the file atomically, so concurrent builds into one directory never lose an entry.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.fetch import sha256_file

SUMS = "SHA256SUMS"
LINE_RE = re.compile(r"^([0-9a-f]{64}) [ *]([^/\s][^/]*)$")


def read_sums(path: Path) -> dict[str, str]:
    """file name -> sha256; malformed lines are an error naming the line."""
    sums: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise PipelineError(f"{path}: cannot read: {err.strerror}") from None
    for number, line in enumerate(text.splitlines(), 1):
        match = LINE_RE.match(line)
        if not match:
            raise PipelineError(f"{path}: line {number}: not '<sha256>  <file name>'")
        if match.group(2) in sums:
            raise PipelineError(f"{path}: line {number}: {match.group(2)} listed twice")
        sums[match.group(2)] = match.group(1)
    return sums


def format_sums(sums: dict[str, str]) -> str:
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items()))


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Write `path` so that readers see the old or the new content, never a part."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on `directory` (a `.lock` file in it), across threads and processes."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def update_sums(directory: Path, known: dict[str, str] | None = None) -> dict[str, str]:
    """Rewrite DIR/SHA256SUMS to list exactly the `*.raw` images in DIR.

    `known` gives hashes the caller just computed; other entries are kept from the old file
    while their file exists, and images missing from it are hashed.
    """
    with locked(directory):
        path = directory / SUMS
        old = read_sums(path) if path.exists() else {}
        sums = {}
        for image in sorted(directory.glob("*.raw")):
            name = image.name
            sums[name] = (known or {}).get(name) or old.get(name) or sha256_file(image)
        write_atomic(path, format_sums(sums))
        return sums

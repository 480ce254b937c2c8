"""Files written so that a reader or a crash never sees half of them.

- `write_atomic`: a uniquely named temporary file beside the target, fsynced, renamed in.
- `locked(dir)`: an exclusive flock on `dir/.lock`, across threads and processes.
- `scratch_dir(parent)` / `scratch_file(parent)`: work space that its owner holds an flock
  on while it lives. A process killed with -9 cannot clean up, so `sweep(parent)` (run by the
  next command that uses `parent`) removes every scratch entry whose flock is free: its owner
  is gone. Scratch names start with SCRATCH_PREFIX, so nothing else is ever swept, and an
  entry younger than SWEEP_MIN_AGE is left alone (its owner may not have locked it yet).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from pipeline.core.errors import PipelineError

CHUNK = 1 << 20
SCRATCH_PREFIX = ".~wsx-"
SWEEP_MIN_AGE = 2.0  # seconds; creation and flock are microseconds apart


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def os_problem(err: OSError) -> str:
    """A short reason for an OSError (ENOSPC, EROFS, EACCES...), without the path."""
    return err.strerror or errno.errorcode.get(err.errno or 0, str(err))


def os_error_line(err: OSError) -> str:
    """`FILE: reason` for an OSError that escaped to the top."""
    where = err.filename if err.filename is not None else "error"
    return f"{where}: {os_problem(err)}"


def link_or_copy(source: Path, target: Path) -> None:
    """`target` as a hard link to `source` (same file system), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Write `path` so that readers see the old or the new content, never a part."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with scratch_file(path.parent, path.name) as (tmp, f):
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
    except OSError as err:
        raise PipelineError(f"{path}: cannot write: {os_problem(err)}") from None


@contextmanager
def flocked(lock_file: Path, waiting: str = "") -> Iterator[None]:
    """An exclusive flock on `lock_file`, across threads and processes; `waiting` is logged
    when another holder makes us wait."""
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock_file, "a")  # noqa: SIM115  # held for the whole block
    except OSError as err:
        raise PipelineError(f"{lock_file.parent}: cannot use: {os_problem(err)}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                logging.getLogger("wsx").info(waiting)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def locked(directory: Path) -> AbstractContextManager[None]:
    """An exclusive lock on `directory` (a `.lock` file in it)."""
    return flocked(directory / ".lock")


def _hold(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


@contextmanager
def scratch_dir(parent: Path, label: str = "work") -> Iterator[Path]:
    """A private work directory in `parent`, removed on every exit path (and by `sweep` once
    its owner died)."""
    try:
        path = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{_safe(label)}-", dir=parent))
    except OSError as err:
        raise PipelineError(
            f"{parent}: cannot create a work directory: {os_problem(err)}"
        ) from None
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    _hold(fd)
    try:
        yield path
    finally:
        with suppress(OSError, PipelineError):
            remove_tree(path)
        os.close(fd)


@contextmanager
def scratch_file(parent: Path, label: str = "part") -> Iterator[tuple[Path, BinaryIO]]:
    """A private temporary file in `parent`, open for writing; removed unless renamed away."""
    fd, name = tempfile.mkstemp(prefix=f"{SCRATCH_PREFIX}{_safe(label)}-", dir=parent)
    _hold(fd)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield path, handle
    finally:
        path.unlink(missing_ok=True)


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in label)[:48]


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` (from /proc/self/mountinfo, octal escapes decoded)."""
    prefix = str(path.resolve())
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    points = (
        re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), ln.split()[4]) for ln in lines
    )
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def remove_tree(path: Path) -> None:
    """Remove a scratch tree, refusing to descend into a file system mounted inside it: a tool
    killed mid-run (mmdebstrap, a chroot) can leave the host's /proc, /sys or /dev there."""
    mounts = _mounts_under(path)
    if mounts:
        raise PipelineError(f"{path}: not removed, {mounts[0]} is still mounted inside it")
    shutil.rmtree(path)


def sweep(parent: Path) -> list[Path]:
    """Remove scratch entries in `parent` left by dead owners; returns what was removed."""
    if not parent.is_dir():
        return []
    removed = []
    for entry in parent.glob(f"{SCRATCH_PREFIX}*"):
        try:
            if time.time() - entry.lstat().st_mtime < SWEEP_MIN_AGE:
                continue
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            _hold(fd)
        except BlockingIOError:
            continue  # its owner is alive
        finally:
            os.close(fd)
        with suppress(OSError, PipelineError):
            if entry.is_dir() and not entry.is_symlink():
                remove_tree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Writing and reading a directory tree without ever following a link that came from an input.

Every path is walked one component at a time through directory file descriptors opened with
O_NOFOLLOW, and every file is created with O_CREAT|O_EXCL|O_NOFOLLOW: a symlink planted by an
archive (or by an earlier install entry) is refused as soon as a later write would go through
it, before anything is written. This does not rely on `tarfile`'s extraction filters, on
`os.path.realpath`, or on the Python version.

Paths are relative POSIX paths whose components are checked with `check_path` first.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from pipeline.core.errors import PipelineError
from pipeline.core.fs import CHUNK

MAX_DEPTH = 64  # path components
MAX_PATH = 1024  # bytes of a path below the tree's root
MAX_NAME = 255  # bytes of one component (the common filesystem limit)
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(PipelineError):
    """A path that may not be written or read (the message is the reason, without the path)."""


def check_path(name: str) -> PurePosixPath:
    """`name` as a relative path of plain components; UnsafePath saying why not."""
    if name.startswith(("/", "\\")):
        raise UnsafePath("absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafePath("path contains '..'")
    if not parts:
        raise UnsafePath("empty path")
    if len(parts) > MAX_DEPTH:
        raise UnsafePath(f"more than {MAX_DEPTH} directory levels")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_PATH:
        raise UnsafePath(f"path longer than {MAX_PATH} bytes")
    if any(len(p.encode("utf-8", "surrogateescape")) > MAX_NAME for p in parts):
        raise UnsafePath(f"a name longer than {MAX_NAME} bytes")
    if any("\0" in p for p in parts):
        raise UnsafePath("NUL in path")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # tarfile keeps undecodable bytes as lone surrogates
        raise UnsafePath("name is not UTF-8 (the SBOM and the image's users need text)") from None
    return PurePosixPath(*parts)


def is_top(name: str) -> bool:
    """Whether `name` is the archive's own top directory (`.` or `./`, as
    `tar -C dir -czf a.tgz .` writes it): nothing to create."""
    return not name.startswith("/") and all(p in ("", ".") for p in name.split("/"))


def link_target_inside(link: PurePosixPath, target: str) -> bool:
    """Whether symlink `link` -> `target` stays inside the tree, read lexically (links are
    stored, never followed, while a tree is built; the image's links are checked for real
    when it is complete)."""
    if target.startswith("/") or not target:
        return False
    depth = len(link.parts) - 1
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return False
        elif part not in ("", "."):
            depth += 1
    return True


@dataclass(frozen=True)
class Entry:
    """What `walk` finds: a path relative to the tree and its lstat."""

    path: PurePosixPath
    mode: int

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)


class Tree:
    """A directory tree rooted at `root`, read and written only below it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fd = os.open(root, _DIR)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Tree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _parent(self, path: PurePosixPath, create: bool) -> int:
        """An fd of `path`'s parent directory, walked without following links (the caller
        closes it); missing directories are made when `create`."""
        fd = os.dup(self.fd)
        try:
            for i in range(len(path.parts) - 1):
                nxt = _step(fd, path.parts[: i + 1], create)
                os.close(fd)
                fd = nxt
            return fd
        except BaseException:
            os.close(fd)
            raise

    def mkdir(self, path: PurePosixPath) -> None:
        parent = self._parent(path, create=True)
        try:
            os.mkdir(path.name, 0o755, dir_fd=parent)
        except FileExistsError:
            if not stat.S_ISDIR(os.stat(path.name, dir_fd=parent, follow_symlinks=False).st_mode):
                raise UnsafePath("exists and is not a directory") from None
        finally:
            os.close(parent)

    def create(self, path: PurePosixPath, mode: int) -> BinaryIO:
        """A new regular file, open for writing; refuses to replace anything."""
        parent = self._parent(path, create=True)
        try:
            fd = os.open(
                path.name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=parent,
            )
        except FileExistsError:
            raise UnsafePath("already exists (listed twice?)") from None
        finally:
            os.close(parent)
        os.fchmod(fd, mode)
        return os.fdopen(fd, "wb")

    def write(self, path: PurePosixPath, data: bytes, mode: int) -> None:
        with self.create(path, mode) as f:
            f.write(data)

    def symlink(self, path: PurePosixPath, target: str) -> None:
        parent = self._parent(path, create=True)
        try:
            os.symlink(target, path.name, dir_fd=parent)
        except FileExistsError:
            raise UnsafePath("already exists (listed twice?)") from None
        finally:
            os.close(parent)

    def hardlink(self, path: PurePosixPath, source: Tree, existing: PurePosixPath) -> None:
        """`path` becomes another name of `source`'s regular file `existing`."""
        src_parent = source._parent(existing, create=False)
        try:
            st = os.stat(existing.name, dir_fd=src_parent, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafePath(f"hard link to {existing}, which is not a regular file")
            parent = self._parent(path, create=True)
            try:
                os.link(
                    existing.name,
                    path.name,
                    src_dir_fd=src_parent,
                    dst_dir_fd=parent,
                    follow_symlinks=False,
                )
            except FileExistsError:
                raise UnsafePath("already exists (listed twice?)") from None
            finally:
                os.close(parent)
        finally:
            os.close(src_parent)

    def lstat(self, path: PurePosixPath) -> os.stat_result:
        parent = self._parent(path, create=False)
        try:
            return os.stat(path.name, dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)

    def readlink(self, path: PurePosixPath) -> str:
        parent = self._parent(path, create=False)
        try:
            return os.readlink(path.name, dir_fd=parent)
        finally:
            os.close(parent)

    def open(self, path: PurePosixPath) -> BinaryIO:
        """An existing regular file for reading (never through a link)."""
        parent = self._parent(path, create=False)
        try:
            fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        finally:
            os.close(parent)
        return os.fdopen(fd, "rb")

    def copy_from(
        self, source: Tree, src: PurePosixPath, dst: PurePosixPath, mode: int | None
    ) -> None:
        """Place `source`'s file or symlink `src` at `dst`: links are copied as links, files
        copied in the kernel (never hard-linked: the source may be a shared cache, and a link
        count would leak into erofs images)."""
        st = source.lstat(src)
        if stat.S_ISLNK(st.st_mode):
            self.symlink(dst, source.readlink(src))
            return
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(f"{src} is neither a file nor a link")
        wanted = mode if mode is not None else (0o755 if st.st_mode & 0o111 else 0o644)
        with source.open(src) as inp, self.create(dst, wanted) as out:
            copy_bytes(inp, out, st.st_size)

    def chmod(self, path: PurePosixPath, mode: int) -> None:
        parent = self._parent(path, create=False)
        try:
            os.chmod(path.name, mode, dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)

    def walk(self, top: PurePosixPath | None = None) -> Iterator[Entry]:
        """Every entry below `top` (default: the root), parents before children, sorted,
        without following links."""
        start = os.dup(self.fd) if top is None else self._open_dir(top)
        yield from self._walk(start, top or PurePosixPath())

    def _open_dir(self, path: PurePosixPath) -> int:
        parent = self._parent(path, create=False)
        try:
            return os.open(path.name, _DIR, dir_fd=parent)
        finally:
            os.close(parent)

    def _walk(self, fd: int, prefix: PurePosixPath) -> Iterator[Entry]:
        try:
            names = sorted(os.listdir(fd))
            for name in names:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                entry = Entry(prefix / name, st.st_mode)
                yield entry
                if entry.is_dir:
                    yield from self._walk(os.open(name, _DIR, dir_fd=fd), entry.path)
        finally:
            os.close(fd)


def copy_bytes(inp: BinaryIO, out: BinaryIO, size: int) -> None:
    """`size` bytes from `inp` to `out` with copy_file_range, falling back to read/write."""
    done = 0
    try:
        while done < size:
            n = os.copy_file_range(inp.fileno(), out.fileno(), min(size - done, 1 << 30))
            if n == 0:
                break
            done += n
    except OSError:
        inp.seek(done)
        out.seek(done)
        while chunk := inp.read(CHUNK):
            out.write(chunk)


def _step(fd: int, parts: tuple[str, ...], create: bool) -> int:
    """Open directory `parts[-1]` in `fd` without following a link (making it if `create`)."""
    name = parts[-1]
    try:
        return os.open(name, _DIR, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as err:
        raise _not_a_dir(fd, parts, err) from None
    with suppress(FileExistsError):  # made meanwhile (or a link, which the open refuses)
        os.mkdir(name, 0o755, dir_fd=fd)
    try:
        return os.open(name, _DIR, dir_fd=fd)
    except OSError as err:
        raise _not_a_dir(fd, parts, err) from None


def _not_a_dir(fd: int, parts: tuple[str, ...], err: OSError) -> UnsafePath:
    where = PurePosixPath(*parts)
    if _is_link(fd, parts[-1]):
        return UnsafePath(f"goes through a link ({where})")
    return UnsafePath(f"{where} is not a directory ({err.strerror})")


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False

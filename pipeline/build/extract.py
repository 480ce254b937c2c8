"""Safe unpacking of upstream inputs (tar.gz, tgz, tar.xz, tar.bz2, tar.zst, tar, zip, or one
file) into an empty directory.

Safe by construction, member by member, before each write:
- names must be relative paths of plain components (no absolute paths, no `..`), not too deep
  or long; every write goes through `pipeline.build.tree`, which never follows a link, so a
  symlink the archive planted cannot redirect a later member (the write is refused first);
- symlinks must stay inside the archive, hard links must name a file extracted before them;
- no device nodes, FIFOs or setuid/setgid bits;
- every decompressor's output is counted against the limit (`--max-unpack`, default
  MAX_TOTAL_BYTES) as it streams, and every member's size is checked against what is left
  before it is written: a 355 KiB .tar.zst that would expand to fill the disk stops there.
`tarfile` only parses headers and hands out member data; its extraction (and its filters,
which differ across Python versions) is never used.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import shutil
import stat
import subprocess
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from pipeline.build.tree import (
    Tree,
    UnsafePath,
    check_path,
    copy_bytes,
    is_top,
    link_target_inside,
)
from pipeline.core import run
from pipeline.core.errors import PipelineError
from pipeline.core.fs import CHUNK, os_problem

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

MAX_TOTAL_BYTES = 4 << 30  # default limit of what one input may unpack to
MAX_MEMBER_BYTES = 2 << 30  # no runtime ships a larger single file
MAX_MEMBERS = 100_000
# Bumped when what unpack() produces changes: part of the unpacked-input cache key.
FORMAT = "3"
_DECOMPRESSORS: dict[str, Callable[[Path], io.BufferedIOBase]] = {
    ".tar.gz": gzip.GzipFile,
    ".tgz": gzip.GzipFile,
    ".crate": gzip.GzipFile,  # crates.io's package format: a gzip tar of <name>-<version>/
    ".tar.xz": lzma.LZMAFile,
    ".txz": lzma.LZMAFile,
    ".tar.bz2": bz2.BZ2File,
}
_ZSTD = (".tar.zst", ".tar.zstd")
TAR_SUFFIXES = (*_DECOMPRESSORS, *_ZSTD, ".tar")


def input_kind(filename: str) -> str:
    """'tar', 'zip' or 'file', from the upstream file name."""
    lower = filename.lower()
    if lower.endswith(TAR_SUFFIXES):
        return "tar"
    if lower.endswith(".zip"):
        return "zip"
    return "file"


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Counted(io.RawIOBase):
    """A reader that refuses to hand out more than `limit` bytes in all."""

    def __init__(self, inner: _Reader, limit: int, label: str) -> None:
        self.inner, self.limit, self.label, self.count = inner, limit, label, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        data = self.inner.read(len(view))
        self.count += len(data)
        if self.count > self.limit:
            raise PipelineError(
                f"{self.label}: unpacks to more than {self.limit} bytes "
                "(refused before writing them)"
            )
        view[: len(data)] = data
        return len(data)


def unpack(
    source: Path, filename: str, dest: Path, label: str, limit: int = MAX_TOTAL_BYTES
) -> None:
    """Unpack `source` (downloaded as `filename`) into the empty directory `dest`, at most
    `limit` bytes in all. `label` (the URL) prefixes every error. A single file lands as
    `dest/<filename>`."""
    kind = input_kind(filename)
    with Tree(dest) as tree:
        try:
            if kind == "file":
                _single(source, filename, tree, label)
            elif kind == "zip":
                _unzip(source, tree, label, limit)
            else:
                with _tar_stream(source, filename, label, limit) as stream:
                    _untar(stream, tree, label, limit)
        except (
            tarfile.TarError,
            zipfile.BadZipFile,
            EOFError,
            lzma.LZMAError,
            gzip.BadGzipFile,
            ValueError,
        ) as err:
            raise PipelineError(f"{label}: not a valid {kind} archive: {err}") from None
        except OSError as err:
            raise PipelineError(f"{label}: cannot unpack: {os_problem(err)}") from None


def _single(source: Path, filename: str, tree: Tree, label: str) -> None:
    try:
        path = check_path(filename)
    except UnsafePath:
        raise PipelineError(f"{label}: cannot derive a file name from the URL") from None
    if len(path.parts) != 1:
        raise PipelineError(f"{label}: cannot derive a file name from the URL")
    with source.open("rb") as inp, tree.create(path, 0o644) as out:
        copy_bytes(inp, out, source.stat().st_size)


@contextmanager
def _tar_stream(source: Path, filename: str, label: str, limit: int) -> Iterator[BinaryIO]:
    """The archive's uncompressed tar stream, counted against `limit` (with room for headers
    and padding)."""
    lower = filename.lower()
    limit += 64 << 20
    if lower.endswith(_ZSTD):
        proc = run.spawn(
            ["zstd", "-dc", "--", source], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stderr is not None
        try:
            yield io.BufferedReader(_Counted(proc.stdout, limit, label), CHUNK)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            problem = proc.stderr.read().decode(errors="replace")
            proc.stderr.close()
            if proc.wait() not in (0, -9):
                raise PipelineError(f"{label}: zstd: {run.reason(problem, proc.returncode)}")
        return
    opener = next((fn for suffix, fn in _DECOMPRESSORS.items() if lower.endswith(suffix)), None)
    with opener(source) if opener else source.open("rb") as raw:
        yield io.BufferedReader(_Counted(raw, limit, label), CHUNK)


def _unsafe(label: str, name: str, why: str) -> PipelineError:
    return PipelineError(f"{label}: unsafe member {name!r}: {why}")


def _check_size(name: str, size: int, total: int, label: str, limit: int) -> None:
    if size > min(limit, MAX_MEMBER_BYTES) or total > limit:
        raise _unsafe(
            label,
            name,
            f"absurd size ({size} bytes; limits "
            f"{min(limit, MAX_MEMBER_BYTES)} per member, {limit} in all)",
        )


def _untar(stream: BinaryIO, tree: Tree, label: str, limit: int) -> None:
    total = count = 0
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            count += 1
            if count > MAX_MEMBERS:
                raise PipelineError(f"{label}: more than {MAX_MEMBERS} members")
            name = member.name
            if member.isdir() and is_top(name):
                continue
            try:
                path = check_path(name)
                if member.isdev() or member.isfifo():
                    raise UnsafePath("device node or FIFO")
                if member.mode & (stat.S_ISUID | stat.S_ISGID):
                    raise UnsafePath("setuid/setgid bit set")
                total += member.size
                _check_size(name, member.size, total, label, limit)
                if member.isdir():
                    tree.mkdir(path)
                elif member.issym():
                    if member.linkname.startswith("/"):
                        raise UnsafePath("link to an absolute path")
                    if not link_target_inside(path, member.linkname):
                        raise UnsafePath("link points outside the archive")
                    tree.symlink(path, member.linkname)
                elif member.islnk():
                    try:
                        target = check_path(member.linkname)
                    except UnsafePath as err:
                        raise UnsafePath(f"hard link target {member.linkname!r}: {err}") from None
                    tree.hardlink(path, tree, target)
                elif member.isreg():
                    data = tar.extractfile(member)
                    assert data is not None
                    with tree.create(path, member.mode & 0o777) as out:
                        shutil.copyfileobj(data, out, CHUNK)
                else:
                    raise UnsafePath(f"unsupported member type {member.type!r}")
            except UnsafePath as err:
                raise _unsafe(label, name, str(err)) from None
            except OSError as err:
                raise _unsafe(label, name, os_problem(err)) from None


def _unzip(source: Path, tree: Tree, label: str, limit: int) -> None:
    with zipfile.ZipFile(source) as archive:
        infos = archive.infolist()
        if len(infos) > MAX_MEMBERS:
            raise PipelineError(f"{label}: more than {MAX_MEMBERS} members")
        total = 0
        for info in infos:
            name = info.filename
            mode = info.external_attr >> 16
            if info.is_dir() and is_top(name):
                continue
            try:
                path = check_path(name)
                if (
                    stat.S_ISLNK(mode)
                    or stat.S_ISCHR(mode)
                    or stat.S_ISBLK(mode)
                    or stat.S_ISFIFO(mode)
                ):
                    raise UnsafePath("links and special files are not supported in zip inputs")
                if mode & (stat.S_ISUID | stat.S_ISGID):
                    raise UnsafePath("setuid/setgid bit set")
                total += info.file_size
                _check_size(name, info.file_size, total, label, limit)
                if info.is_dir():
                    tree.mkdir(path)
                    continue
                with (
                    archive.open(info) as src,
                    tree.create(path, 0o755 if mode & 0o111 else 0o644) as out,
                ):
                    copied = 0
                    while chunk := src.read(CHUNK):
                        copied += len(chunk)
                        # Stop at the declared size: a header that lies about it is a bomb.
                        if copied > info.file_size:
                            raise UnsafePath("larger than its header says")
                        out.write(chunk)
            except UnsafePath as err:
                raise _unsafe(label, name, str(err)) from None
            except OSError as err:
                raise _unsafe(label, name, os_problem(err)) from None

"""Safe unpacking of upstream inputs (tar.gz, tgz, tar.xz, tar.bz2, tar.zst, zip, or one file).

Safe by construction: every member is checked before anything is written, the standard library's
tar `data` filter guards the write itself, and the first unsafe member aborts with its name.
Refused: absolute paths, `..`, links leaving the tree, device nodes and FIFOs, setuid/setgid
bits, and absurd sizes (zip bombs, sparse giants).
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from pipeline.core import run
from pipeline.core.errors import PipelineError

MAX_MEMBER_BYTES = 2 << 30
MAX_TOTAL_BYTES = 4 << 30
MAX_MEMBERS = 100_000
TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tar.zst", ".tar.zstd", ".tar")


def input_kind(filename: str) -> str:
    """'tar', 'zip' or 'file', from the upstream file name."""
    lower = filename.lower()
    if lower.endswith(TAR_SUFFIXES):
        return "tar"
    if lower.endswith(".zip"):
        return "zip"
    return "file"


def unpack(source: Path, filename: str, dest: Path, label: str) -> None:
    """Unpack `source` (downloaded as `filename`) into the empty directory `dest`.

    `label` (the URL) prefixes every error. A single file lands as `dest/<filename>`.
    """
    kind = input_kind(filename)
    if kind == "file":
        if "/" in filename or filename in ("", ".", ".."):
            raise PipelineError(f"{label}: cannot derive a file name from the URL")
        shutil.copyfile(source, dest / filename)
        return
    try:
        if kind == "zip":
            _unzip(source, dest, label)
        elif filename.lower().endswith((".tar.zst", ".tar.zstd")):
            _untar_zstd(source, dest, label)
        else:
            with tarfile.open(source, "r:*") as tar:
                _untar(tar, dest, label)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
        raise PipelineError(f"{label}: not a valid {kind} archive: {err}") from None


def _check_name(name: str, label: str) -> None:
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("\\"):
        raise PipelineError(f"{label}: unsafe member {name!r}: absolute path")
    if ".." in path.parts:
        raise PipelineError(f"{label}: unsafe member {name!r}: path contains '..'")


def _check_size(name: str, size: int, total: int, label: str) -> None:
    if size > MAX_MEMBER_BYTES or total > MAX_TOTAL_BYTES:
        raise PipelineError(f"{label}: unsafe member {name!r}: absurd size ({size} bytes; "
                            f"limits {MAX_MEMBER_BYTES} per member, {MAX_TOTAL_BYTES} in all)")


def _untar(tar: tarfile.TarFile, dest: Path, label: str) -> None:
    members: list[tarfile.TarInfo] = []
    total = 0
    for member in tar:
        if len(members) >= MAX_MEMBERS:
            raise PipelineError(f"{label}: more than {MAX_MEMBERS} members")
        _check_name(member.name, label)
        if member.isdev() or member.isfifo():
            raise PipelineError(f"{label}: unsafe member {member.name!r}: device node or FIFO")
        if member.mode & (stat.S_ISUID | stat.S_ISGID):
            raise PipelineError(f"{label}: unsafe member {member.name!r}: setuid/setgid bit set")
        total += member.size
        _check_size(member.name, member.size, total, label)
        try:
            # The data filter refuses links that leave the tree and absolute link targets.
            members.append(tarfile.data_filter(member, str(dest)))
        except tarfile.FilterError as err:
            raise PipelineError(f"{label}: unsafe member {member.name!r}: {_reason(err)}") from None
    tar.extractall(dest, members=members, filter="data")


def _reason(err: tarfile.FilterError) -> str:
    if isinstance(err, tarfile.AbsoluteLinkError):
        return "link to an absolute path"
    if isinstance(err, tarfile.LinkOutsideDestinationError):
        return "link points outside the archive"
    if isinstance(err, tarfile.OutsideDestinationError):
        return "path leaves the archive"
    return str(err)


def _untar_zstd(source: Path, dest: Path, label: str) -> None:
    with tempfile.TemporaryFile(dir=dest) as plain:
        run.run(["zstd", "-dc", "--", source], stdout=plain, what=f"{label}: zstd")
        plain.seek(0)
        with tarfile.open(fileobj=plain, mode="r:") as tar:
            _untar(tar, dest, label)


def _unzip(source: Path, dest: Path, label: str) -> None:
    with zipfile.ZipFile(source) as archive:
        infos = archive.infolist()
        if len(infos) > MAX_MEMBERS:
            raise PipelineError(f"{label}: more than {MAX_MEMBERS} members")
        total = 0
        for info in infos:
            _check_name(info.filename, label)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or \
                    stat.S_ISFIFO(mode):
                raise PipelineError(f"{label}: unsafe member {info.filename!r}: "
                                    "links and special files are not supported in zip inputs")
            if mode & (stat.S_ISUID | stat.S_ISGID):
                raise PipelineError(f"{label}: unsafe member {info.filename!r}: "
                                    "setuid/setgid bit set")
            total += info.file_size
            _check_size(info.filename, info.file_size, total, label)
        for info in infos:
            target = dest / info.filename
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, target.open("wb") as out:
                # Stop at the declared size: a header that lies about it is a bomb.
                copied = 0
                while chunk := src.read(1 << 20):
                    copied += len(chunk)
                    if copied > info.file_size:
                        raise PipelineError(f"{label}: unsafe member {info.filename!r}: "
                                            "larger than its header says")
                    out.write(chunk)
            os.chmod(target, 0o755 if (info.external_attr >> 16) & 0o111 else 0o644)

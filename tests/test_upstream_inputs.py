"""The source-build tests' inputs come from anywhere: without ../shared/sources, an upstream
archive is downloaded from its URL into the test cache and checked against its git tree pin
before any test uses it (here the "upstream" is the local mirror)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.mirror import Mirror
from support.payloads import tar_bytes
from support.sources import SIMDE, Archive, archive

from pipeline.build.source import git_tree_id

URL = "https://github.com/example/tool/archive/refs/tags/v1.0.tar.gz"
Members = dict[str, bytes | tuple[bytes, int]]
FILES: Members = {
    "tool-1.0/src/main.c": (b"int main(void) { return 0; }\n", 0o644),
    "tool-1.0/configure": (b"#!/bin/sh\n", 0o755),
}


def tree_of(files: Members, tmp: Path) -> str:
    for name, value in files.items():
        data, mode = value if isinstance(value, tuple) else (value, 0o644)
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(data)
        (tmp / name).chmod(mode)
    return git_tree_id(tmp / "tool-1.0")


def test_archive_is_downloaded_and_checked_when_not_shared(tmp_path: Path, mirror: Mirror) -> None:
    item = Archive("tool-1.0.tar.gz", URL, tree_of(FILES, tmp_path / "expected"))
    data = tar_bytes(FILES, "gz")
    mirror.put(URL, data)
    cache = tmp_path / "cache"
    path = archive(item, shared=tmp_path / "no-shared", cache=cache, mirror=mirror.url)
    assert path.read_bytes() == data and path.is_relative_to(cache)
    # The second call finds it in the cache: nothing is downloaded again.
    mirror.put(URL, b"gone")
    assert archive(item, shared=tmp_path / "no-shared", cache=cache, mirror=mirror.url) == path


def test_archive_with_another_tree_is_refused(tmp_path: Path, mirror: Mirror) -> None:
    item = Archive(
        "tool-1.0.tar.gz", URL.replace("v1.0", "v1.0-forged"), tree_of(FILES, tmp_path / "expected")
    )
    forged: Members = {**FILES, "tool-1.0/src/main.c": (b"int main(void) { return 1; }\n", 0o644)}
    mirror.put(item.url, tar_bytes(forged, "gz"))
    with pytest.raises(
        AssertionError,
        match=r"v1.0-forged.tar.gz .*: the archive is git tree "
        r"[0-9a-f]{40}"
        rf", but the tests pin {item.tree}$",
    ):
        archive(item, shared=tmp_path / "no-shared", cache=tmp_path / "cache", mirror=mirror.url)


def test_shared_copy_is_checked_too(tmp_path: Path) -> None:
    """A shared directory is a stand-in for upstream, not trusted more than upstream."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / SIMDE.file).write_bytes(tar_bytes({"simde-v0.8.2/simde/simde.h": b"/* */\n"}, "gz"))
    with pytest.raises(
        AssertionError, match=f"simde is git tree .*, but the tests pin {SIMDE.tree}"
    ):
        archive(SIMDE, shared=shared, cache=tmp_path / "cache", mirror=None)

"""Builders of hostile inputs and the checks the bad-input tests share."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from support.cli import run_build
from support.mirror import Mirror
from support.recipes import TINY_BINARY


def tar_with(*infos: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        ok = tarfile.TarInfo("tiny/bin/tiny")
        ok.size, ok.mode = len(TINY_BINARY), 0o755
        tar.addfile(ok, io.BytesIO(TINY_BINARY))
        for info, data in infos:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def member(
    name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "", data: bytes = b"x"
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else b""


def assert_nothing_left(out: Path) -> None:
    if not out.exists():
        return
    left = sorted(p.name for p in out.iterdir() if p.name != ".lock")
    assert left == [], left


def build_fails(
    mirror: Mirror, recipes: Path, name: str, tmp_path: Path, *extra: str, version: str = "1.0"
) -> str:
    out = tmp_path / "out"
    proc = run_build(name, recipes, mirror.url, tmp_path / "cache", out, *extra)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert_nothing_left(out)
    errors = [line for line in proc.stderr.splitlines() if "] FAILED: " in line]
    assert len(errors) == 1, proc.stderr
    assert f"{name}-{version}-x86-64.raw  failed" in proc.stdout  # the summary table says so too
    return errors[0].split("] FAILED: ", 1)[1]

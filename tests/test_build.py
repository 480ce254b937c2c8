"""Building real images through the local mirror, reading them back with the real tools,
running the wasmtime binary from inside them, and rebuilding byte-identically."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import run_cli
from support.mirror import Mirror
from support.payloads import HELLO_OUTPUT, WASMTIME_VERSION

from pipeline.build.image import image_uuid
from pipeline.core.fs import sha256_file

IMAGE = f"wasmtime-{WASMTIME_VERSION}-x86-64.raw"


def build(recipes: Path, mirror: Mirror, cache: Path, out: Path, *extra: str) -> dict:
    proc = run_cli("build", "wasmtime", "--recipes", recipes, "--mirror", mirror.url,
                   "--cache", cache, "--out", out, "--arch", "x86-64", "--json", *extra,
                   check=True)
    [result] = json.loads(proc.stdout)
    return result


@pytest.fixture(scope="module", params=["squashfs", "erofs"])
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          recipes: Path, mirror: Mirror) -> tuple[str, Path, dict]:
    fmt = request.param
    base = tmp_path_factory.mktemp(fmt)
    result = build(recipes, mirror, base / "cache", base / "out", "--format", fmt)
    return fmt, base, result


def extract(fmt: str, image: Path, dest: Path) -> None:
    if fmt == "squashfs":
        subprocess.run(["unsquashfs", "-q", "-n", "-d", str(dest), str(image)], check=True)
    else:
        subprocess.run(["fsck.erofs", f"--extract={dest}", str(image)], check=True,
                       capture_output=True)


def test_image_runs_wasm_and_carries_extension_release(built: tuple[str, Path, dict],
                                                       hello_wasm: Path,
                                                       tmp_path: Path) -> None:
    fmt, base, result = built
    assert result["status"] == "built" and result["image"] == IMAGE
    image = base / "out" / IMAGE
    tree = tmp_path / "tree"
    extract(fmt, image, tree)
    files = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if not p.is_dir())
    assert files == ["usr/bin/wasmtime", "usr/lib/extension-release.d/extension-release.wasmtime"]
    release = (tree / "usr/lib/extension-release.d/extension-release.wasmtime").read_text()
    assert release.splitlines() == ["ID=_any", "ARCHITECTURE=x86-64", "SYSEXT_ID=wasmtime",
                                    f"SYSEXT_VERSION_ID={WASMTIME_VERSION}"]
    run = subprocess.run([str(tree / "usr/bin/wasmtime"), "run", str(hello_wasm)],
                         capture_output=True, text=True, check=True)
    assert run.stdout.strip() == HELLO_OUTPUT


def test_image_is_root_owned_with_fixed_times(built: tuple[str, Path, dict]) -> None:
    fmt, base, _ = built
    image = base / "out" / IMAGE
    if fmt == "squashfs":
        listing = subprocess.run(["unsquashfs", "-lln", str(image)],
                                 capture_output=True, text=True, check=True).stdout
        entries = [line for line in listing.splitlines() if line.startswith(("-", "d", "l"))]
        assert entries and all(" 0/0 " in line for line in entries), listing
        assert all("1970-01-01 00:00" in line for line in entries), listing
        return
    inode = subprocess.run(["dump.erofs", "--path=/usr/bin/wasmtime", str(image)],
                           capture_output=True, text=True, check=True).stdout
    assert "Uid: 0   Gid: 0" in inode and "Timestamp: 1970-01-01 00:00:00" in inode, inode
    superblock = subprocess.run(["dump.erofs", "-s", str(image)], capture_output=True,
                                text=True, check=True).stdout
    # The UUID is derived from the image name, so rebuilds carry the same one.
    assert f"Filesystem UUID:{' ' * 30}{image_uuid(IMAGE)}" in superblock, superblock


def test_metadata_and_sums_describe_the_image(built: tuple[str, Path, dict],
                                              recipes: Path) -> None:
    fmt, base, result = built
    out = base / "out"
    meta = json.loads((out / f"{IMAGE}.json").read_text())
    assert meta["format"] == fmt and meta["arch"] == "x86-64"
    assert meta["image"]["sha256"] == result["sha256"]
    assert meta["image"]["size"] == (out / IMAGE).stat().st_size
    [source] = meta["inputs"]
    assert source["url"].startswith("https://github.com/bytecodealliance/wasmtime/releases/")
    assert len(source["sha256"]) == 64
    assert fmt in meta["tools"]
    sbom = out / IMAGE.replace(".raw", ".spdx.json")
    assert (out / "SHA256SUMS").read_text() == f"{result['sha256']}  {IMAGE}\n" \
        f"{sha256_file(sbom)}  {sbom.name}\n"


def test_rebuild_in_fresh_cache_is_byte_identical(built: tuple[str, Path, dict], recipes: Path,
                                                  mirror: Mirror, tmp_path: Path) -> None:
    fmt, _, first = built
    again = build(recipes, mirror, tmp_path / "cache", tmp_path / "out", "--format", fmt)
    assert again["status"] == "built"
    assert again["sha256"] == first["sha256"]


def test_unchanged_image_is_skipped_without_download(built: tuple[str, Path, dict],
                                                     recipes: Path, mirror: Mirror) -> None:
    fmt, base, first = built
    hits = sum(mirror.hits.values())
    again = build(recipes, mirror, base / "cache", base / "out", "--format", fmt)
    assert again["status"] == "unchanged" and again["sha256"] == first["sha256"]
    assert sum(mirror.hits.values()) == hits


def test_offline_build_uses_the_cache(built: tuple[str, Path, dict], recipes: Path,
                                      mirror: Mirror, tmp_path: Path) -> None:
    fmt, base, first = built
    again = build(recipes, mirror, base / "cache", tmp_path / "out", "--format", fmt,
                  "--offline")
    assert again["sha256"] == first["sha256"]
    proc = run_cli("build", "wasmtime", "--recipes", recipes, "--cache", tmp_path / "empty",
                   "--out", tmp_path / "out2", "--offline", "--format", fmt)
    assert proc.returncode == 1
    assert "(--offline)" in proc.stderr and "not in cache" in proc.stderr


def test_arches_sharing_one_download_build_concurrently(mirror: Mirror, tmp_path: Path) -> None:
    """Two arches whose inputs are the same bytes share one cache entry: the download must be
    complete on disk before it appears there, or the other build reads a partial file, calls
    it corrupt and deletes it under the first (seen in CI with the wsxhello test payload)."""
    from support.recipes import serve, tiny_tarball, write_recipe

    sha = serve(mirror, "https://example.org/same/x86_64.tar.gz", tiny_tarball())
    serve(mirror, "https://example.org/same/aarch64.tar.gz", tiny_tarball())
    base = "https://example.org/same"
    write_recipe(tmp_path, "same",
                 f'    x86-64: {{url: "{base}/x86_64.tar.gz", sha256: "{sha}"}}\n'
                 f'    arm64: {{url: "{base}/aarch64.tar.gz", sha256: "{sha}"}}\n')
    for attempt in range(8):  # a fresh cache each time: both builds download at once
        proc = run_cli("build", "same", "--recipes", tmp_path, "--mirror", mirror.url,
                       "--cache", tmp_path / f"cache{attempt}", "--out", tmp_path / "out",
                       "--arch", "x86-64", "--arch", "arm64", "--jobs", "2")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "corrupt" not in proc.stderr, proc.stderr

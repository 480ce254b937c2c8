"""Building real images through the local mirror, reading them back with the real tools,
running the wasmtime binary from inside them, and rebuilding byte-identically."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.cli import run_build, run_cli
from support.mirror import Mirror
from support.payloads import HELLO_OUTPUT, WASMTIME_VERSION
from support.recipes import WASMTIME_BASE, sha256_of

from pipeline.build.image import image_uuid
from pipeline.core.fs import sha256_file

ROOT = Path(__file__).resolve().parent.parent
IMAGE = f"wasmtime-{WASMTIME_VERSION}-x86-64.raw"


def build(recipes: Path, mirror: Mirror, cache: Path, out: Path, *extra: str) -> dict[str, Any]:
    proc = run_build("wasmtime", recipes, mirror.url, cache, out, "--json", *extra, check=True)
    result: dict[str, Any]
    [result] = json.loads(proc.stdout)
    return result


@pytest.fixture(scope="module", params=["squashfs", "erofs"])
def built(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    recipes: Path,
    mirror: Mirror,
) -> tuple[str, Path, dict[str, Any]]:
    fmt = request.param
    base = tmp_path_factory.mktemp(fmt)
    result = build(recipes, mirror, base / "cache", base / "out", "--format", fmt)
    return fmt, base, result


def extract(fmt: str, image: Path, dest: Path) -> None:
    if fmt == "squashfs":
        subprocess.run(["unsquashfs", "-q", "-n", "-d", str(dest), str(image)], check=True)
    else:
        subprocess.run(
            ["fsck.erofs", f"--extract={dest}", str(image)], check=True, capture_output=True
        )


def test_image_runs_wasm_and_carries_extension_release(
    built: tuple[str, Path, dict[str, Any]], hello_wasm: Path, tmp_path: Path
) -> None:
    fmt, base, result = built
    assert result["status"] == "built" and result["image"] == IMAGE
    image = base / "out" / IMAGE
    tree = tmp_path / "tree"
    extract(fmt, image, tree)
    files = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if not p.is_dir())
    assert files == ["usr/bin/wasmtime", "usr/lib/extension-release.d/extension-release.wasmtime"]
    release = (tree / "usr/lib/extension-release.d/extension-release.wasmtime").read_text()
    assert release.splitlines() == [
        "ID=_any",
        "ARCHITECTURE=x86-64",
        "SYSEXT_ID=wasmtime",
        f"SYSEXT_VERSION_ID={WASMTIME_VERSION}",
    ]
    run = subprocess.run(
        [str(tree / "usr/bin/wasmtime"), "run", str(hello_wasm)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.strip() == HELLO_OUTPUT


def test_image_is_root_owned_with_fixed_times(built: tuple[str, Path, dict[str, Any]]) -> None:
    fmt, base, _ = built
    image = base / "out" / IMAGE
    if fmt == "squashfs":
        listing = subprocess.run(
            ["unsquashfs", "-lln", str(image)], capture_output=True, text=True, check=True
        ).stdout
        entries = [line for line in listing.splitlines() if line.startswith(("-", "d", "l"))]
        assert entries and all(" 0/0 " in line for line in entries), listing
        assert all("1970-01-01 00:00" in line for line in entries), listing
        return
    inode = subprocess.run(
        ["dump.erofs", "--path=/usr/bin/wasmtime", str(image)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Uid: 0   Gid: 0" in inode and "Timestamp: 1970-01-01 00:00:00" in inode, inode
    superblock = subprocess.run(
        ["dump.erofs", "-s", str(image)], capture_output=True, text=True, check=True
    ).stdout
    # The UUID is derived from the image name, so rebuilds carry the same one.
    assert f"Filesystem UUID:{' ' * 30}{image_uuid(IMAGE)}" in superblock, superblock


def test_metadata_and_sums_describe_the_image(
    built: tuple[str, Path, dict[str, Any]], recipes: Path, mirror: Mirror
) -> None:
    fmt, base, result = built
    out = base / "out"
    meta = json.loads((out / f"{IMAGE}.json").read_text())
    assert meta["format"] == fmt and meta["arch"] == "x86-64"
    assert meta["image"]["sha256"] == result["sha256"]
    assert meta["image"]["size"] == (out / IMAGE).stat().st_size
    [source] = meta["inputs"]
    url = f"{WASMTIME_BASE}/wasmtime-v{WASMTIME_VERSION}-x86_64-linux.tar.xz"
    assert source == {"url": url, "sha256": sha256_of(mirror, url)}
    assert fmt in meta["tools"]
    sbom = out / IMAGE.replace(".raw", ".spdx.json")
    assert (
        out / "SHA256SUMS"
    ).read_text() == f"{result['sha256']}  {IMAGE}\n{sha256_file(sbom)}  {sbom.name}\n"


def test_rebuild_in_fresh_cache_is_byte_identical(
    built: tuple[str, Path, dict[str, Any]], recipes: Path, mirror: Mirror, tmp_path: Path
) -> None:
    fmt, _, first = built
    again = build(recipes, mirror, tmp_path / "cache", tmp_path / "out", "--format", fmt)
    assert again["status"] == "built"
    assert again["sha256"] == first["sha256"]


def test_unchanged_image_is_skipped_without_download(
    built: tuple[str, Path, dict[str, Any]], recipes: Path, mirror: Mirror
) -> None:
    fmt, base, first = built
    hits = sum(mirror.hits.values())
    again = build(recipes, mirror, base / "cache", base / "out", "--format", fmt)
    assert again["status"] == "unchanged" and again["sha256"] == first["sha256"]
    assert sum(mirror.hits.values()) == hits


def test_offline_build_uses_the_cache(
    built: tuple[str, Path, dict[str, Any]], recipes: Path, mirror: Mirror, tmp_path: Path
) -> None:
    fmt, base, first = built
    again = build(recipes, mirror, base / "cache", tmp_path / "out", "--format", fmt, "--offline")
    assert again["sha256"] == first["sha256"]
    proc = run_cli(
        "build",
        "wasmtime",
        "--recipes",
        recipes,
        "--cache",
        tmp_path / "empty",
        "--out",
        tmp_path / "out2",
        "--offline",
        "--format",
        fmt,
    )
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
    write_recipe(
        tmp_path,
        "same",
        f'    x86-64: {{url: "{base}/x86_64.tar.gz", sha256: "{sha}"}}\n'
        f'    arm64: {{url: "{base}/aarch64.tar.gz", sha256: "{sha}"}}\n',
    )
    for attempt in range(8):  # a fresh cache each time: both builds download at once
        proc = run_cli(
            "build",
            "same",
            "--recipes",
            tmp_path,
            "--mirror",
            mirror.url,
            "--cache",
            tmp_path / f"cache{attempt}",
            "--out",
            tmp_path / "out",
            "--arch",
            "x86-64",
            "--arch",
            "arm64",
            "--jobs",
            "2",
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "corrupt" not in proc.stderr, proc.stderr


def test_offline_build_names_the_missing_input_and_fetch_fills_the_cache(
    recipes: Path, mirror: Mirror, tmp_path: Path
) -> None:
    """What the Dagger module relies on to keep a mirror service out of its builds' cache
    keys: an offline build with an empty cache fails saying a fetch would fix it; `fetch`
    downloads exactly the pinned inputs; the offline build then succeeds."""
    cache, out = tmp_path / "cache", tmp_path / "out"
    offline = run_cli(
        "build",
        "wasmtime",
        "--recipes",
        recipes,
        "--cache",
        cache,
        "--out",
        out,
        "--arch",
        "x86-64",
        "--offline",
        "--json",
    )
    [row] = json.loads(offline.stdout)
    assert offline.returncode == 1 and row["status"] == "failed" and row["not_cached"] is True
    assert row["error"].endswith("(--offline)") and "wasmtime-v" in row["error"]
    fetched = run_cli(
        "fetch",
        "wasmtime",
        "--recipes",
        recipes,
        "--mirror",
        mirror.url,
        "--cache",
        cache,
        "--arch",
        "x86-64",
        "--arch",
        "arm64",
        check=True,
    )
    assert fetched.stdout.splitlines() == [
        f"wasmtime {WASMTIME_VERSION} x86-64: 1 input(s) fetched",
        f"wasmtime {WASMTIME_VERSION} arm64: 1 input(s) fetched",
    ]
    result = build(recipes, mirror, cache, out, "--offline")
    assert result["status"] == "built" and result["not_cached"] is False


def test_merge_gathers_build_outputs_into_a_new_directory(
    recipes: Path, mirror: Mirror, tmp_path: Path
) -> None:
    """`merge` takes each image with its metadata and SBOM, never a lock or scratch file, and
    writes one SHA256SUMS; a relative --out (the default's form) lands where the user is."""
    cache = tmp_path / "cache"
    for arch in ("x86-64", "arm64"):
        run_cli(
            "build",
            "wasmtime",
            "--recipes",
            recipes,
            "--mirror",
            mirror.url,
            "--cache",
            cache,
            "--out",
            tmp_path / arch,
            "--arch",
            arch,
            check=True,
        )
    (tmp_path / "x86-64" / ".~wsx-left-by-a-killed-build").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "merge", "x86-64", "arm64", "--out", "merged"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    merged = tmp_path / "merged"
    images = [f"wasmtime-{WASMTIME_VERSION}-{a}" for a in ("arm64", "x86-64")]
    assert sorted(p.name for p in merged.iterdir()) == sorted(
        [
            "SHA256SUMS",
            *(f"{i}.raw" for i in images),
            *(f"{i}.raw.json" for i in images),
            *(f"{i}.spdx.json" for i in images),
        ]
    )
    assert merged.stat().st_mode & 0o777 == 0o755
    sums = (merged / "SHA256SUMS").read_text()
    assert proc.stdout == sums and sums.count("\n") == 4
    assert all(
        f"{sha256_file(merged / n)}  {n}\n" in sums
        for n in (f"{images[0]}.raw", f"{images[1]}.spdx.json")
    )
    # The same image name with other bytes is refused, and nothing is written.
    tampered = tmp_path / "tampered"
    subprocess.run(["cp", "-a", tmp_path / "x86-64", tampered], check=True)
    image = tampered / f"{images[1]}.raw"
    image.write_bytes(image.read_bytes() + b"\0")
    bad = run_cli("merge", tmp_path / "x86-64", tampered, "--out", tmp_path / "never")
    assert bad.returncode == 1 and not (tmp_path / "never").exists()
    assert bad.stderr.strip() == (
        f"wasm-sysexts: error: {image}: sha256 {sha256_file(image)} "
        f"differs from its {tampered / 'SHA256SUMS'} entry "
        f"{sums.split()[sums.split().index(image.name) - 1]}"
    )
    again = run_cli("merge", tmp_path / "x86-64", "--out", merged)
    assert again.returncode == 1 and "already exists" in again.stderr

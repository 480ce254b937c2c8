"""Source builds with the real toolchains: wazero from its Go module (cross-compiled for
arm64 natively by Go), WAMR's iwasm with CMake (cross-compiled with Debian's
aarch64-linux-gnu toolchain), runwasi's containerd-shim-wasmtime with cargo; byte-identical
rebuilds; the ELF check that refuses an image carrying another arch's binaries; lock for a
Go module. Inputs come through the local mirror from ../shared/sources and the Go proxy."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests
from support import prefetch
from support.cache import CACHE, VM_CACHE
from support.cli import run_cli
from support.hostile import build_fails
from support.mirror import Mirror
from support.payloads import HELLO_OUTPUT, WASMTIME_VERSION
from support.recipes import WASMTIME_BASE, sha256_of
from support.sources import (
    RUNWASI_ADVISORY,
    RUNWASI_LOCK,
    SHIM_OUT,
    WAMR_VERSION,
    WAZERO_MODULE,
    WAZERO_VERSION,
    serve_sources,
    shim_image,
    wamr_source_recipe,
    wazero_source_recipe,
)

pytestmark = pytest.mark.source
ARCHES = ("x86-64", "arm64")


@pytest.fixture(scope="module")
def pins(mirror: Mirror) -> dict[str, str]:
    return serve_sources(mirror)


@pytest.fixture(scope="module")
def source_recipes(tmp_path_factory: pytest.TempPathFactory, pins: dict[str, str]) -> Path:
    directory = tmp_path_factory.mktemp("source-recipes")
    (directory / "wazero.yaml").write_text(wazero_source_recipe(pins["wazero-h1"]))
    (directory / "wamr.yaml").write_text(wamr_source_recipe(pins))
    return directory


def build(
    recipes: Path, mirror: Mirror, cache: Path, out: Path, *names: str
) -> list[dict[str, Any]]:
    proc = run_cli(
        "build",
        *names,
        "--recipes",
        recipes,
        "--mirror",
        mirror.url,
        "--cache",
        cache,
        "--out",
        out,
        "--arch",
        "x86-64",
        "--arch",
        "arm64",
        "--json",
        "--quiet",
        check=True,
        timeout=1800,
    )
    return list(json.loads(proc.stdout))


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory, source_recipes: Path, mirror: Mirror
) -> tuple[Path, list[dict[str, Any]]]:
    base = tmp_path_factory.mktemp("source-built")
    results = build(source_recipes, mirror, base / "cache", base / "out", "wazero", "wamr")
    return base / "out", results


def unpack(image: Path, dest: Path) -> Path:
    subprocess.run(
        ["unsquashfs", "-q", "-n", "-d", str(dest), str(image)], check=True, capture_output=True
    )
    return dest


def file_type(path: Path) -> str:
    return subprocess.run(
        ["file", "-b", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_source_go_wazero_for_both_arches(
    built: tuple[Path, list[dict[str, Any]]], tmp_path: Path, hello_wasm: Path
) -> None:
    out, results = built
    assert {(r["name"], r["arch"]): r["status"] for r in results if r["name"] == "wazero"} == {
        ("wazero", a): "built" for a in ARCHES
    }
    x86 = unpack(out / f"wazero-{WAZERO_VERSION}-x86-64.raw", tmp_path / "x86") / "usr/bin/wazero"
    arm = unpack(out / f"wazero-{WAZERO_VERSION}-arm64.raw", tmp_path / "arm") / "usr/bin/wazero"
    assert "x86-64" in file_type(x86) and "statically linked" in file_type(x86)
    assert "ARM aarch64" in file_type(arm) and "statically linked" in file_type(arm)
    version = subprocess.run([str(x86), "version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"v{WAZERO_VERSION}"  # the ldflags reached the binary
    hello = subprocess.run([str(x86), "run", str(hello_wasm)], capture_output=True, text=True)
    assert hello.stdout.strip() == HELLO_OUTPUT
    meta = json.loads((out / f"wazero-{WAZERO_VERSION}-arm64.raw.json").read_text())
    assert meta["source"]["kind"] == "go" and meta["source"]["h1"].startswith("h1:")
    assert meta["source"]["module"] == WAZERO_MODULE
    sbom = json.loads((out / f"wazero-{WAZERO_VERSION}-arm64.spdx.json").read_text())
    [source] = [p for p in sbom["packages"] if p["SPDXID"].startswith("SPDXRef-Source-")]
    assert (
        source["externalRefs"][0]["referenceLocator"]
        == f"pkg:golang/{WAZERO_MODULE}@v{WAZERO_VERSION}"
    )
    assert meta["tools"]["go"].startswith("go version go")
    assert meta["elf"] == [
        {"path": "/usr/bin/wazero", "machine": "arm64", "interpreter": None, "needed": []}
    ]


def test_source_cmake_wamr_for_both_arches(
    built: tuple[Path, list[dict[str, Any]]], tmp_path: Path, hello_wasm: Path
) -> None:
    out, _ = built
    x86 = unpack(out / f"wamr-{WAMR_VERSION}-x86-64.raw", tmp_path / "x86") / "usr/bin/iwasm"
    arm = unpack(out / f"wamr-{WAMR_VERSION}-arm64.raw", tmp_path / "arm") / "usr/bin/iwasm"
    assert "x86-64" in file_type(x86)
    assert "ARM aarch64" in file_type(arm) and "/lib/ld-linux-aarch64.so.1" in file_type(arm)
    for command in ([str(x86)], ["qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu", str(arm)]):
        run = subprocess.run([*command, str(hello_wasm)], capture_output=True, text=True)
        assert run.stdout.strip() == HELLO_OUTPUT, (command, run.stderr)
    meta = json.loads((out / f"wamr-{WAMR_VERSION}-arm64.raw.json").read_text())
    [elf] = meta["elf"]
    assert elf["interpreter"] == "/lib/ld-linux-aarch64.so.1"
    assert "libc.so.6" in elf["needed"]
    assert meta["source"]["archive"]["tree"] == "6e277d2ae70da4a2269cbd5300ec3b49ebc71194"
    assert "aarch64-linux-gnu-gcc" in meta["tools"] and "cmake" in meta["tools"]
    assert not [ln for ln in arm.read_bytes().split(b"\0") if b"/.~wsx-" in ln], (
        "no build path is embedded"
    )


@pytest.mark.vm
@pytest.mark.arm64_vm
@pytest.mark.debroot
def test_source_arm64_images_boot_in_the_arm64_vm(
    built: tuple[Path, list[dict[str, Any]]], source_recipes: Path, tmp_path: Path
) -> None:
    """The arm64 half of a release executed: wazero and WAMR cross-built above merge in an
    arm64 reference VM (qemu-system-aarch64) and run the hello module there."""
    out, _ = built
    prefetch.wait()
    proc = run_cli(
        "smoke-test",
        out,
        "--os",
        "reference",
        "--arch",
        "arm64",
        "--recipes",
        source_recipes,
        "--cache",
        VM_CACHE,
        "--timeout",
        "1200",
        "--json",
        "--report",
        tmp_path / "report.json",
        timeout=2400,
    )
    assert proc.stdout, proc.stderr
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, json.dumps(report, indent=2)
    assert {(i["name"], i["arch"], i["status"]) for i in report["images"]} == {
        ("wazero", "arm64", "passed"),
        ("wamr", "arm64", "passed"),
    }
    for image in report["images"]:
        assert any(HELLO_OUTPUT in s["output"] for s in image["steps"]), image
    [boot] = report["boots"]
    assert boot["arch"] == "arm64" and not boot["timed_out"]
    print(
        f"\n--- arm64 reference VM ({boot['accel']}): booted and ran "
        f"{[i['image'] for i in report['images']]} in {boot['seconds']} s"
    )


def test_source_rebuild_is_byte_identical(
    built: tuple[Path, list[dict[str, Any]]], source_recipes: Path, mirror: Mirror, tmp_path: Path
) -> None:
    _, first = built
    again = build(source_recipes, mirror, tmp_path / "cache", tmp_path / "out", "wazero", "wamr")
    assert {r["image"]: r["sha256"] for r in again} == {r["image"]: r["sha256"] for r in first}
    assert all(r["status"] == "built" for r in again), "a fresh cache rebuilt everything"


def test_source_image_with_another_arch_binary_is_refused(mirror: Mirror, tmp_path: Path) -> None:
    # An "aarch64" release archive that really holds the x86-64 wasmtime.
    x86 = f"{WASMTIME_BASE}/wasmtime-v{WASMTIME_VERSION}-x86_64-linux.tar.xz"
    (tmp_path / "mixed.yaml").write_text(f"""\
name: mixed
summary: an arm64 image with an x86-64 binary
homepage: https://example.org
license: MIT
version: "1.0"
versions:
  "1.0":
    arm64: {{url: "{x86}", sha256: "{sha256_of(mirror, x86)}"}}
install:
  - {{from: "wasmtime-v{WASMTIME_VERSION}-x86_64-linux/wasmtime", to: /usr/bin/wasmtime}}
""")
    proc = run_cli(
        "build",
        "mixed",
        "--recipes",
        tmp_path,
        "--mirror",
        mirror.url,
        "--cache",
        tmp_path / "cache",
        "--out",
        tmp_path / "out",
        "--arch",
        "arm64",
    )
    assert proc.returncode == 1
    assert (
        "mixed.yaml: /usr/bin/wasmtime is an ELF file for x86-64, not arm64: refused in "
        "an arm64 image" in proc.stderr
    ), proc.stderr
    assert not list((tmp_path / "out").glob("*.raw"))


def test_source_unpinned_is_refused_and_lock_pins_it(
    pins: dict[str, str], mirror: Mirror, tmp_path: Path
) -> None:
    lookup = (
        f"https://proxy.golang.org/sumdb/sum.golang.org/lookup/{WAZERO_MODULE}@v{WAZERO_VERSION}"
    )
    mirror.put(lookup, requests.get(lookup, timeout=60).content)  # the checksum database
    recipe = tmp_path / "wazero.yaml"
    recipe.write_text(
        wazero_source_recipe(pins["wazero-h1"]).replace(
            f'{{h1: "{pins["wazero-h1"]}"}}', "{h1: null}"
        )
    )
    error = build_fails(
        mirror, tmp_path, "wazero", tmp_path, "--from", "source", version=WAZERO_VERSION
    )
    assert "source.versions.1.9.0: not pinned; run 'wasm-sysexts lock wazero" in error
    proc = run_cli(
        "lock",
        "wazero",
        "--recipes",
        tmp_path,
        "--mirror",
        mirror.url,
        "--cache",
        tmp_path / "cache",
        check=True,
    )
    assert f"{pins['wazero-h1']} (matches the checksum database)" in proc.stdout
    assert f'{{h1: "{pins["wazero-h1"]}"}}' in recipe.read_text()


def test_source_cargo_runwasi_shim(mirror: Mirror) -> None:
    """The repository's runwasi shim recipe from source, with cargo (shared with the CRI
    tests through the test cache)."""
    image = shim_image(mirror)
    meta = json.loads(Path(f"{image}.json").read_text())
    [elf] = meta["elf"]
    assert elf["machine"] == "x86-64" and "libseccomp.so.2" in elf["needed"]
    assert meta["source"]["lock_sha256"] == RUNWASI_LOCK
    assert meta["tools"]["rustc"].startswith("rustc ")
    tree = unpack(image, CACHE / "shim-check")
    try:
        shim = tree / "usr/bin/containerd-shim-wasmtime-v1"
        version = subprocess.run([str(shim), "-v"], capture_output=True, text=True, check=True)
        assert "Version: 0.6.0" in version.stdout, version.stdout
    finally:
        shutil.rmtree(tree)


def test_source_audit_flags_an_advisory_against_the_exact_version(
    built: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """A source-built image's SBOM names its Go module at the version built; an advisory for
    exactly that version fails the audit for both arches, and for no other image."""
    out, _ = built
    (tmp_path / "WSX-TEST-WAZERO.json").write_text(
        json.dumps(
            {
                "id": "WSX-TEST-WAZERO",
                "modified": "2026-12-08T00:00:00Z",
                "affected": [
                    {
                        "package": {"ecosystem": "Go", "name": WAZERO_MODULE},
                        "versions": [WAZERO_VERSION],
                    }
                ],
                "database_specific": {"severity": "HIGH"},
            }
        )
    )
    proc = run_cli("audit", out, "--db", tmp_path, "--json")
    assert proc.returncode == 1, proc.stderr
    findings = json.loads(proc.stdout)["findings"]
    assert sorted(f["image"] for f in findings) == [
        f"wazero-{WAZERO_VERSION}-{arch}.raw" for arch in ("arm64", "x86-64")
    ]
    assert {f["package"] for f in findings} == {f"pkg:golang/{WAZERO_MODULE}@v{WAZERO_VERSION}"}


def test_source_audit_flags_the_0_6_0_shim_and_its_engine(mirror: Mirror) -> None:
    """The runwasi 0.6.0 shim built from source: CVE-2026-47218 from the project feed as
    shipped, and the wasmtime 27.0.0 it embeds (from its Cargo.lock) against the wasmtime
    records."""
    shim_image(mirror)
    fixtures = Path(__file__).parent / "data" / "osv"
    proc = run_cli("audit", SHIM_OUT, "--db", fixtures, "--json")
    assert proc.returncode == 1, proc.stderr
    found = {(f["id"], f["package"], f["severity"]) for f in json.loads(proc.stdout)["findings"]}
    assert (
        RUNWASI_ADVISORY,
        "pkg:github/containerd/runwasi@containerd-shim-wasmtime%2Fv0.6.0",
        "critical",
    ) in found
    assert ("GHSA-m9f7-9w4p-gv38", "pkg:cargo/wasmtime@27.0.0", "unknown") in found

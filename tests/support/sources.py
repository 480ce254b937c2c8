"""Source-build inputs for the tests: the upstream archives of WAMR 2.4.5, simde v0.8.2 and
runwasi containerd-shim-wasmtime/v0.6.0 and the wazero module zip from the Go module proxy,
served through the local mirror at the URLs the recipes name, and test recipes pinned to them.

The archives are read from ../shared/sources (or $WASM_SYSEXTS_SHARED_SOURCES) when it holds
them, else downloaded from their real URLs (or $WASM_SYSEXTS_TEST_UPSTREAM_MIRROR, laid out as
MIRROR/HOST/PATH) into the test cache; either way each is checked against its git tree pin
before any test uses it, so a clone on a laptop or a GitHub runner runs the same tests."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.build.fetch import Fetcher
from pipeline.build.source import git_tree_id
from pipeline.core.fs import sha256_file, write_atomic
from support.cache import CACHE
from support.cli import run_cli
from support.mirror import Mirror

SHARED = Path(
    os.environ.get(
        "WASM_SYSEXTS_SHARED_SOURCES", Path(__file__).resolve().parents[3] / "shared" / "sources"
    )
)
UPSTREAM_MIRROR = os.environ.get("WASM_SYSEXTS_TEST_UPSTREAM_MIRROR") or None
WAMR_VERSION = "2.4.5"
WAMR_URL = (
    "https://github.com/bytecodealliance/wasm-micro-runtime/archive/refs/tags/WAMR-{version}.tar.gz"
)
SIMDE_URL = "https://github.com/simd-everywhere/simde/archive/refs/tags/v0.8.2.tar.gz"
RUNWASI_VERSION = "0.6.0"
RUNWASI_ADVISORY = "GHSA-cc25-vq59-rcjx"  # CVE-2026-47218, critical, fixed in 0.6.1
RUNWASI_URL = (
    "https://github.com/containerd/runwasi/archive/refs/tags/"
    "containerd-shim-wasmtime/v{version}.tar.gz"
)
WAZERO_MODULE = "github.com/tetratelabs/wazero"
WAZERO_VERSION = "1.9.0"
# SOURCES.md: git trees of the tags, the content pin that holds whoever packed the archive.
WAMR_TREE = "6e277d2ae70da4a2269cbd5300ec3b49ebc71194"
RUNWASI_TREE = "85aa9a228095af749083d338002a0abbd3c5241d"
# simde's whole tree has a submodule (test/munit) no archive carries; WAMR uses only its
# header directory simde/, whose tree is pinned instead.
SIMDE_HEADERS_TREE = "a4d64edb1a6ed0d99aa505484c2a467de27cab15"


@dataclass(frozen=True)
class Archive:
    """One upstream archive: where it comes from and the git tree of `subdir` of its single
    top-level directory ("" for that directory itself)."""

    file: str
    url: str
    tree: str
    subdir: str = ""


WAMR = Archive(
    "wasm-micro-runtime-WAMR-2.4.5.tar.gz", WAMR_URL.format(version=WAMR_VERSION), WAMR_TREE
)
SIMDE = Archive("simde-v0.8.2.tar.gz", SIMDE_URL, SIMDE_HEADERS_TREE, "simde")
RUNWASI = Archive(
    "runwasi-containerd-shim-wasmtime-v0.6.0.tar.gz",
    RUNWASI_URL.format(version=RUNWASI_VERSION),
    RUNWASI_TREE,
)


def archive(
    item: Archive,
    shared: Path = SHARED,
    cache: Path = CACHE / "upstream",
    mirror: str | None = UPSTREAM_MIRROR,
) -> Path:
    """The verified archive: the shared copy if there is one, else a download of item.url
    (once: the sha256 of what verified is remembered per URL and tree)."""
    local = shared / item.file
    if local.is_file():
        check_tree(local, item)
        return local
    fetcher = Fetcher(cache, mirror=mirror)
    known = cache / "verified" / hashlib.sha256(f"{item.url} {item.tree}".encode()).hexdigest()
    if known.is_file():
        return fetcher.fetch(item.url, known.read_text().strip())
    path = fetcher.fetch(item.url, None)
    check_tree(path, item)
    known.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(known, sha256_file(path) + "\n")
    return path


def check_tree(path: Path, item: Archive) -> None:
    with tempfile.TemporaryDirectory() as work, tarfile.open(path) as tar:
        tar.extractall(work, filter="data")
        [top] = Path(work).iterdir()
        actual = git_tree_id(top / item.subdir)
    assert actual == item.tree, (
        f"{item.url} ({path}): {item.subdir or 'the archive'} is git "
        f"tree {actual}, but the tests pin {item.tree}"
    )


def serve_sources(mirror: Mirror) -> dict[str, str]:
    """Put the upstream archives and the wazero module zip on the mirror; their sha256s and the
    module's h1."""
    pins = {}
    for item in (WAMR, SIMDE, RUNWASI):
        data = archive(item).read_bytes()
        mirror.put(item.url, data)
        pins[item.file] = hashlib.sha256(data).hexdigest()
    # The module zip as the proxy serves it (go mod download verifies it against sum.golang.org).
    info = json.loads(
        subprocess.run(
            ["go", "mod", "download", "-json", f"{WAZERO_MODULE}@v{WAZERO_VERSION}"],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "GOFLAGS": "-mod=mod"},
            cwd="/",
        ).stdout
    )
    mirror.put(
        f"https://proxy.golang.org/{WAZERO_MODULE}/@v/v{WAZERO_VERSION}.zip",
        Path(info["Zip"]).read_bytes(),
    )
    pins["wazero-h1"] = info["Sum"]
    return pins


def wazero_source_recipe(h1: str) -> str:
    return f"""\
name: wazero
summary: wazero built from its Go module
homepage: https://wazero.io
license: Apache-2.0
package: "pkg:golang/{WAZERO_MODULE}@v{{version}}"
version: "{WAZERO_VERSION}"
source:
  kind: go
  module: {WAZERO_MODULE}
  packages: {{wazero: ./cmd/wazero}}
  ldflags: "-X {WAZERO_MODULE}/internal/version.version=v{{version}}"
  versions:
    "{WAZERO_VERSION}": {{h1: "{h1}"}}
install:
  - {{from: "wazero", to: /usr/bin/wazero, mode: "0755"}}
smoke:
  - "wazero version"
  - "wazero run {{hello_wasm}}"
"""


# WAMR's release workflow flags (build_iwasm_release.yml) without the LLVM JIT and fast JIT,
# which fetch LLVM/asmjit from GitHub; simde comes from the pinned input instead of FetchContent.
WAMR_CONFIGURE = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DWAMR_BUILD_AOT=1",
    "-DWAMR_BUILD_INTERP=1",
    "-DWAMR_BUILD_FAST_JIT=0",
    "-DWAMR_BUILD_JIT=0",
    "-DWAMR_BUILD_LIB_PTHREAD=1",
    "-DWAMR_BUILD_LIB_PTHREAD_SEMAPHORE=1",
    "-DWAMR_BUILD_LIB_WASI_THREADS=1",
    "-DWAMR_BUILD_SHARED_MEMORY=1",
    "-DWAMR_BUILD_TAIL_CALL=1",
    "-DWAMR_BUILD_THREAD_MGR=1",
    "-DWAMR_BUILD_SIMD=1",
    "-DWAMR_BUILD_REF_TYPES=1",
    "-DWAMR_BUILD_BULK_MEMORY=1",
    "-DWAMR_BUILD_LIBC_WASI=1",
    "-DWAMR_BUILD_LIBC_BUILTIN=1",
    "-DFETCHCONTENT_SOURCE_DIR_SIMDE={simde}",
    "-DFETCHCONTENT_FULLY_DISCONNECTED=ON",
]


def wamr_source_recipe(pins: dict[str, str]) -> str:
    configure = "".join(f'\n    - "{flag}"' for flag in WAMR_CONFIGURE)
    return f"""\
name: wamr
summary: WAMR iwasm built from source
homepage: https://github.com/bytecodealliance/wasm-micro-runtime
license: Apache-2.0 WITH LLVM-exception
package: "pkg:github/bytecodealliance/wasm-micro-runtime@WAMR-{{version}}"
version: "{WAMR_VERSION}"
source:
  kind: cmake
  directory: product-mini/platforms/linux
  configure:{configure}
  target: iwasm
  outputs: {{iwasm: iwasm}}
  versions:
    "{WAMR_VERSION}":
      archive: {{url: "{WAMR_URL}", tree: "{WAMR_TREE}"}}
      inputs:
        simde: {{url: "{SIMDE_URL}", sha256: "{pins["simde-v0.8.2.tar.gz"]}"}}
install:
  - {{from: "iwasm", to: /usr/bin/iwasm, mode: "0755"}}
smoke:
  - "iwasm --version"
  - "iwasm {{hello_wasm}}"
"""


RUNWASI_LOCK = "8bc0d665c73f66ac05905683ea34037c54e7a641ea7fef0c8bc330eadb15947c"
SHIM_OUT = CACHE / "shim-out"


def shim_image(mirror: Mirror) -> Path:
    """The repository's containerd-shim-wasmtime recipe built from source (cargo, 0.6.0) into
    the shared test cache: built once per set of inputs, then found unchanged by every later
    test and run (the source-build test and the CRI tests share it)."""
    serve_sources(mirror)
    proc = run_cli(
        "build",
        "containerd-shim-wasmtime",
        "--version",
        RUNWASI_VERSION,
        "--from",
        "source",
        "--mirror",
        mirror.url,
        "--cache",
        CACHE / "shim-cache",
        "--out",
        SHIM_OUT,
        "--arch",
        "x86-64",
        # 0.6.0 is the newest shim source served here; the build refuses it by default.
        "--accept-advisory",
        RUNWASI_ADVISORY,
        "--json",
        "--quiet",
        check=True,
        timeout=3600,
    )
    [result] = json.loads(proc.stdout)
    assert result["status"] in ("built", "unchanged"), result
    image: str = result["image"]
    return SHIM_OUT / image

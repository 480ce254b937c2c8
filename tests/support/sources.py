"""Source-build inputs for the tests: the upstream archives in ../shared/sources (WAMR 2.4.5,
simde v0.8.2, runwasi containerd-shim-wasmtime/v0.6.0) and the wazero module zip from the Go
module proxy, served through the local mirror at the URLs the recipes name, and test recipes
pinned to them (see ../shared/sources/SOURCES.md for where the pins come from)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from support.mirror import Mirror
from support.vm_payloads import CACHE

SHARED = Path(os.environ.get("WASM_SYSEXTS_SHARED_SOURCES",
                             Path(__file__).resolve().parents[3] / "shared" / "sources"))
WAMR_VERSION = "2.4.5"
WAMR_URL = ("https://github.com/bytecodealliance/wasm-micro-runtime/archive/refs/tags/"
            "WAMR-{version}.tar.gz")
SIMDE_URL = "https://github.com/simd-everywhere/simde/archive/refs/tags/v0.8.2.tar.gz"
RUNWASI_VERSION = "0.6.0"
RUNWASI_URL = ("https://github.com/containerd/runwasi/archive/refs/tags/"
               "containerd-shim-wasmtime/v{version}.tar.gz")
WAZERO_MODULE = "github.com/tetratelabs/wazero"
WAZERO_VERSION = "1.9.0"
# SOURCES.md: git trees of the tags, the content pin that holds whoever packed the archive
# (simde's tree has a submodule an archive cannot carry, so it is pinned by sha256).
WAMR_TREE = "6e277d2ae70da4a2269cbd5300ec3b49ebc71194"
RUNWASI_TREE = "85aa9a228095af749083d338002a0abbd3c5241d"


def shared(name: str) -> Path:
    path = SHARED / name
    assert path.is_file(), f"{path}: upstream source archive missing (see SOURCES.md)"
    return path


def serve_sources(mirror: Mirror) -> dict[str, str]:
    """Put the shared archives and the wazero module zip on the mirror; their sha256s and the
    module's h1."""
    pins = {}
    for url, file in ((WAMR_URL.format(version=WAMR_VERSION),
                       "wasm-micro-runtime-WAMR-2.4.5.tar.gz"),
                      (SIMDE_URL, "simde-v0.8.2.tar.gz"),
                      (RUNWASI_URL.format(version=RUNWASI_VERSION),
                       "runwasi-containerd-shim-wasmtime-v0.6.0.tar.gz")):
        data = shared(file).read_bytes()
        mirror.put(url, data)
        pins[file] = hashlib.sha256(data).hexdigest()
    # The module zip as the proxy serves it (go mod download verifies it against sum.golang.org).
    info = json.loads(subprocess.run(
        ["go", "mod", "download", "-json", f"{WAZERO_MODULE}@v{WAZERO_VERSION}"],
        capture_output=True, text=True, check=True, env={**os.environ, "GOFLAGS": "-mod=mod"},
        cwd="/").stdout)
    mirror.put(f"https://proxy.golang.org/{WAZERO_MODULE}/@v/v{WAZERO_VERSION}.zip",
               Path(info["Zip"]).read_bytes())
    pins["wazero-h1"] = info["Sum"]
    return pins


def wazero_source_recipe(h1: str) -> str:
    return f"""\
name: wazero
summary: wazero built from its Go module
homepage: https://wazero.io
license: Apache-2.0
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
    "-DCMAKE_BUILD_TYPE=Release", "-DWAMR_BUILD_AOT=1", "-DWAMR_BUILD_INTERP=1",
    "-DWAMR_BUILD_FAST_JIT=0", "-DWAMR_BUILD_JIT=0", "-DWAMR_BUILD_LIB_PTHREAD=1",
    "-DWAMR_BUILD_LIB_PTHREAD_SEMAPHORE=1", "-DWAMR_BUILD_LIB_WASI_THREADS=1",
    "-DWAMR_BUILD_SHARED_MEMORY=1", "-DWAMR_BUILD_TAIL_CALL=1", "-DWAMR_BUILD_THREAD_MGR=1",
    "-DWAMR_BUILD_SIMD=1", "-DWAMR_BUILD_REF_TYPES=1", "-DWAMR_BUILD_BULK_MEMORY=1",
    "-DWAMR_BUILD_LIBC_WASI=1", "-DWAMR_BUILD_LIBC_BUILTIN=1",
    "-DFETCHCONTENT_SOURCE_DIR_SIMDE={simde}", "-DFETCHCONTENT_FULLY_DISCONNECTED=ON",
]


def wamr_source_recipe(pins: dict[str, str]) -> str:
    configure = "".join(f'\n    - "{flag}"' for flag in WAMR_CONFIGURE)
    return f"""\
name: wamr
summary: WAMR iwasm built from source
homepage: https://github.com/bytecodealliance/wasm-micro-runtime
license: Apache-2.0 WITH LLVM-exception
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
        simde: {{url: "{SIMDE_URL}", sha256: "{pins['simde-v0.8.2.tar.gz']}"}}
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
    from conftest import run_cli

    serve_sources(mirror)
    proc = run_cli("build", "containerd-shim-wasmtime", "--version", RUNWASI_VERSION,
                   "--from", "source", "--mirror", mirror.url, "--cache", CACHE / "shim-cache",
                   "--out", SHIM_OUT, "--arch", "x86-64", "--json", "--quiet", check=True,
                   timeout=3600)
    [result] = json.loads(proc.stdout)
    assert result["status"] in ("built", "unchanged"), result
    return SHIM_OUT / result["image"]

"""Small test recipes pinned to archives the tests put on the local mirror."""

from __future__ import annotations

import hashlib
from pathlib import Path

from support.mirror import Mirror
from support.payloads import WASMTIME_VERSION, tar_bytes

TINY_BINARY = b"#!/bin/sh\necho tiny\n"


def tiny_tarball() -> bytes:
    return tar_bytes({"tiny/bin/tiny": (TINY_BINARY, 0o755), "tiny/README": b"tiny\n"}, "gz")


def write_recipe(
    recipes: Path,
    name: str,
    arches: str,
    install: str | None = None,
    extra: str = "",
    package: str | None = "pkg:github/example/{name}@v{{version}}",
) -> Path:
    """A recipe NAME whose `versions."1.0"` block is `arches` (YAML, indented 4 spaces), naming
    `package` (None: no package: field)."""
    install = install or '  - {from: "tiny/bin/tiny", to: /usr/bin/tiny, mode: "0755"}\n'
    package_line = f'package: "{package.format(name=name)}"\n' if package else ""
    path = recipes / f"{name}.yaml"
    path.write_text(f"""\
# test recipe {name}
name: {name}
summary: test payload
homepage: https://example.org/{name}
license: MIT
{package_line}version: "1.0"
versions:
  "1.0":
{arches}install:
{install}{extra}""")
    return path


def serve(mirror: Mirror, url: str, data: bytes) -> str:
    """Put `data` on the mirror at `url`; returns its sha256."""
    mirror.put(url, data)
    return hashlib.sha256(data).hexdigest()


def pinned_tiny(
    mirror: Mirror,
    recipes: Path,
    name: str,
    data: bytes | None = None,
    sha256: str | None = None,
    url: str | None = None,
    package: str | None = "pkg:github/example/{name}@v{{version}}",
) -> Path:
    """A recipe for x86-64 only, pinned to `data` served at `url` (defaults: the tiny tarball)."""
    url = url or f"https://example.org/{name}/v1.0/{name}.tar.gz"
    digest = serve(mirror, url, data if data is not None else tiny_tarball())
    arches = f'    x86-64: {{url: "{url}", sha256: "{sha256 or digest}"}}\n'
    return write_recipe(recipes, name, arches, package=package)


WASMTIME_BASE = (
    f"https://github.com/bytecodealliance/wasmtime/releases/download/v{WASMTIME_VERSION}"
)


def sha256_of(mirror: Mirror, url: str) -> str:
    return hashlib.sha256((mirror.root / url.split("://", 1)[1]).read_bytes()).hexdigest()


def wasmtime_recipe(mirror: Mirror) -> str:
    """The wasmtime recipe of the repository's shape, pinned to the mirror's archives."""
    x86 = f"{WASMTIME_BASE}/wasmtime-v{WASMTIME_VERSION}-x86_64-linux.tar.xz"
    arm = f"{WASMTIME_BASE}/wasmtime-v{WASMTIME_VERSION}-aarch64-linux.tar.xz"
    return f"""\
name: wasmtime
summary: Standalone WebAssembly runtime from the Bytecode Alliance
homepage: https://wasmtime.dev
license: Apache-2.0 WITH LLVM-exception
version: "{WASMTIME_VERSION}"
versions:
  "{WASMTIME_VERSION}":
    x86-64: {{url: "{x86}", sha256: "{sha256_of(mirror, x86)}"}}
    arm64: {{url: "{arm}", sha256: "{sha256_of(mirror, arm)}"}}
install:
  - {{from: "wasmtime-v{{version}}-{{uarch}}-linux/wasmtime", to: /usr/bin/wasmtime, mode: "0755"}}
smoke:
  - "wasmtime --version"
  - "wasmtime run {{hello_wasm}}"
"""

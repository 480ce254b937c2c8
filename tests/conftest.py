"""Session-wide fixtures: the local upstream mirror, pinned test recipes, real payloads."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import prefetch
from support.mirror import Mirror
from support.payloads import (
    WASMTIME_VERSION,
    compile_hello,
    elf_header,
    tar_bytes,
    wasmtime_tarball,
)

WASMTIME_BASE = (f"https://github.com/bytecodealliance/wasmtime/releases/download/"
                 f"v{WASMTIME_VERSION}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if any(item.get_closest_marker(prefetch.MARKER) for item in items):
        prefetch.start()


def run_cli(*args: str | Path, env: dict[str, str] | None = None,
            check: bool = False, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run `python -m pipeline ARGS` as a user would, capturing stdout and stderr."""
    proc = subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\n"
                             f"stderr:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session", autouse=True)
def stop_test_gpg_agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests that run gpg themselves start agents in their homes; stop those when done (the
    pipeline's own gpg homes stop theirs)."""
    yield
    for socket in tmp_path_factory.getbasetemp().rglob("S.gpg-agent"):
        subprocess.run(["gpgconf", "--homedir", str(socket.parent), "--kill", "gpg-agent"],
                       capture_output=True, check=False)


@pytest.fixture(scope="session")
def hello_wasm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_hello(tmp_path_factory.mktemp("wasm") / "hello.wasm")


@pytest.fixture(scope="session")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    with Mirror(tmp_path_factory.mktemp("mirror")) as m:
        m.put(f"{WASMTIME_BASE}/wasmtime-v{WASMTIME_VERSION}-x86_64-linux.tar.xz",
              wasmtime_tarball())
        # No aarch64 wasmtime is obtainable here; an archive in the same layout holding an
        # aarch64 ELF header stands in.
        m.put(f"{WASMTIME_BASE}/wasmtime-v{WASMTIME_VERSION}-aarch64-linux.tar.xz", tar_bytes({
            f"wasmtime-v{WASMTIME_VERSION}-aarch64-linux/wasmtime": (elf_header(), 0o755)}))
        yield m


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


@pytest.fixture(scope="session")
def recipes(tmp_path_factory: pytest.TempPathFactory, mirror: Mirror) -> Path:
    """A recipes directory holding test recipes pinned to the mirror's archives."""
    directory = tmp_path_factory.mktemp("recipes")
    (directory / "wasmtime.yaml").write_text(wasmtime_recipe(mirror))
    return directory


@pytest.fixture(scope="session")
def publish_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(armored secret key, binary public keyring) signing the publishing tests' images."""
    from support.registry_images import make_key

    return make_key(tmp_path_factory.mktemp("publish-key"))


@pytest.fixture(scope="session")
def signed_images(tmp_path_factory: pytest.TempPathFactory, mirror: Mirror,
                  publish_key: tuple[Path, Path]) -> dict[str, Path]:
    """{version: signed directory} of the `wsxhello` test extension, both arches; read-only
    for tests (copy before changing anything)."""
    from support.registry_images import build_signed

    return build_signed(run_cli, mirror, tmp_path_factory.mktemp("signed"), publish_key[0])

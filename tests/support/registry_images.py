"""Signed test images for the publishing tests (static tree, OCI registry, sysupdate VM).

A tiny extension `wsxhello` with two versions, built by the real pipeline from tarballs on
the local mirror and signed with a throwaway OpenPGP key: the same directory layout that
`build` + `sign` produce and `publish` consumes.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.core.artifacts import read_sums
from pipeline.core.vocab import SBOM_SUFFIX, SUMS, attestation_name
from pipeline.sign import openpgp
from support.mirror import Mirror
from support.payloads import tar_bytes

NAME = "wsxhello"
V1, V2 = "1.0.0", "1.1.0"
ARCHES = ("x86-64", "arm64")
UARCH = {"x86-64": "x86_64", "arm64": "aarch64"}


def script(version: str) -> bytes:
    return f"#!/bin/sh\necho {NAME} {version}\n".encode()


def _url(version: str, arch: str) -> str:
    return f"https://example.org/{NAME}/{version}/{NAME}-{version}-{UARCH[arch]}.tar.gz"


def write_recipe(mirror: Mirror, recipes: Path) -> Path:
    """A recipe with versions V1 and V2 for both arches, pinned to tarballs on `mirror`."""
    blocks = []
    for version in (V1, V2):
        lines = [f'  "{version}":']
        for arch in ARCHES:
            data = tar_bytes({f"{NAME}-{version}/{NAME}": (script(version), 0o755)}, "gz")
            mirror.put(_url(version, arch), data)
            lines.append(
                f'    {arch}: {{url: "{_url(version, arch)}", '
                f'sha256: "{hashlib.sha256(data).hexdigest()}"}}'
            )
        blocks.append("\n".join(lines))
    recipes.mkdir(parents=True, exist_ok=True)
    path = recipes / f"{NAME}.yaml"
    path.write_text(f"""\
name: {NAME}
summary: publishing test payload
homepage: https://example.org/{NAME}
license: MIT
version: "{V2}"
versions:
{chr(10).join(blocks)}
install:
  - {{from: "{NAME}-{{version}}/{NAME}", to: /usr/bin/{NAME}, mode: "0755"}}
smoke:
  - "{NAME}"
""")
    return path


def make_key(directory: Path) -> tuple[Path, Path]:
    """(armored secret key file, binary public keyring file) of a new signing key."""
    directory.mkdir(parents=True, exist_ok=True)
    _, secret, public = openpgp.generate("wasm-sysexts publish test <test@example.org>")
    (directory / "secret.asc").write_bytes(secret)
    (directory / "pubring.gpg").write_bytes(public)
    return directory / "secret.asc", directory / "pubring.gpg"


def build_signed(
    run_cli: Callable[..., Any], mirror: Mirror, work: Path, secret: Path
) -> dict[str, Path]:
    """{version: directory of that version's signed images (both arches)}."""
    recipes = work / "recipes"
    write_recipe(mirror, recipes)
    dirs = {}
    for version in (V1, V2):
        out = work / f"built-{version}"
        run_cli(
            "build",
            NAME,
            "--version",
            version,
            "--arch",
            "x86-64",
            "--arch",
            "arm64",
            "--recipes",
            recipes,
            "--mirror",
            mirror.url,
            "--cache",
            work / "cache",
            "--out",
            out,
            "--quiet",
            check=True,
        )
        images = [f"{NAME}-{version}-{a}.raw" for a in sorted(ARCHES)]
        assert sorted(read_sums(out / SUMS)) == sorted(
            [*images, *(attestation_name(i, SBOM_SUFFIX) for i in images)]
        )
        dirs[version] = sign_into(run_cli, out, work / version, secret)
    return dirs


def sign_into(run_cli: Callable[..., Any], source: Path, target: Path, secret: Path) -> Path:
    """`wasm-sysexts sign SOURCE --out TARGET` (TARGET must not exist yet); returns TARGET."""
    run_cli("sign", source, "--out", target, "--gpg-key", secret, check=True)
    return target


def copy_input(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target

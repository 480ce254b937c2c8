"""The pipeline's vocabulary: closed sets as enums, the one name/version grammar, and the file
names every step agrees on. Defined once here; every other module imports them.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from pipeline.core.errors import PipelineError


@dataclass(frozen=True)
class _ArchFacts:
    uname: str  # `uname -m`, and what most upstream release assets call the arch
    goarch: str  # GOARCH, and the OCI platform architecture
    debian: str  # dpkg architecture
    elf_machine: int  # e_machine of the arch's ELF binaries
    gnu: str  # GNU triplet: cross compilers, library directories
    rust: str  # Rust target triple (glibc)


class Arch(StrEnum):
    """A target architecture, by its systemd name (image names, extension-release)."""

    X86_64 = "x86-64"
    ARM64 = "arm64"

    @property
    def facts(self) -> _ArchFacts:
        return _ARCH_FACTS[self]

    @property
    def uname(self) -> str:
        return self.facts.uname

    @property
    def goarch(self) -> str:
        return self.facts.goarch

    @property
    def oci_platform(self) -> dict[str, str]:
        return {"os": "linux", "architecture": self.facts.goarch}

    @classmethod
    def host(cls) -> Arch:
        """The arch of the machine we run on (x86-64 if unknown)."""
        machine = platform.machine().lower()
        return next((a for a in cls if machine in (a.uname, a.goarch)), cls.X86_64)

    @classmethod
    def by_goarch(cls, goarch: str) -> Arch | None:
        return next((a for a in cls if a.goarch == goarch), None)


_ARCH_FACTS = {
    Arch.X86_64: _ArchFacts(
        "x86_64", "amd64", "amd64", 62, "x86_64-linux-gnu", "x86_64-unknown-linux-gnu"
    ),
    Arch.ARM64: _ArchFacts(
        "aarch64", "arm64", "arm64", 183, "aarch64-linux-gnu", "aarch64-unknown-linux-gnu"
    ),
}


_E = TypeVar("_E", bound=StrEnum)


def parse_enum(kind: type[_E], value: str, where: str) -> _E:
    """`value` as a member of `kind`; PipelineError naming `where` and the known values."""
    try:
        return kind(value)
    except ValueError:
        raise PipelineError(
            f"{where}: {value!r} is not one of {', '.join(str(m) for m in kind)}"
        ) from None


class ImageFormat(StrEnum):
    """What an image file is: a plain filesystem from `build`, or a verity-signed DDI."""

    SQUASHFS = "squashfs"
    EROFS = "erofs"
    DDI = "ddi"


BUILD_FORMATS = (ImageFormat.SQUASHFS, ImageFormat.EROFS)


class BuildStatus(StrEnum):
    BUILT = "built"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    FAILED = "failed"


class Channel(StrEnum):
    """Flatcar release channels."""

    STABLE = "stable"
    BETA = "beta"
    ALPHA = "alpha"
    LTS = "lts"


# One grammar for extension names and versions, checked when a recipe loads, so that whatever
# builds can be named, published for systemd-sysupdate (`@v` accepts [A-Za-z0-9.,_+-]) and
# tagged in OCI (`<version>-<arch>`: [A-Za-z0-9_][A-Za-z0-9._-]{0,127}). Name words start with
# a letter and versions with a digit, so `<name>-<version>-<arch>.raw` parses one way only.
NAME_PATTERN = "[a-z][a-z0-9]*(-[a-z][a-z0-9]*)*"
VERSION_PATTERN = "[0-9][A-Za-z0-9._-]*"
NAME_RE = re.compile(rf"^{NAME_PATTERN}$")
VERSION_RE = re.compile(rf"^{VERSION_PATTERN}$")
NAME_MAX = 64
VERSION_MAX = 64
# extension-release values (ID=, SYSEXT_LEVEL=, VERSION_ID=): os-release's own grammar.
OS_FIELD_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+~-]*$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def name_problem(value: object) -> str | None:
    """Why `value` is not an extension name, or None."""
    if not isinstance(value, str) or not NAME_RE.match(value) or len(value) > NAME_MAX:
        return f"{value!r} must match {NAME_PATTERN} (at most {NAME_MAX} characters)"
    return None


def version_problem(value: object) -> str | None:
    """Why `value` is not a version every step can carry, or None."""
    if not isinstance(value, str) or not VERSION_RE.match(value) or len(value) > VERSION_MAX:
        return (
            f"{value!r} must match {VERSION_PATTERN} (at most {VERSION_MAX} characters; "
            "usable in file names, sysupdate's @v and OCI tags)"
        )
    return None


# File names every step agrees on.
IMAGE_SUFFIX = ".raw"
META_SUFFIX = ".json"  # <image>.json beside each image
# An image's SBOM and signed provenance: <name>-<version>-<arch> plus these suffixes, in place
# of ".raw". Never "<image>.raw.<suffix>": systemd-sysupdate's MatchPattern
# (<name>-@v-%a.raw) accepts a name that merely starts like an image, and then installs the
# provenance as the image (seen in the sysupdate VM test).
SBOM_SUFFIX = ".spdx.json"  # (build)
PROVENANCE_SUFFIX = ".intoto.jsonl"  # (sign)
ATTESTATION_SUFFIXES = (SBOM_SUFFIX, PROVENANCE_SUFFIX)


def attestation_name(image_file: str, suffix: str) -> str:
    """`name-1.0-x86-64.raw` -> `name-1.0-x86-64.spdx.json` (or .intoto.jsonl)."""
    return image_file.removesuffix(IMAGE_SUFFIX) + suffix


SUMS = "SHA256SUMS"
SIGNATURE = "SHA256SUMS.gpg"
KEYRING = "import-pubring.gpg"  # hosts: /etc/systemd/import-pubring.{gpg,pgp}


# Crates that are a Wasm engine, looked for in Cargo.lock files and in the crate paths Rust
# leaves in binaries, so an SBOM names the engine a shim embeds.
ENGINE_CRATES = (
    "wasmtime",
    "wasmer",
    "wasmedge-sdk",
    "wasmedge-sys",
    "wamr-rust-sdk",
    "wamr-sys",
    "spin-core",
)


# An SPDX license expression (SPDX spec, annex D): ids joined by AND/OR, an id WITH an
# exception, parentheses; checked for shape, so only license text reaches SBOMs.
_SPDX_TOKEN_RE = re.compile(r"\(|\)|[A-Za-z0-9.+:-]+|\S")
_SPDX_ID_RE = re.compile(
    r"^(?:[A-Za-z0-9][A-Za-z0-9.-]*\+?|(?:DocumentRef-[A-Za-z0-9.-]+:)?LicenseRef-[A-Za-z0-9.-]+)$"
)


def license_problem(value: str) -> str | None:
    """Why `value` is not an SPDX license expression, or None."""
    tokens = _SPDX_TOKEN_RE.findall(value)
    pos = 0

    def expression() -> bool:
        nonlocal pos
        if not term():
            return False
        while pos < len(tokens) and tokens[pos] in ("AND", "OR"):
            pos += 1
            if not term():
                return False
        return True

    def term() -> bool:
        nonlocal pos
        if pos < len(tokens) and tokens[pos] == "(":
            pos += 1
            if not expression() or pos >= len(tokens) or tokens[pos] != ")":
                return False
            pos += 1
        elif (
            pos < len(tokens)
            and _SPDX_ID_RE.match(tokens[pos])
            and tokens[pos] not in ("AND", "OR", "WITH")
        ):
            pos += 1
        else:
            return False
        if pos < len(tokens) and tokens[pos] == "WITH":
            pos += 1
            if pos >= len(tokens) or not _SPDX_ID_RE.match(tokens[pos]):
                return False
            pos += 1
        return True

    if len(value) > 500 or not expression() or pos != len(tokens):
        return f"{value!r} is not an SPDX license expression (e.g. Apache-2.0 WITH LLVM-exception)"
    return None


def homepage_problem(value: str) -> str | None:
    """Why `value` is not a homepage link for an SBOM and an OCI annotation, or None."""
    if not re.match(r"^https://[A-Za-z0-9.-]+(?::[0-9]+)?(?:/[!-~]*)?$", value) or len(value) > 500:
        return f"{value!r} must be an https:// URL (no spaces or control characters)"
    return None


# A containerd runtime: the shim's type, and the CRI handler a RuntimeClass names (a DNS label,
# as Kubernetes requires). Recipes are checked against these, and so is image metadata, which
# is unsigned and reaches the Butane and index.json that publish writes.
RUNTIME_TYPE_RE = re.compile(r"^io\.containerd\.([a-z0-9]+(?:-[a-z0-9]+)*)\.(v[0-9]+)$")
HANDLER_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def containerd_record_problem(value: object) -> str | None:
    """Why `value` is not a {handler, runtime_type} record of a shim, or None."""
    if not isinstance(value, dict) or set(value) != {"handler", "runtime_type"}:
        return "containerd must hold exactly handler and runtime_type"
    handler, runtime_type = value["handler"], value["runtime_type"]
    if not isinstance(handler, str) or not HANDLER_RE.match(handler):
        return f"containerd.handler {handler!r} is not a DNS label"
    if not isinstance(runtime_type, str) or not RUNTIME_TYPE_RE.match(runtime_type):
        return f"containerd.runtime_type {runtime_type!r} is not io.containerd.<name>.v<N>"
    return None

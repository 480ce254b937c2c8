"""The official Flatcar QEMU image as a `pipeline.vm.VMImage`: downloaded from the channel's
release server, verified against Flatcar's image signing key, cached by channel and version.

Trust chain: `<image>.DIGESTS.asc` is the clear-signed DIGESTS file (Gentoo style: `# SHA512
HASH` then `<hex>  <file>` lines). gpg checks its signature in a throwaway home with only the
keyring we were given (default: keys/flatcar-image-signing.asc, primary key
F88CFEDEFF29A5B4D9523864E25D9AED0593B34A) and the signer's primary fingerprint must be that
one; the SHA512 comes from the signed text gpg returns, never from an unsigned copy. The image
is checked against it after download and again on every use of the cached copy.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import requests

from pipeline.build.fetch import TIMEOUT, Fetcher, mirror_url
from pipeline.core import log
from pipeline.core.errors import PipelineError
from pipeline.core.fs import locked
from pipeline.core.log import redact
from pipeline.core.resources import keys_dir
from pipeline.core.vocab import Arch, Channel, parse_enum
from pipeline.sign.openpgp import throwaway_home
from pipeline.vm.qemu import VMImage

IMAGE = "flatcar_production_qemu_uefi_image.img"  # qcow2 despite the name
FINGERPRINT = "F88CFEDEFF29A5B4D9523864E25D9AED0593B34A"
KEYRING_FILE = "flatcar-image-signing.asc"
VERSION_RE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+$")
_log = log.get("flatcar")


@dataclass(frozen=True)
class _Board:
    directory: str  # the release server's per-board directory
    firmware: tuple[Path, Path]  # UEFI code and vars template (Debian ovmf / qemu-efi-aarch64)
    package: str


BOARDS = {
    Arch.X86_64: _Board(
        "amd64-usr",
        (Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.fd")),
        "ovmf",
    ),
    Arch.ARM64: _Board(
        "arm64-usr",
        (Path("/usr/share/AAVMF/AAVMF_CODE.fd"), Path("/usr/share/AAVMF/AAVMF_VARS.fd")),
        "qemu-efi-aarch64",
    ),
}


def default_keyring() -> Path:
    """Flatcar's image signing key as shipped in the package (keys/)."""
    return keys_dir() / KEYRING_FILE


def release_url(
    channel: Channel | str, version: str, name: str = "", arch: Arch = Arch.X86_64
) -> str:
    channel = parse_enum(Channel, channel, "--channel")
    return f"https://{channel}.release.flatcar-linux.net/{BOARDS[arch].directory}/{version}/{name}"


def resolve_version(
    channel: Channel | str, version: str, mirror: str | None, arch: Arch = Arch.X86_64
) -> str:
    """`current` -> the channel's current release number (from its version.txt)."""
    if version != "current":
        if not VERSION_RE.match(version):
            raise PipelineError(f"--flatcar-version: {version!r} is not like 4593.2.5")
        return version
    url = mirror_url(release_url(channel, "current", "version.txt", arch), mirror)
    try:
        response = requests.get(url, timeout=TIMEOUT)
    except requests.RequestException as err:
        raise PipelineError(f"{redact(url)}: {type(err).__name__}") from err
    if response.status_code != 200:
        raise PipelineError(f"{redact(url)}: HTTP {response.status_code}")
    found: list[str] = re.findall(r"^FLATCAR_VERSION=([0-9.]+)$", response.text, re.MULTILINE)
    if len(found) != 1 or not VERSION_RE.match(found[0]):
        raise PipelineError(f"{redact(url)}: no FLATCAR_VERSION=X.Y.Z line")
    return found[0]


def verify_digests(signed: Path, keyring: Path, fingerprint: str = FINGERPRINT) -> str:
    """The text of clear-signed `signed` if a key of `keyring` whose primary fingerprint is
    `fingerprint` made a good signature over it; PipelineError otherwise."""
    if not keyring.is_file():
        raise PipelineError(f"{keyring}: Flatcar signing keyring not found")
    with throwaway_home() as home:
        if home.run(["--import", str(keyring)]).returncode != 0:
            raise PipelineError(f"{keyring}: not an OpenPGP public key file")
        out = home.path / "signed.txt"
        proc = home.run(
            [
                "--no-auto-key-retrieve",
                "--status-fd",
                "1",
                "--output",
                str(out),
                "--decrypt",
                str(signed),
            ]
        )
        valid = [
            line.split()
            for line in proc.stdout.decode(errors="replace").splitlines()
            if line.startswith("[GNUPG:] VALIDSIG ")
        ]
        if proc.returncode != 0 or not valid:
            lines = [
                ln for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()
            ] or ["no signature"]
            raise PipelineError(f"{signed}: bad or missing signature ({lines[-1].strip()})")
        primary = valid[0][-1].upper()
        if primary != fingerprint.upper():
            raise PipelineError(f"{signed}: signed by key {primary}, not {fingerprint}")
        return out.read_text(encoding="utf-8", errors="replace")


def parse_digests(text: str, filename: str) -> str:
    """The SHA512 of `filename` in a DIGESTS text (`# SHA512 HASH` section)."""
    section = ""
    for line in text.splitlines():
        if line.startswith("#"):
            section = line.strip("# ").upper()
            continue
        parts = line.split()
        if (
            section.startswith("SHA512")
            and len(parts) == 2
            and parts[1] == filename
            and re.fullmatch(r"[0-9a-fA-F]{128}", parts[0])
        ):
            return parts[0].lower()
    raise PipelineError(f"{filename}.DIGESTS: no SHA512 entry for {filename}")


def sha512_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha512").hexdigest()


def _download(fetcher: Fetcher, url: str, target: Path) -> None:
    """Fetch `url` (through the fetcher's mirror, retries and progress) and move it to `target`;
    its SHA512 is checked by the caller against the signed DIGESTS."""
    os.replace(fetcher.fetch(url, None), target)


def verified_image(
    cache_dir: Path,
    channel: Channel | str,
    version: str,
    mirror: str | None,
    keyring: Path,
    fingerprint: str = FINGERPRINT,
    arch: Arch = Arch.X86_64,
) -> Path:
    """The channel's `arch` QEMU image of `version` in the cache, verified before use."""
    version = resolve_version(channel, version, mirror, arch)
    fetcher = Fetcher(cache_dir=cache_dir, mirror=mirror)
    directory = cache_dir / "flatcar" / channel / str(arch) / version
    image, signed = directory / IMAGE, directory / f"{IMAGE}.DIGESTS.asc"
    with locked(directory):
        if not signed.is_file():
            _download(fetcher, release_url(channel, version, signed.name, arch), signed)
        try:
            expected = parse_digests(verify_digests(signed, keyring, fingerprint), IMAGE)
        except PipelineError:
            signed.unlink(missing_ok=True)  # a bad signature file is never reused
            raise
        if image.is_file() and sha512_file(image) == expected:
            return image
        image.unlink(missing_ok=True)
        url = release_url(channel, version, IMAGE, arch)
        fresh = directory / f".{IMAGE}.new"
        _download(fetcher, url, fresh)
        actual = sha512_file(fresh)
        if actual != expected:
            fresh.unlink()
            raise PipelineError(
                f"{redact(url)}: SHA512 {actual[:16]}… does not match the "
                f"signed DIGESTS ({expected[:16]}…)"
            )
        fresh.replace(image)
        _log.info(f"Flatcar {channel} {arch} {version}: signature and SHA512 verified")
        return image


def flatcar_vm(
    cache_dir: Path,
    channel: Channel = Channel.STABLE,
    version: str = "current",
    mirror: str | None = None,
    keyring: Path | None = None,
    arch: Arch = Arch.X86_64,
) -> VMImage:
    """A UEFI-booted Flatcar VM (Debian's UEFI firmware); set `config` to an Ignition file."""
    board = BOARDS[arch]
    for firmware in board.firmware:
        if not firmware.is_file():
            raise PipelineError(
                f"{firmware}: UEFI firmware not found (install the Debian package {board.package})"
            )
    image = verified_image(
        cache_dir, channel, version, mirror, keyring or default_keyring(), arch=arch
    )
    return VMImage(
        kind="flatcar",
        arch=arch,
        disk=image,
        disk_format="qcow2",
        firmware=board.firmware,
        memory_mb=2048,
    )

"""`wasm-sysexts verify DIR`: everything a host would check before trusting DIR's images.

- SHA256SUMS.gpg is a good signature over SHA256SUMS by a key in --keyring (real gpg, the same
  options as systemd-sysupdate);
- every file listed in SHA256SUMS exists and has that hash;
- every `*.raw` in DIR is listed (an unlisted image would be trusted by nobody, so it is an
  error: it means the directory is not what was signed), and so is every SBOM and provenance
  file;
- every `*.intoto.jsonl` is a DSSE envelope with a good OpenPGP signature by a key in
  --keyring over an in-toto SLSA provenance statement whose subjects (the image, its SBOM)
  have the sha256 of the files beside it (`verify FILE.intoto.jsonl` checks just one);
- every DDI's verity tree matches its data and the root hash in its signature partition; with
  --verity-cert, that signature is by that certificate's key and every image must be such a DDI.

Each file gets one OK or FAILED line; any failure makes the exit status 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.attest.provenance import verify_envelope
from pipeline.core.artifacts import ImageDir, ImageName, read_sums
from pipeline.core.errors import PipelineError
from pipeline.core.fs import sha256_file
from pipeline.core.vocab import ATTESTATION_SUFFIXES, PROVENANCE_SUFFIX, SIGNATURE, SUMS
from pipeline.sign.ddi import check_ddi
from pipeline.sign.gpt import is_gpt
from pipeline.sign.keys import load_cert
from pipeline.sign.openpgp import read_keyring, verify_detached


@dataclass
class Check:
    file: str
    ok: bool
    detail: str


def _check_signature(directory: Path, keyring: bytes, keyring_name: str) -> Check:
    sums, sig = directory / SUMS, directory / SIGNATURE
    for path in (sums, sig):
        if not path.is_file():
            return Check(SIGNATURE, False, f"{path.name} is missing")
    try:
        signer = verify_detached(sums.read_bytes(), sig.read_bytes(), keyring, keyring_name)
        return Check(SIGNATURE, True, f"good signature by {signer}")
    except PipelineError as err:
        return Check(SIGNATURE, False, str(err))


def _check_provenance(path: Path, keyring: bytes, keyring_name: str, prefix: str = "") -> Check:
    try:
        found = verify_envelope(path, keyring, keyring_name)
    except PipelineError as err:
        return Check(path.name, False, f"provenance: {err}")
    subjects = ", ".join(s["name"] for s in found.statement["subject"])
    builder = found.statement["predicate"]["runDetails"]["builder"]["id"]
    return Check(
        path.name,
        True,
        f"{prefix}SLSA provenance signed by {found.signer}, builder {builder}, subjects {subjects}",
    )


def _check_file(
    directory: Path,
    name: str,
    digest: str,
    certs: Sequence[Path],
    keyring: bytes,
    keyring_name: str,
) -> Check:
    path = directory / name
    if not path.is_file():
        return Check(name, False, f"listed in {SUMS} but missing")
    actual = sha256_file(path)
    if actual != digest:
        return Check(name, False, f"sha256 {actual[:16]}… differs from {SUMS} ({digest[:16]}…)")
    if name.endswith(PROVENANCE_SUFFIX):
        return _check_provenance(path, keyring, keyring_name, "sha256 matches; ")
    if not name.endswith(".raw"):
        return Check(name, True, "sha256 matches")
    try:  # metadata beside an image must describe it (it is not signed)
        ImageDir(directory).read_meta(ImageName.parse(name))
    except PipelineError as err:
        return Check(name, False, str(err).replace(str(directory / name), name))
    if not is_gpt(path):
        if certs:
            return Check(name, False, "not a verity-signed DDI (--verity-cert requires one)")
        return Check(name, True, "sha256 matches")
    try:
        ddi = check_ddi(path, certs)
    except PipelineError as err:
        return Check(name, False, str(err).removeprefix(f"{name}: "))
    trust = (
        f"verity signature by {ddi.signed_by}"
        if ddi.signed_by
        else "verity signature not checked (no --verity-cert)"
    )
    return Check(
        name, True, f"sha256 matches; DDI {ddi.arch}, root hash {ddi.root_hash[:16]}…, {trust}"
    )


def verify_directory(directory: Path, keyring: Path, certs: Sequence[Path] = ()) -> list[Check]:
    """The checks above for a directory, or for one provenance file (`*.intoto.jsonl`, its
    subjects beside it) as downloaded from an update server or pulled from a registry."""
    ring = read_keyring(keyring)
    if directory.is_file() and directory.name.endswith(PROVENANCE_SUFFIX):
        return [_check_provenance(directory, ring, keyring.name)]
    if not directory.is_dir():
        raise PipelineError(f"{directory}: not a directory (or a *{PROVENANCE_SUFFIX} file)")
    for cert in certs:
        load_cert(cert, "--verity-cert")  # a bad cert is a usage error, not a failed image
    checks = [_check_signature(directory, ring, keyring.name)]
    try:
        sums = read_sums(directory / SUMS)
    except PipelineError as err:
        checks.append(Check(SUMS, False, str(err).removeprefix(f"{directory / SUMS}: ")))
        sums = {}
    for name, digest in sorted(sums.items()):
        checks.append(_check_file(directory, name, digest, certs, ring, keyring.name))
    for pattern in ("*.raw", *(f"*{suffix}" for suffix in ATTESTATION_SUFFIXES)):
        for found in sorted(directory.glob(pattern)):
            if found.name not in sums:
                checks.append(Check(found.name, False, f"not listed in {SUMS}"))
    return checks

"""`wasm-sysexts sign DIR --out SIGNED`: a new directory of signed artifacts.

The build's output is never rewritten. Each image is copied into a private work directory
(what is hashed and signed is that copy, which nothing else writes), turned into a
verity-signed DDI when --verity-key/--verity-cert are given (see ddi.py and docs/signing.md
for why signing, not building, does this), given metadata that describes it, its SBOM and a
signed provenance statement (pipeline.attest), and listed with them in a SHA256SUMS that gets
a detached OpenPGP signature. Only when all of that succeeded is the work
directory renamed to SIGNED, so a failure leaves no SIGNED at all.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from pipeline.attest.provenance import envelope, statement
from pipeline.core import log
from pipeline.core.artifacts import Artifact, ImageDir, ImageMeta, VerityRecord, format_sums
from pipeline.core.errors import PipelineError
from pipeline.core.fs import fsync_dir, os_problem, scratch_dir, sha256_file, sweep
from pipeline.core.secret import SecretSpec
from pipeline.core.vocab import SIGNATURE, SUMS, ImageFormat
from pipeline.sign.ddi import check_ddi, make_signed_ddi, plain_format
from pipeline.sign.gpt import is_gpt
from pipeline.sign.keys import cert_fingerprint, load_cert, load_verity_key
from pipeline.sign.openpgp import Signer

_log = log.get("sign")


class VerityState(StrEnum):
    CONVERTED = "converted"  # a plain image, now a verity-signed DDI
    ALREADY_SIGNED = "already-signed"  # a DDI signed by the given certificate, kept as is
    NONE = "none"  # no verity signing asked for


@dataclass
class Signed:
    file: str
    sha256: str
    verity: VerityState


@dataclass(frozen=True)
class Verity:
    key: SecretSpec
    cert: Path


def _prepare_dest(src: Path, dest: Path) -> None:
    if dest.exists() or dest.is_symlink():
        if dest.resolve() == src.resolve():
            raise PipelineError(
                f"--out {dest}: must not be the input directory (sign writes "
                "a new directory and leaves the build's output as it is)"
            )
        if not dest.is_dir() or any(dest.iterdir()):
            raise PipelineError(f"--out {dest}: exists and is not an empty directory")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PipelineError(f"--out {dest}: cannot create: {os_problem(err)}") from None


def _described(art: Artifact, path: Path, verity: VerityRecord | None) -> ImageMeta:
    """Metadata of the signed file at `path`: the build's, updated for what signing made."""
    base = art.meta or ImageMeta(
        name=art.name.name,
        version=art.name.version,
        arch=art.name.arch,
        format=_format_of(path),
        sha256="",
        size=0,
    )
    return replace(
        base,
        sha256=sha256_file(path),
        size=path.stat().st_size,
        format=ImageFormat.DDI if verity or is_gpt(path) else base.format,
        verity=verity or base.verity,
    )


def _format_of(path: Path) -> ImageFormat:
    return ImageFormat.DDI if is_gpt(path) else ImageFormat(plain_format(path)[0])


def sign_directory(
    src: Path, dest: Path, signer: Signer, verity: Verity | None, cache_dir: Path
) -> tuple[str, list[Signed]]:
    """Sign SRC's images into the new directory DEST; returns the OpenPGP signer fingerprint
    and what was signed."""
    artifacts = ImageDir(src).artifacts()
    if not artifacts:
        raise PipelineError(f"{src}: no *.raw images to sign")
    _prepare_dest(src, dest)
    key_pem = cert_pem = b""
    cert_sha = ""
    if verity is not None:
        cert = load_cert(verity.cert, "--verity-cert")
        key_pem, cert_pem = load_verity_key(verity.key, cert), verity.cert.read_bytes()
        cert_sha = cert_fingerprint(cert)
    sweep(dest.parent)
    signed: list[Signed] = []
    listed: dict[str, str] = {}  # SHA256SUMS: images, SBOMs, provenance
    with scratch_dir(dest.parent, dest.name) as work:
        out = ImageDir(work / "out")
        out.path.mkdir()
        for art in artifacts:
            target = out.path / art.name.file
            shutil.copyfile(art.path, target)
            state, record = VerityState.NONE, None
            if verity is not None:
                state, record = _verity(
                    art, target, verity.cert, key_pem, cert_pem, cert_sha, cache_dir, work
                )
            meta = _described(art, target, record)
            (out.meta_path(art.name)).write_text(meta.dumps(), encoding="utf-8")
            signed.append(Signed(art.name.file, meta.sha256, state))
            listed.update(
                _attest(art, meta, out, signer, record if state is VerityState.CONVERTED else None)
            )
        listed.update({s.file: s.sha256 for s in signed})
        text = format_sums(listed).encode()
        fpr, signature = signer.sign(text, "--gpg-key")
        (out.path / SUMS).write_bytes(text)
        (out.path / SIGNATURE).write_bytes(signature)
        fsync_dir(out.path)
        if dest.is_dir():
            dest.rmdir()  # checked empty above
        out.path.rename(dest)
    _log.info(f"{dest}: {len(signed)} image(s); {SIGNATURE} signed by {fpr}")
    return fpr, signed


def _attest(
    art: Artifact, meta: ImageMeta, out: ImageDir, signer: Signer, converted: VerityRecord | None
) -> dict[str, str]:
    """Copy the build's SBOM and write the signed provenance of the signed image; returns
    their SHA256SUMS entries. An image without the build's metadata (none, or only what an
    earlier `sign` wrote) gets neither: nothing would say how it was built."""
    if art.meta is None or not art.meta.build_key:
        _log.warning(f"{art.name.file}: no build metadata, so no SBOM or provenance")
        return {}
    subjects = {art.name.file: meta.sha256}
    sbom = art.path.parent / out.sbom_path(art.name).name
    if sbom.is_file():
        shutil.copyfile(sbom, out.sbom_path(art.name))
        subjects[sbom.name] = sha256_file(out.sbom_path(art.name))
    else:
        _log.warning(f"{art.name.file}: the build left no SBOM ({sbom.name})")
    byproduct = (
        (
            f"{art.name.file} ({converted.source_format}, before verity signing)",
            converted.source_sha256,
        )
        if converted
        else None
    )
    target = out.provenance_path(art.name)
    target.write_bytes(envelope(statement(meta, subjects, byproduct), signer, target.name))
    return {**subjects, target.name: sha256_file(target)}


def _verity(
    art: Artifact,
    target: Path,
    cert: Path,
    key_pem: bytes,
    cert_pem: bytes,
    cert_sha: str,
    cache_dir: Path,
    work: Path,
) -> tuple[VerityState, VerityRecord]:
    """Make `target` a DDI signed by `cert` (or check that it is one); its verity record."""
    name = art.name.file
    if is_gpt(target):
        try:
            ddi = check_ddi(target, [cert])
        except PipelineError as err:
            raise PipelineError(f"{err}; rebuild the plain image and sign again") from None
        _log.info(f"{name}: already a DDI signed by this cert")
        source = art.meta.verity if art.meta and art.meta.verity else None
        return VerityState.ALREADY_SIGNED, VerityRecord(
            ddi.root_hash,
            cert_sha,
            source.source_format if source else "unknown",
            source.source_sha256 if source else "unknown",
        )
    fmt, _ = plain_format(target)
    source_sha = sha256_file(target)
    _log.info(f"{name}: making a verity-signed DDI")
    ddi_path = work / f"{name}.ddi"
    make_signed_ddi(target, ddi_path, key_pem, cert_pem, cache_dir)
    ddi = check_ddi(ddi_path, [cert])  # what hosts will check, before it replaces anything
    ddi_path.replace(target)
    return VerityState.CONVERTED, VerityRecord(ddi.root_hash, cert_sha, fmt, source_sha)

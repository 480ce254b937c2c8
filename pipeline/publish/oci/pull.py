"""`pull oci`: fetch one published image back, checking every digest and its signature."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from pipeline.core import log
from pipeline.core.artifacts import read_sums
from pipeline.core.errors import PipelineError
from pipeline.core.fs import write_atomic
from pipeline.core.vocab import SIGNATURE, SUMS, Arch
from pipeline.publish.oci.client import DIGEST_RE, INDEX, MANIFEST, MAX_MANIFEST, Client
from pipeline.publish.oci.layout import ARTIFACT_TYPE, SIGNATURE_TYPE, TITLE
from pipeline.publish.static import verify_signature
from pipeline.sign.openpgp import read_keyring

_log = log.get("oci")


# A signature referrer holds SHA256SUMS and its signature: small files, so a layer declaring
# more is refused before it is downloaded (manifests are bounded by the client, MAX_MANIFEST).
MAX_SIGNATURE_BLOB = 1 << 20


def pull_oci(client: Client, reference: str, out: Path, arch: Arch, keyring: Path) -> Path:
    """Fetch one image, check every digest and its signature; returns the image's path."""
    repo = client.repo()
    shown = f"{client.repository}:{reference}"
    ring = read_keyring(keyring)
    found = client.get_manifest(repo, reference)
    if found is None:
        raise PipelineError(f"{shown}: not found")
    body, digest = found
    doc = _object(body, f"{shown}: manifest")
    if doc.get("mediaType") == INDEX or "manifests" in doc:
        goarch = arch.goarch
        entries = [_descriptor(m, f"{shown}: index entry") for m in _list(doc, "manifests", shown)]
        entry = next(
            (m for m in entries if _field(m, "platform").get("architecture") == goarch), None
        )
        if entry is None:
            raise PipelineError(f"{shown}: index has no {arch} ({goarch}) image")
        found = client.get_manifest(repo, entry["digest"], accept=MANIFEST)
        if found is None:
            raise PipelineError(f"{shown}: index entry {entry['digest']} not found")
        body, digest = found
        doc = _object(body, f"{shown}: manifest {digest}")
    kind = doc.get("artifactType") or _field(doc, "config").get("mediaType")
    layers = _list(doc, "layers", shown)
    if kind != ARTIFACT_TYPE or len(layers) != 1:
        raise PipelineError(f"{shown}: not a wasm-sysexts image (artifactType {kind!r})")
    layer = _descriptor(layers[0], f"{shown}: layer")
    file = str(_field(layer, "annotations").get(TITLE, ""))
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._+-]*\.raw$", file):
        raise PipelineError(f"{shown}: layer title {file!r} is not an image file name")
    out.mkdir(parents=True, exist_ok=True)
    sums, signature = _verified_signature(client, repo, digest, file, layer["digest"], ring, shown)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{file}.", dir=out)
    try:
        with os.fdopen(fd, "wb") as tmp:
            client.get_blob(repo, layer["digest"], layer["size"], tmp)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, out / file)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    write_atomic(out / SUMS, sums)
    write_atomic(out / SIGNATURE, signature)
    _log.info(f"{shown}: {file} verified (sha256 {layer['digest'][7:23]}…)")
    return out / file


def _object(body: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError:
        raise PipelineError(f"{what} is not JSON") from None
    if not isinstance(doc, dict):
        raise PipelineError(f"{what} is not a JSON object")
    return doc


def _field(doc: dict[str, Any], key: str) -> dict[str, Any]:
    """An optional object field; anything else there counts as absent."""
    value = doc.get(key)
    return value if isinstance(value, dict) else {}


def _list(doc: dict[str, Any], key: str, shown: str) -> list[Any]:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise PipelineError(f"{shown}: {key} is not a list")
    return value


def _descriptor(value: object, what: str) -> dict[str, Any]:
    """A descriptor whose digest and size can be used: an object, sha256, a size >= 0."""
    if not isinstance(value, dict):
        raise PipelineError(f"{what} is not an object")
    if not isinstance(value.get("digest"), str) or not DIGEST_RE.match(value["digest"]):
        raise PipelineError(f"{what}: digest {value.get('digest')!r} is not sha256")
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise PipelineError(f"{what}: size {size!r} is not a byte count")
    return value


def _verified_signature(
    client: Client, repo: str, subject: str, file: str, layer: str, ring: bytes, shown: str
) -> tuple[bytes, bytes]:
    """(SHA256SUMS, signature) of a referrer that verifies and lists `file` with `layer`."""
    problems = []
    for value in client.referrers(repo, subject):
        if not isinstance(value, dict) or value.get("artifactType") != SIGNATURE_TYPE:
            continue
        ref = _descriptor(value, f"{shown}: referrer")
        if ref["size"] > MAX_MANIFEST:
            problems.append(f"referrer {ref['digest']}: manifest of {ref['size']} bytes")
            continue
        found = client.get_manifest(repo, ref["digest"], accept=MANIFEST)
        if found is None:
            continue
        doc = _object(found[0], f"{shown}: referrer {ref['digest']}")
        if _field(doc, "subject").get("digest") != subject:
            continue
        blobs = {}
        for item in _list(doc, "layers", f"{shown}: referrer {ref['digest']}"):
            blob = _descriptor(item, f"{shown}: referrer {ref['digest']} layer")
            if blob["size"] > MAX_SIGNATURE_BLOB:
                raise PipelineError(
                    f"{shown}: referrer {ref['digest']} layer {blob['digest']} declares "
                    f"{blob['size']} bytes; a signature or SHA256SUMS is at most "
                    f"{MAX_SIGNATURE_BLOB}"
                )
            with tempfile.TemporaryFile() as tmp:
                client.get_blob(repo, blob["digest"], blob["size"], tmp)
                tmp.seek(0)
                blobs[_field(blob, "annotations").get(TITLE)] = tmp.read()
        if SUMS not in blobs or SIGNATURE not in blobs:
            continue
        with tempfile.TemporaryDirectory() as work:
            sums_path, sig_path = Path(work) / SUMS, Path(work) / SIGNATURE
            sums_path.write_bytes(blobs[SUMS])
            sig_path.write_bytes(blobs[SIGNATURE])
            try:
                verify_signature(sums_path, sig_path, ring)
                listed = read_sums(sums_path).get(file)
            except PipelineError as err:
                problems.append(str(err).replace(str(sig_path), f"referrer {ref['digest']}"))
                continue
        if listed is None or "sha256:" + listed != layer:
            problems.append(
                f"referrer {ref['digest']}: SHA256SUMS does not list {file} with {layer}"
            )
            continue
        return blobs[SUMS], blobs[SIGNATURE]
    raise PipelineError(
        f"{shown}: no valid signature: "
        + ("; ".join(problems) if problems else "no signature referrer found")
    )

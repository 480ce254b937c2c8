"""`pull oci`: fetch one published image back, checking every digest and its signature."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from pipeline.core import log
from pipeline.core.artifacts import read_sums
from pipeline.core.errors import PipelineError
from pipeline.core.fs import write_atomic
from pipeline.core.vocab import SIGNATURE, SUMS, Arch
from pipeline.publish.oci.client import DIGEST_RE, INDEX, MANIFEST, Client
from pipeline.publish.oci.layout import ARTIFACT_TYPE, SIGNATURE_TYPE, TITLE
from pipeline.publish.static import verify_signature
from pipeline.sign.openpgp import read_keyring

_log = log.get("oci")


def pull_oci(client: Client, reference: str, out: Path, arch: Arch, keyring: Path) -> Path:
    """Fetch one image, check every digest and its signature; returns the image's path."""
    repo = client.repo()
    shown = f"{client.repository}:{reference}"
    ring = read_keyring(keyring)
    found = client.get_manifest(repo, reference)
    if found is None:
        raise PipelineError(f"{shown}: not found")
    body, digest = found
    doc = json.loads(body)
    if doc.get("mediaType") == INDEX or "manifests" in doc:
        goarch = arch.goarch
        entry = next(
            (
                m
                for m in doc.get("manifests", [])
                if m.get("platform", {}).get("architecture") == goarch
            ),
            None,
        )
        if entry is None:
            raise PipelineError(f"{shown}: index has no {arch} ({goarch}) image")
        found = client.get_manifest(repo, entry["digest"], accept=MANIFEST)
        if found is None:
            raise PipelineError(f"{shown}: index entry {entry['digest']} not found")
        body, digest = found
        doc = json.loads(body)
    kind = doc.get("artifactType") or doc.get("config", {}).get("mediaType")
    layers = doc.get("layers", [])
    if kind != ARTIFACT_TYPE or len(layers) != 1:
        raise PipelineError(f"{shown}: not a wasm-sysexts image (artifactType {kind!r})")
    layer = layers[0]
    file = str(layer.get("annotations", {}).get(TITLE, ""))
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._+-]*\.raw$", file):
        raise PipelineError(f"{shown}: layer title {file!r} is not an image file name")
    if not DIGEST_RE.match(str(layer.get("digest"))):
        raise PipelineError(f"{shown}: layer digest {layer.get('digest')!r} is not sha256")
    out.mkdir(parents=True, exist_ok=True)
    sums, signature = _verified_signature(client, repo, digest, file, layer["digest"], ring, shown)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{file}.", dir=out)
    try:
        with os.fdopen(fd, "wb") as tmp:
            client.get_blob(repo, layer["digest"], int(layer["size"]), tmp)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, out / file)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    write_atomic(out / SUMS, sums)
    write_atomic(out / SIGNATURE, signature)
    _log.info(f"{shown}: {file} verified (sha256 {layer['digest'][7:23]}…)")
    return out / file


def _verified_signature(
    client: Client, repo: str, subject: str, file: str, layer: str, ring: bytes, shown: str
) -> tuple[bytes, bytes]:
    """(SHA256SUMS, signature) of a referrer that verifies and lists `file` with `layer`."""
    problems = []
    for ref in client.referrers(repo, subject):
        if ref.get("artifactType") != SIGNATURE_TYPE:
            continue
        found = client.get_manifest(repo, ref["digest"], accept=MANIFEST)
        if found is None:
            continue
        doc = json.loads(found[0])
        if doc.get("subject", {}).get("digest") != subject:
            continue
        blobs = {}
        for item in doc.get("layers", []):
            with tempfile.TemporaryFile() as tmp:
                client.get_blob(repo, item["digest"], int(item["size"]), tmp)
                tmp.seek(0)
                blobs[item.get("annotations", {}).get(TITLE)] = tmp.read()
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

"""`publish oci`: sysext images as OCI 1.1 artifacts (docs/oci.md).

Per image one manifest (artifactType ARTIFACT_TYPE, empty config, the raw image as its only
layer, so the layer digest is the image's SHA256SUMS entry); per extension version one image
index with an entry per arch; the directory's SHA256SUMS and SHA256SUMS.gpg as a signature
artifact whose `subject` is each image manifest, and so are the image's SBOM and provenance.
Every blob and manifest is pushed by digest; tags move last.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import requests

from pipeline.core import log
from pipeline.core.errors import PipelineError
from pipeline.core.log import human_size
from pipeline.core.vocab import PROVENANCE_SUFFIX, SBOM_SUFFIX, SIGNATURE, SUMS
from pipeline.publish.oci.client import INDEX, MANIFEST, Client, digest_of, referrers_tag
from pipeline.publish.static import load_input
from pipeline.publish.versions import version_key
from pipeline.sign.openpgp import read_keyring

ARTIFACT_TYPE = "application/vnd.wasm-sysexts.sysext.v1"
LAYER_TYPE = "application/vnd.wasm-sysexts.sysext.layer.v1.raw"
SIGNATURE_TYPE = "application/vnd.wasm-sysexts.signature.v1"
# An image's SBOM and signed provenance, attached as referrers with their usual media types.
ATTACHMENT_TYPES = {
    SBOM_SUFFIX: "application/spdx+json",
    PROVENANCE_SUFFIX: "application/vnd.dsse.envelope.v1+json",
}
SUMS_TYPE = "application/vnd.wasm-sysexts.sha256sums.v1"
PGP_TYPE = "application/pgp-signature"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
EMPTY_DESCRIPTOR = {
    "mediaType": EMPTY_TYPE,
    "size": 2,
    "data": "e30=",
    "digest": "sha256:" + hashlib.sha256(EMPTY).hexdigest(),
}
ANNOTATION = "dev.wasm-sysexts.sysext"  # prefix of our own annotation keys
TITLE = "org.opencontainers.image.title"
_log = log.get("oci")


def canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


@dataclass
class _Pushed:
    tags: list[tuple[str, str, bytes, str]] = field(default_factory=list)  # repo, tag, body, type
    uploaded: int = 0


def _descriptor(media_type: str, digest: str, size: int, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def _opener(path: Path) -> Callable[[], IO[bytes]]:
    """A fresh file per upload attempt (requests closes each)."""
    return lambda: path.open("rb")


def _push_bytes(client: Client, repo: str, data: bytes, state: _Pushed) -> str:
    digest = digest_of(data)
    if client.push_blob(repo, digest, len(data), lambda: io.BytesIO(data)):
        state.uploaded += 1
    return digest


def _push_manifest(
    client: Client, repo: str, manifest: dict[str, Any], media_type: str
) -> tuple[bytes, str, requests.Response | None]:
    body = canonical(manifest)
    digest = digest_of(body)
    if client.manifest_digest(repo, digest) == digest:
        return body, digest, None
    return body, digest, client.put_manifest(repo, digest, body, media_type)


def publish_oci(
    src: Path, client: Client, tag_latest: bool = False, keyring: Path | None = None
) -> list[dict[str, str]]:
    """Push every image of `src`; returns [{reference, digest}] of the tags it set."""

    images, sums, signature = load_input(src, read_keyring(keyring) if keyring else None)
    state = _Pushed()
    result: list[dict[str, str]] = []
    for name in sorted({i.name for i in images}):
        repo = client.repo(name)
        for version in sorted({i.version for i in images if i.name == name}):
            entries = []
            for image in sorted(
                (i for i in images if i.name == name and i.version == version), key=lambda i: i.arch
            ):
                with log.labelled(f"{name} {version} {image.arch}"):
                    _log.info(
                        f"pushing {image.file} ({human_size(image.size)}) to "
                        f"{client.registry}/{repo}"
                    )
                _push_bytes(client, repo, EMPTY, state)
                layer = "sha256:" + image.sha256
                if client.push_blob(repo, layer, image.size, _opener(image.source)):
                    state.uploaded += 1
                meta = image.meta
                source = (
                    (meta.recipe.get("homepage") or next((i.url for i in meta.inputs), ""))
                    if meta
                    else ""
                )
                annotations = {
                    f"{ANNOTATION}.name": name,
                    f"{ANNOTATION}.version": version,
                    f"{ANNOTATION}.arch": str(image.arch),
                    TITLE: image.file,
                    "org.opencontainers.image.version": version,
                }
                if source:
                    annotations[f"{ANNOTATION}.source"] = source
                    annotations["org.opencontainers.image.source"] = source
                manifest = {
                    "schemaVersion": 2,
                    "mediaType": MANIFEST,
                    "artifactType": ARTIFACT_TYPE,
                    "config": EMPTY_DESCRIPTOR,
                    "layers": [
                        _descriptor(LAYER_TYPE, layer, image.size, annotations={TITLE: image.file})
                    ],
                    "annotations": annotations,
                }
                body, digest, _ = _push_manifest(client, repo, manifest, MANIFEST)
                subject = _descriptor(MANIFEST, digest, len(body))
                _attach_signature(client, repo, subject, sums, signature, state)
                for item in image.attachments:  # SBOM, provenance: byte-identical blobs
                    kind = ATTACHMENT_TYPES[
                        next(s for s in ATTACHMENT_TYPES if item.file.endswith(s))
                    ]
                    _attach(
                        client,
                        repo,
                        subject,
                        kind,
                        [(kind, item.source.read_bytes(), item.file)],
                        state,
                    )
                entries.append(
                    _descriptor(
                        MANIFEST,
                        digest,
                        len(body),
                        artifactType=ARTIFACT_TYPE,
                        platform=image.arch.oci_platform,
                        annotations={TITLE: image.file},
                    )
                )
                state.tags.append((repo, f"{version}-{image.arch}", body, MANIFEST))
            index = {
                "schemaVersion": 2,
                "mediaType": INDEX,
                "artifactType": ARTIFACT_TYPE,
                "manifests": entries,
                "annotations": {
                    f"{ANNOTATION}.name": name,
                    f"{ANNOTATION}.version": version,
                    "org.opencontainers.image.version": version,
                },
            }
            body, _, _ = _push_manifest(client, repo, index, INDEX)
            state.tags.append((repo, version, body, INDEX))
        if tag_latest:
            newest = _newest(repo, state)
            state.tags.append((repo, "latest", newest[2], newest[3]))
    # Every blob and manifest is in place: only now do tags move.
    _move_tags(client, state.tags)
    for repo, tag, body, _ in state.tags:
        result.append({"reference": f"{client.registry}/{repo}:{tag}", "digest": digest_of(body)})
    _log.info(f"{len(result)} tag(s) set, {state.uploaded} blob(s) uploaded")
    return result


def _move_tags(client: Client, tags: list[tuple[str, str, bytes, str]]) -> None:
    """Point every tag at its manifest. A registry cannot move several tags at once, so when
    one move fails, the tags moved before it are put back where they were (a tag that is new
    is deleted again): all tags move or none does, unless the registry also refuses the way
    back, which the error then names."""
    moved: list[tuple[str, str, str | None]] = []  # repo, tag, digest it had before
    try:
        for repo, tag, body, media_type in tags:
            before = client.manifest_digest(repo, tag)
            if before != digest_of(body):
                client.put_manifest(repo, tag, body, media_type)
                moved.append((repo, tag, before))
    except PipelineError as err:
        stuck = []
        for repo, tag, before in reversed(moved):
            try:
                _restore(client, repo, tag, before)
            except PipelineError:
                stuck.append(f"{repo}:{tag}")
        if stuck:
            raise PipelineError(f"{err}; could not put back {', '.join(stuck)}") from None
        raise PipelineError(f"{err} (tags moved before it were put back)") from None


def _restore(client: Client, repo: str, tag: str, before: str | None) -> None:
    if before is None:
        client.delete_tag(repo, tag)
        return
    found = client.get_manifest(repo, before)
    if found is None:
        raise PipelineError(f"{repo}@{before}: gone")
    body = found[0]
    client.put_manifest(repo, tag, body, str(json.loads(body).get("mediaType", MANIFEST)))


def _newest(repo: str, state: _Pushed) -> tuple[str, str, bytes, str]:
    indexes = [t for t in state.tags if t[0] == repo and t[3] == INDEX]
    return max(indexes, key=lambda t: version_key(t[1]))


def _attach_signature(
    client: Client,
    repo: str,
    subject: dict[str, Any],
    sums: bytes,
    signature: bytes,
    state: _Pushed,
) -> None:
    """Attach SHA256SUMS + SHA256SUMS.gpg as a referrer of the image manifest `subject`."""
    _attach(
        client,
        repo,
        subject,
        SIGNATURE_TYPE,
        [(SUMS_TYPE, sums, SUMS), (PGP_TYPE, signature, SIGNATURE)],
        state,
    )


def _attach(
    client: Client,
    repo: str,
    subject: dict[str, Any],
    artifact_type: str,
    layers: list[tuple[str, bytes, str]],
    state: _Pushed,
) -> None:
    """Push an artifact of `layers` (media type, bytes, title) whose `subject` is the manifest
    `subject`, and make it discoverable: the registry's referrers API when it indexes the
    subject itself (OCI-Subject), else the referrers tag schema's index."""
    _push_bytes(client, repo, EMPTY, state)
    descriptors = [
        _descriptor(
            media_type,
            _push_bytes(client, repo, data, state),
            len(data),
            annotations={TITLE: title},
        )
        for media_type, data, title in layers
    ]
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": artifact_type,
        "config": EMPTY_DESCRIPTOR,
        "layers": descriptors,
        "subject": subject,
        "annotations": {TITLE: layers[0][2]},
    }
    body, digest, resp = _push_manifest(client, repo, manifest, MANIFEST)
    if resp is not None and resp.headers.get("OCI-Subject") == subject["digest"]:
        return  # the registry indexes referrers itself
    # Referrers tag schema: keep an index of referrers at tag sha256-<hex of subject>.
    tag = referrers_tag(subject["digest"])
    found = client.get_manifest(repo, tag, accept=INDEX)
    index: dict[str, Any] = json.loads(found[0]) if found else {}
    manifests: list[dict[str, Any]] = list(index.get("manifests", []))
    if any(m.get("digest") == digest for m in manifests):
        return
    manifests.append(
        _descriptor(
            MANIFEST,
            digest,
            len(body),
            artifactType=artifact_type,
            annotations={TITLE: layers[0][2]},
        )
    )
    index.update({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests})
    client.put_manifest(repo, tag, canonical(index), INDEX)

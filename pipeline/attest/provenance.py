"""Signed build provenance: an in-toto Statement v1 with a SLSA Provenance v1 predicate, in a
DSSE envelope whose signature is a detached OpenPGP signature (by the key that signs
SHA256SUMS) over the DSSE pre-authentication encoding.

`sign` makes it, because only then are the subjects final: the image as published (a DDI when
verity-signed) and its SBOM. What the build did comes from `<image>.json`: the recipe and its
sha256, the inputs or pinned source, the tools, SOURCE_DATE_EPOCH, and the builder (the CLI, or
the Dagger module with its engine version and base image digest). The plain image a DDI was
made from is a byproduct. No timestamps are added, so signing the same build twice differs
only in the OpenPGP signature.

`verify_envelope` is what `wasm-sysexts verify` runs: the signature must be good by a key in
the keyring, the payload an in-toto statement with this predicate type, and every subject's
sha256 must match the file beside it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.core.artifacts import ImageMeta
from pipeline.core.errors import PipelineError
from pipeline.core.fs import sha256_file
from pipeline.core.vocab import IMAGE_SUFFIX, PROVENANCE_SUFFIX
from pipeline.sign.openpgp import Signer, verify_detached

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://wasm-sysexts.dev/build/v1"
CLI_BUILDER = "https://wasm-sysexts.dev/builder/cli"
# Set by the Dagger module in its build containers (see .dagger/), read here.
BUILDER_ENV = {
    "id": "WASM_SYSEXTS_BUILDER_ID",
    "dagger_engine": "WASM_SYSEXTS_DAGGER_ENGINE",
    "base_image": "WASM_SYSEXTS_BASE_IMAGE",
}


def builder_identity() -> dict[str, str]:
    """Who runs this build, for `<image>.json`: the CLI unless the environment says more."""
    found = {key: os.environ[var] for key, var in BUILDER_ENV.items() if os.environ.get(var)}
    return {"id": CLI_BUILDER, "wasm-sysexts": __version__, **found}


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what the signature covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def statement(
    meta: ImageMeta, subjects: dict[str, str], byproduct: tuple[str, str] | None
) -> dict[str, Any]:
    """The in-toto statement for `subjects` (file name -> sha256) built as `meta` says."""
    recipe = meta.recipe
    deps: list[dict[str, Any]] = []
    if recipe.get("sha256"):
        deps.append(
            {"name": f"recipe:{recipe.get('file', '')}", "digest": {"sha256": recipe["sha256"]}}
        )
    deps += [{"uri": i.url, "digest": {"sha256": i.sha256}} for i in meta.inputs]
    source = meta.source or {}
    if isinstance(source.get("archive"), dict):
        archive = source["archive"]
        digest = {
            k: v
            for k, v in (("sha256", archive.get("sha256")), ("gitTree", archive.get("tree")))
            if v
        }
        deps.append({"uri": archive["url"], "digest": digest})
    if isinstance(source.get("git"), dict):
        deps.append(
            {"uri": f"git+{source['git']['url']}", "digest": {"gitCommit": source["git"]["commit"]}}
        )
    if source.get("module"):
        deps.append(
            {
                "uri": f"pkg:golang/{source['module']}@v{source.get('version', '')}",
                "digest": {"dirhash1": str(source.get("h1", "")).removeprefix("h1:")},
            }
        )
    if source.get("lock_sha256"):
        deps.append({"name": "Cargo.lock", "digest": {"sha256": source["lock_sha256"]}})
    builder = dict(meta.builder) or {"id": CLI_BUILDER}
    run_details: dict[str, Any] = {
        "builder": {"id": builder.pop("id"), "version": builder},
        "metadata": {
            "invocationId": meta.build_key,
            **({"startedOn": meta.started_on} if meta.started_on else {}),
        },
    }
    if byproduct:
        run_details["byproducts"] = [{"name": byproduct[0], "digest": {"sha256": byproduct[1]}}]
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": name, "digest": {"sha256": digest}}
            for name, digest in sorted(subjects.items())
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "recipe": recipe.get("file", ""),
                    "name": meta.name,
                    "version": meta.version,
                    "arch": str(meta.arch),
                    "from": "source" if meta.source else "release",
                },
                "internalParameters": {
                    "tools": meta.tools,
                    "source_date_epoch": meta.source_date_epoch,
                    "build_key": meta.build_key,
                    **({"toolchain": source["toolchain"]} if source.get("toolchain") else {}),
                },
                "resolvedDependencies": deps,
            },
            "runDetails": run_details,
        },
    }


def envelope(body: dict[str, Any], signer: Signer, what: str) -> bytes:
    """The DSSE envelope (one JSON line) of `body`, signed by `signer`."""
    payload = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    fpr, signature = signer.sign(pae(PAYLOAD_TYPE, payload), what)
    data = {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": fpr, "sig": base64.b64encode(signature).decode()}],
    }
    return (json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n").encode()


@dataclass(frozen=True)
class Verified:
    signer: str
    statement: dict[str, Any]


def verify_envelope(path: Path, keyring: bytes, keyring_name: str) -> Verified:
    """Check the envelope at `path` as described above; PipelineError naming what is wrong."""
    try:
        data = json.loads(path.read_bytes())
        payload = base64.b64decode(data["payload"], validate=True)
        signatures = [base64.b64decode(s["sig"], validate=True) for s in data["signatures"]]
        payload_type = data["payloadType"]
    except (OSError, ValueError, KeyError, TypeError, binascii.Error):
        raise PipelineError("not a DSSE envelope (payloadType, payload, signatures)") from None
    if payload_type != PAYLOAD_TYPE:
        raise PipelineError(f"payloadType {payload_type!r} is not {PAYLOAD_TYPE}")
    if not signatures:
        raise PipelineError("the envelope carries no signature")
    problems = []
    signer = ""
    for signature in signatures:  # DSSE: one good signature by a trusted key suffices
        try:
            signer = verify_detached(pae(payload_type, payload), signature, keyring, keyring_name)
            break
        except PipelineError as err:
            problems.append(str(err))
    else:
        raise PipelineError(f"signature: {problems[0]}")
    try:
        body = json.loads(payload)
        named = [(s["name"], s["digest"]["sha256"]) for s in body["subject"]]
        if not all(isinstance(n, str) and isinstance(d, str) for n, d in named):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise PipelineError("the signed payload is not an in-toto statement") from None
    if body.get("_type") != STATEMENT_TYPE or body.get("predicateType") != PREDICATE_TYPE:
        raise PipelineError(f"the signed statement is not {STATEMENT_TYPE} with {PREDICATE_TYPE}")
    subjects = dict(named)
    if not subjects:
        raise PipelineError("the signed statement names no subject")
    if len(subjects) != len(named):
        twice = next(n for n, _ in named if [m for m, _ in named].count(n) > 1)
        raise PipelineError(f"subject {twice} is named twice")
    own = path.name.removesuffix(PROVENANCE_SUFFIX) + IMAGE_SUFFIX
    if path.name.endswith(PROVENANCE_SUFFIX) and own not in subjects:
        raise PipelineError(f"the signed statement does not name {own}, the image it attests")
    for name, digest in subjects.items():
        subject = path.parent / name
        if "/" in name or not subject.is_file():
            raise PipelineError(f"subject {name}: no such file beside it")
        if sha256_file(subject) != digest:
            raise PipelineError(f"subject {name}: sha256 differs from the signed statement")
    return Verified(signer, body)

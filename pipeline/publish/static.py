"""`publish static`: merge signed images into a static update-server tree, atomically.

Layout of `--dest PATH` (see docs/publishing.md):

    PATH -> .PATH.generations/<id>/      a symlink, swapped with one rename(2)
      <name>/<name>-<version>-<arch>.raw, SHA256SUMS, SHA256SUMS.gpg
      <name>/<name>-<version>-<arch>.spdx.json, .intoto.jsonl   its SBOM, signed provenance
      sysupdate.d/<name>.transfer, <name>.conf, <name>.bu
      import-pubring.gpg                 the key hosts verify SHA256SUMS.gpg with
      index.json, index.html             what is published, for programs and for people

Every publish writes a complete new generation directory beside the live one (unchanged
images are hard links, so this is cheap), fsyncs it and then replaces the PATH symlink: a web
server serving PATH sees the old tree or the new one, never a mix, and a killed publish leaves
only an unreferenced temporary directory that the next publish removes. The previous
generation is kept so requests that resolved it just before the swap still complete.
Publishes serialize on an flock beside PATH. A run that would produce the current tree again
writes nothing.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.build.fetch import check_base_url
from pipeline.core import log
from pipeline.core.artifacts import ImageDir, ImageMeta, ImageName, format_sums, read_sums
from pipeline.core.errors import PipelineError
from pipeline.core.fs import flocked, fsync_dir, sha256_file
from pipeline.core.vocab import (
    ATTESTATION_SUFFIXES,
    KEYRING,
    PROVENANCE_SUFFIX,
    SBOM_SUFFIX,
    SIGNATURE,
    SUMS,
    Arch,
    attestation_name,
    containerd_record_problem,
)
from pipeline.publish import html
from pipeline.publish.sysupdate import Installed, butane, transfer
from pipeline.publish.versions import newest_first
from pipeline.sign.openpgp import Signer, read_keyring, verify_detached

INDEX = "index.json"
PAGE = "index.html"  # the same, for people
NODE_BUTANE = "kubernetes-node.bu"
CONFIG_DIR = "sysupdate.d"
_ATTACHMENT_KEYS = {SBOM_SUFFIX: "sbom", PROVENANCE_SUFFIX: "provenance"}  # in index.json
KEPT_GENERATIONS = 2  # the live one and the one just replaced (in-flight readers)
_log = log.get("publish")


@dataclass(frozen=True)
class Attachment:
    """An image's SBOM or provenance file, published beside it and listed in SHA256SUMS."""

    file: str
    sha256: str
    source: Path


@dataclass(frozen=True)
class Image:
    name: str
    version: str
    arch: Arch
    file: str
    sha256: str
    size: int
    source: Path  # where the bytes are now (input dir or the live generation)
    meta: ImageMeta | None = None  # the build's metadata, when the input carried it
    attachments: tuple[Attachment, ...] = ()


@dataclass
class Plan:
    """Everything the new generation will hold: path -> bytes, or path -> file to link."""

    files: dict[str, bytes] = field(default_factory=dict)
    images: dict[str, Image | Attachment] = field(default_factory=dict)


def verify_signature(data: Path, signature: Path, keyring: bytes) -> None:
    """Raise unless `signature` over `data` verifies against `keyring` (sysupdate's way)."""
    try:
        verify_detached(data.read_bytes(), signature.read_bytes(), keyring)
    except PipelineError as err:
        raise PipelineError(f"{signature}: {err}") from None


def load_input(src: Path, keyring: bytes | None) -> tuple[list[Image], bytes, bytes]:
    """The input's images, SHA256SUMS bytes and signature; refuses anything tampered with.

    Runs before the destination is touched: a bad signature (checked when a keyring is given)
    or a hash that differs from its SHA256SUMS entry stops the publish with nothing written.
    """
    sums_path, sig_path = src / SUMS, src / SIGNATURE
    if not sums_path.is_file():
        raise PipelineError(f"{sums_path}: missing (build the images first)")
    if not sig_path.is_file():
        raise PipelineError(f"{sig_path}: missing (sign the images first: wasm-sysexts sign)")
    if keyring is not None:
        verify_signature(sums_path, sig_path, keyring)
    directory = ImageDir(src)
    sums = read_sums(sums_path)
    on_disk = {p.name for p in directory.image_files()}
    on_disk |= {p.name for suffix in ATTESTATION_SUFFIXES for p in src.glob(f"*{suffix}")}
    unlisted = sorted(on_disk - set(sums))
    if unlisted:
        raise PipelineError(f"{src / unlisted[0]}: not listed in {sums_path}")

    def checked(file: str, digest: str) -> Path:
        path = src / file
        if path.is_symlink() or not path.is_file():
            raise PipelineError(
                f"{sums_path}: lists {file}, which is missing or not a regular file"
            )
        actual = sha256_file(path)
        if actual != digest:
            raise PipelineError(f"{path}: sha256 {actual} does not match {digest} in {sums_path}")
        return path

    images = []
    for file, digest in sorted(sums.items()):
        if not file.endswith(".raw"):
            continue
        path = checked(file, digest)
        name = ImageName.parse(file)  # the signed name decides; metadata must agree with it
        meta = directory.read_meta(name)
        names = [attestation_name(file, s) for s in ATTESTATION_SUFFIXES]
        attachments = tuple(Attachment(n, sums[n], checked(n, sums[n])) for n in names if n in sums)
        images.append(
            Image(
                name.name,
                name.version,
                name.arch,
                file,
                digest,
                path.stat().st_size,
                path,
                meta,
                attachments,
            )
        )
    if not images:
        raise PipelineError(f"{sums_path}: lists no .raw images")
    return images, sums_path.read_bytes(), sig_path.read_bytes()


def _live(dest: Path) -> Path | None:
    """The directory readers see at `dest` now, if any."""
    if dest.is_symlink() or dest.is_dir():
        if not dest.resolve().is_dir():
            raise PipelineError(f"{dest}: is a dangling symlink")
        return dest.resolve()
    if dest.exists():
        raise PipelineError(f"--dest {dest}: exists and is not a directory")
    return None


def _current_images(live: Path) -> dict[str, Image]:
    """Images of the live tree (with their attachments) by file name, as its per-extension
    SHA256SUMS list them."""
    images: dict[str, Image] = {}
    for sums_path in sorted(live.glob(f"*/{SUMS}")):
        sums = read_sums(sums_path)
        for file, digest in sums.items():
            path = sums_path.parent / file
            if not path.is_file():
                raise PipelineError(f"{sums_path}: lists {file}, which is missing")
            if not file.endswith(".raw"):
                continue  # an attachment, taken with its image below
            name = ImageName.parse(file)
            names = [attestation_name(file, s) for s in ATTESTATION_SUFFIXES]
            attachments = tuple(
                Attachment(n, sums[n], sums_path.parent / n) for n in names if n in sums
            )
            images[file] = Image(
                name.name,
                name.version,
                name.arch,
                file,
                digest,
                path.stat().st_size,
                path,
                attachments=attachments,
            )
    return images


def plan(
    live: Path | None,
    new: list[Image],
    input_sums: bytes,
    input_sig: bytes,
    base_url: str | None,
    keep: int,
    signer: Signer | None,
    keyring: bytes,
) -> Plan:
    """Compute the next generation; signs only manifests whose content changes."""
    current = _current_images(live) if live else {}
    old_index: dict[str, Any] = {}
    if live and (live / INDEX).is_file():
        try:
            old_index = json.loads((live / INDEX).read_text(encoding="utf-8"))
        except ValueError:
            raise PipelineError(f"{live / INDEX}: not valid JSON") from None
    base = base_url or str(old_index.get("base_url") or "")
    if not base:
        raise PipelineError("--base-url: required for the first publish into a tree")
    merged = dict(current)
    for image in new:
        old = current.get(image.file)
        if old and old.sha256 != image.sha256:
            raise PipelineError(
                f"{image.source}: {image.file} is already published with sha256 "
                f"{old.sha256}; published versions are immutable, bump the "
                "version instead"
            )
        if not old:
            merged[image.file] = image

    result = Plan()
    public = signer.public_key() if signer else keyring
    result.files[KEYRING] = public
    extensions: dict[str, Any] = {}
    index = {"schema": 1, "base_url": base.rstrip("/"), "extensions": extensions}
    names = sorted({i.name for i in merged.values()})
    keyring_sha = hashlib.sha256(public).hexdigest()
    node: list[tuple[Installed, str]] = []
    for name in names:
        kept = _prune([i for i in merged.values() if i.name == name], keep)
        listed: dict[str, str] = {}
        for image in kept:
            items: list[Image | Attachment] = [image, *image.attachments]
            for item in items:
                result.images[f"{name}/{item.file}"] = item
                listed[item.file] = item.sha256
        sums = format_sums(listed).encode()
        result.files[f"{name}/{SUMS}"] = sums
        result.files[f"{name}/{SIGNATURE}"] = _signature(
            live, name, sums, input_sums, input_sig, signer
        )
        conf = transfer(name, base).encode()
        result.files[f"{CONFIG_DIR}/{name}.transfer"] = conf
        result.files[f"{CONFIG_DIR}/{name}.conf"] = conf
        latest = newest_first([i.version for i in kept])[0]
        # The Butane example installs the newest version; x86-64 when there is one.
        newest = sorted((i for i in kept if i.version == latest), key=lambda i: i.arch)[-1]
        result.files[f"{CONFIG_DIR}/{name}.bu"] = butane(
            [Installed(name, newest.file, newest.sha256)], base, keyring_sha
        ).encode()
        extensions[name] = _index_entry(name, base, kept)
        handler = _handler(kept, old_index.get("extensions", {}).get(name, {}))
        if handler:
            extensions[name]["containerd"] = handler
            node.append((Installed(name, newest.file, newest.sha256), handler["handler"]))
    if node:  # a Kubernetes node running Wasm pods with every shim published here
        result.files[f"{CONFIG_DIR}/{NODE_BUTANE}"] = butane(
            [ext for ext, _ in node], base, keyring_sha, [h for _, h in node]
        ).encode()
        index["kubernetes_node_butane"] = f"{CONFIG_DIR}/{NODE_BUTANE}"
    result.files[INDEX] = (json.dumps(index, indent=2, sort_keys=True) + "\n").encode()
    result.files[PAGE] = html.render(index, html.butane_texts(result.files)).encode()
    return result


def _handler(kept: list[Image], old_entry: dict[str, Any]) -> dict[str, str] | None:
    """The containerd runtime handler an extension registers: from its build metadata, or
    from the index entry an earlier publish wrote (live images carry no metadata)."""
    for image in kept:
        if image.meta and image.meta.recipe.get("containerd"):
            return dict(image.meta.recipe["containerd"])
    found = old_entry.get("containerd")
    if found is None:
        return None
    if problem := containerd_record_problem(found):  # index.json of the live tree: re-checked
        raise PipelineError(f"{INDEX} of the published tree: {problem}")
    return dict(found)


def _prune(images: list[Image], keep: int) -> list[Image]:
    """The newest `keep` versions of each arch (keep <= 0 keeps all), newest first."""
    kept: list[Image] = []
    for arch in sorted({i.arch for i in images}):
        of_arch = {i.version: i for i in images if i.arch == arch}
        order = newest_first(list(of_arch))
        kept += [of_arch[v] for v in (order[:keep] if keep > 0 else order)]
    return kept


def _signature(
    live: Path | None,
    name: str,
    sums: bytes,
    input_sums: bytes,
    input_sig: bytes,
    signer: Signer | None,
) -> bytes:
    """Reuse a signature over exactly these bytes if one exists, else sign with --gpg-key."""
    if live and (live / name / SUMS).is_file() and (live / name / SUMS).read_bytes() == sums:
        return (live / name / SIGNATURE).read_bytes()
    if sums == input_sums:
        return input_sig
    if signer is None:
        raise PipelineError(
            f"{name}/{SUMS}: the merged manifest differs from the input's signed "
            "one; pass --gpg-key FILE|env:VAR to sign it"
        )
    return signer.sign(sums, f"{name}/{SUMS}")[1]


def _index_entry(name: str, base: str, kept: list[Image]) -> dict[str, Any]:
    def entry(item: Image | Attachment) -> dict[str, Any]:
        return {
            "file": item.file,
            "url": f"{base.rstrip('/')}/{name}/{item.file}",
            "sha256": item.sha256,
        }

    versions = []
    for version in newest_first(sorted({i.version for i in kept})):
        arches = {}
        for image in (i for i in kept if i.version == version):
            arches[image.arch] = {**entry(image), "size": image.size}
            for item in image.attachments:  # "sbom", "provenance"
                suffix = item.file.removeprefix(attestation_name(image.file, ""))
                arches[image.arch][_ATTACHMENT_KEYS[suffix]] = entry(item)
        versions.append({"version": version, "arches": dict(sorted(arches.items()))})
    return {
        "latest": versions[0]["version"],
        "versions": versions,
        "sha256sums": f"{name}/{SUMS}",
        "signature": f"{name}/{SIGNATURE}",
        "transfer": f"{CONFIG_DIR}/{name}.transfer",
        "conf": f"{CONFIG_DIR}/{name}.conf",
        "butane": f"{CONFIG_DIR}/{name}.bu",
    }


def _unchanged(live: Path | None, new: Plan) -> bool:
    """True if the live tree holds exactly the planned files with the planned bytes."""
    if live is None:
        return False
    present = {str(p.relative_to(live)) for p in live.rglob("*") if not p.is_dir()}
    if present != set(new.files) | set(new.images):
        return False
    for rel, data in new.files.items():
        if (live / rel).read_bytes() != data:
            return False
    return all(i.source == live / rel for rel, i in new.images.items())


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o644)


def _place(image: Image | Attachment, live: Path | None, target: Path) -> None:
    """Hard-link a file already in the live tree; copy (and re-hash) one from the input."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if live is not None and image.source.is_relative_to(live):
        os.link(image.source, target)
        return
    digest = hashlib.sha256()
    with open(image.source, "rb") as src, open(target, "wb") as out:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(target, 0o644)
    if digest.hexdigest() != image.sha256:  # the input changed after it was verified
        raise PipelineError(
            f"{image.source}: changed while publishing (sha256 "
            f"{digest.hexdigest()}, expected {image.sha256})"
        )


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> None:
    """Atomically swap two paths (renameat2 RENAME_EXCHANGE): a directory with a symlink."""
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd = -100
    if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE):
        err = ctypes.get_errno()
        raise PipelineError(
            f"--dest {b}: cannot swap in atomically ({os.strerror(err)}); move "
            "the directory away and publish into a new --dest"
        )


def dest_lock(dest: Path) -> AbstractContextManager[None]:
    """Serialize publishes into one tree (an flock on a file beside it)."""
    return flocked(dest.parent / f".{dest.name}.lock", f"waiting for another publish into {dest}")


def generations_dir(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.generations"


def publish_static(
    src: Path,
    dest: Path,
    base_url: str | None,
    keep: int,
    signer: Signer | None,
    keyring_path: Path | None,
) -> dict[str, Any]:
    """Publish `src`'s signed images into `dest`; returns the tree's index.json content."""
    dest = dest.absolute()
    if base_url is not None:
        check_base_url(base_url, "--base-url")
    if keyring_path is not None:
        keyring = read_keyring(keyring_path)
    elif signer:
        keyring = signer.public_key()
    else:
        raise PipelineError("--keyring or --gpg-key: needed to verify the input's SHA256SUMS.gpg")
    images, input_sums, input_sig = load_input(src, keyring)
    _log.info(f"{len(images)} verified image(s) in {src}")
    with dest_lock(dest):
        gens = generations_dir(dest)
        live = _live(dest)
        new = plan(live, images, input_sums, input_sig, base_url, keep, signer, keyring)
        index: dict[str, Any] = json.loads(new.files[INDEX])
        if _unchanged(live, new):
            _log.info(f"{dest}: already up to date")
            return index
        gens.mkdir(exist_ok=True)
        for stale in gens.glob(".tmp-*"):  # left by a publish that was killed
            shutil.rmtree(stale)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        gen_id = f"{stamp}-{os.getpid()}-{os.urandom(3).hex()}"
        tmp = gens / f".tmp-{gen_id}"
        tmp.mkdir()
        for rel, image in sorted(new.images.items()):
            _place(image, live, tmp / rel)
        for rel, data in sorted(new.files.items()):
            _write(tmp / rel, data)
        for directory in sorted({p.parent for p in tmp.rglob("*")}, reverse=True):
            fsync_dir(directory)
        final = gens / gen_id
        tmp.rename(final)
        link = dest.parent / f".{dest.name}.link-{gen_id}"
        link.symlink_to(final.relative_to(dest.parent))
        if dest.is_dir() and not dest.is_symlink():
            # First publish over a plain directory: swap it out in one step and keep it as
            # the previous generation, so in-flight readers still find their files.
            _exchange(link, dest)
            link.rename(gens / f"{gen_id}-previous")
        else:
            os.replace(link, dest)
        fsync_dir(dest.parent)
        _prune_generations(gens, final)
    _log.info(f"{dest}: now {final.name}")
    return index


def _prune_generations(gens: Path, live: Path) -> None:
    """Delete all but the newest KEPT_GENERATIONS generations (the live one always stays)."""
    others = sorted(
        (p for p in gens.iterdir() if not p.name.startswith(".") and p != live),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in others[KEPT_GENERATIONS - 1 :]:
        shutil.rmtree(old)

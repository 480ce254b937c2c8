"""`publish static`: merge signed images into a static update-server tree, atomically.

Layout of `--dest PATH` (see docs/publishing.md):

    PATH -> .PATH.generations/<id>/      a symlink, swapped with one rename(2)
      <name>/<name>-<version>-<arch>.raw, SHA256SUMS, SHA256SUMS.gpg
      <name>/<name>-<version>-<arch>.spdx.json, .intoto.jsonl   its SBOM, signed provenance
      sysupdate.d/<name>.transfer, <name>.conf, <name>.bu
      import-pubring.gpg                 the key hosts verify SHA256SUMS.gpg with
      verity.d/<file>.crt                the certificates hosts verify the images with
      index.json, index.html             what is published, for programs and for people

Every publish writes a complete new generation directory beside the live one (unchanged
images are hard links, so this is cheap), fsyncs it and then replaces the PATH symlink: a web
server serving PATH sees the old tree or the new one, never a mix, and a killed publish leaves
only an unreferenced temporary directory that the next publish removes. The previous
generation is kept so requests that resolved it just before the swap still complete.
Publishes serialize on an flock beside PATH. A run that would produce the current tree again
writes nothing.

Every image the new tree holds must be a verity-signed DDI whose signature verifies against one
of the given certificates (`--verity-cert`, default keys/verity.crt): the Butane configs make
hosts refuse anything else, so a tree they would refuse is refused here, before anything is
written. `--allow-unsigned` publishes without that promise, and the Butane configs say so.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
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
from pipeline.publish import canary, html
from pipeline.publish.butane import IMAGE_POLICY, Certificate, Installed, Trust, butane
from pipeline.publish.sysupdate import transfer
from pipeline.publish.versions import newest_first
from pipeline.sign.ddi import check_ddi
from pipeline.sign.gpt import is_gpt
from pipeline.sign.keys import cert_fingerprint, load_cert
from pipeline.sign.openpgp import Signer, read_keyring, verify_detached

INDEX = "index.json"
PAGE = "index.html"  # the same, for people
NODE_BUTANE = "kubernetes-node.bu"
CONFIG_DIR = "sysupdate.d"
CERT_DIR = "verity.d"
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


@dataclass(frozen=True)
class VerityCerts:
    """The certificates every published image must verify against: their paths (what
    `openssl cms` reads) and how hosts get them."""

    paths: tuple[Path, ...]
    certificates: tuple[Certificate, ...]

    @classmethod
    def load(cls, paths: list[Path]) -> VerityCerts:
        certificates: dict[str, Certificate] = {}
        for path in paths:
            fingerprint = cert_fingerprint(load_cert(path, "--verity-cert"))
            file = f"wasm-sysexts-{fingerprint[:16]}.crt"
            if file in certificates:
                raise PipelineError(f"--verity-cert {path}: the same certificate is given twice")
            certificates[file] = Certificate(file, path.read_text(encoding="ascii"))
        return cls(tuple(paths), tuple(certificates.values()))

    def check(self, image: Path, shown: str) -> None:
        """Raise unless `image` is a DDI signed by one of the certificates, naming `shown`."""
        if not is_gpt(image):
            raise PipelineError(
                f"{shown}: not a verity-signed DDI, and hosts provisioned from this tree refuse "
                "unsigned images (sign with --verity-key/--verity-cert, or publish with "
                "--allow-unsigned)"
            )
        try:
            check_ddi(image, self.paths)
        except PipelineError as err:
            raise PipelineError(f"{shown}: {str(err).removeprefix(f'{image.name}: ')}") from None


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
    certs: VerityCerts | None,
    canaries: dict[Arch, Attachment] | None = None,
) -> Plan:
    """Compute the next generation; signs only manifests whose content changes. With `certs`,
    every image it keeps (published before or new) must verify against one of them."""
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
    trust = Trust(hashlib.sha256(public).hexdigest(), certs.certificates if certs else ())
    index["image_policy"] = IMAGE_POLICY if certs else None
    index["verity_certificates"] = [
        {"file": f"{CERT_DIR}/{c.file}", "sha256": hashlib.sha256(c.pem.encode()).hexdigest()}
        for c in trust.certificates
    ]
    for cert in trust.certificates:
        result.files[f"{CERT_DIR}/{cert.file}"] = cert.pem.encode()
    for name in names:
        kept = _prune([i for i in merged.values() if i.name == name], keep)
        for image in kept:  # published before: the certificates may have changed since
            if certs and live and image.source.is_relative_to(live):
                certs.check(image.source, str(image.source))
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
        extensions[name] = _index_entry(name, base, kept)
        handler = _handler(kept, old_index.get("extensions", {}).get(name, {}))
        if handler:
            extensions[name]["containerd"] = handler
    guards = {}
    for arch, item in sorted((canaries or {}).items()):
        result.images[f"{canary.NAME}/{item.file}"] = item
        guards[str(arch)] = {"file": f"{canary.NAME}/{item.file}", "sha256": item.sha256}
    if guards:
        index["trust_canary"] = guards
    read = result.files.__getitem__
    for name in names:
        result.files[f"{CONFIG_DIR}/{name}.bu"] = compose(index, read, [name]).encode()
    shims = [name for name in names if "containerd" in extensions[name]]
    if shims:  # a Kubernetes node running Wasm pods with every shim published here
        result.files[f"{CONFIG_DIR}/{NODE_BUTANE}"] = compose(index, read, shims).encode()
        index["kubernetes_node_butane"] = f"{CONFIG_DIR}/{NODE_BUTANE}"
    result.files[INDEX] = (json.dumps(index, indent=2, sort_keys=True) + "\n").encode()
    result.files[PAGE] = html.render(index, html.butane_texts(result.files)).encode()
    return result


def compose(
    index: dict[str, Any],
    read: Callable[[str], bytes],
    names: Sequence[str],
    arch: Arch | None = None,
    where: str = INDEX,
) -> str:
    """The Butane config for a host running `names` (every extension when empty) from a tree
    with this `index`, whose files `read` returns by tree-relative path: the newest version of
    each, for `arch` (default x86-64 where published, else arm64), with the node labels of the
    containerd handlers among them. Errors name `where` (the index file)."""
    extensions: dict[str, Any] = index["extensions"]
    for name in names:
        if name not in extensions:
            raise PipelineError(
                f"{where}: no extension {name} in this tree (published: "
                f"{', '.join(sorted(extensions)) or 'none'})"
            )
    certificates = tuple(
        Certificate(PurePosixPath(c["file"]).name, read(c["file"]).decode("ascii"))
        for c in index.get("verity_certificates", [])
    )
    trust = Trust(hashlib.sha256(read(KEYRING)).hexdigest(), certificates)
    installed, handlers = [], []
    picked: list[str] = []
    for name in names or sorted(extensions):
        entry = extensions[name]
        newest = entry["versions"][0]  # index.json lists versions newest first
        arches: dict[str, Any] = newest["arches"]
        pick = str(arch) if arch else max(arches)  # "x86-64" sorts after "arm64"
        if pick not in arches:
            raise PipelineError(
                f"{where}: {name} {newest['version']} has no {pick} image "
                f"(published: {', '.join(sorted(arches))})"
            )
        installed.append(Installed(name, arches[pick]["file"], arches[pick]["sha256"]))
        picked.append(pick)
        if "containerd" in entry:
            handlers.append(entry["containerd"]["handler"])
    found = index.get("trust_canary", {}).get(picked[0]) if picked else None
    guard = (
        Installed(canary.NAME, PurePosixPath(found["file"]).name, found["sha256"])
        if found
        else None
    )
    return butane(installed, str(index["base_url"]), trust, handlers, guard)


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
    verity_certs: list[Path],
    allow_unsigned: bool = False,
    canary_cache: Path | None = None,
) -> dict[str, Any]:
    """Publish `src`'s signed images into `dest`; returns the tree's index.json content.
    Every image must verify against one of `verity_certs`, unless `allow_unsigned`. With
    `canary_cache` (where systemd-repart's Debian root is kept), the tree gets a trust canary
    for each arch it holds (canary.py), kept from the live tree when it has one."""
    dest = dest.absolute()
    if base_url is not None:
        check_base_url(base_url, "--base-url")
    if allow_unsigned and verity_certs:
        raise PipelineError("--allow-unsigned: publishes without --verity-cert; give one, not both")
    if not allow_unsigned and not verity_certs:
        raise PipelineError("--verity-cert: needed to check the images hosts will verify")
    certs = None if allow_unsigned else VerityCerts.load(verity_certs)
    if keyring_path is not None:
        keyring = read_keyring(keyring_path)
    elif signer:
        keyring = signer.public_key()
    else:
        raise PipelineError("--keyring or --gpg-key: needed to verify the input's SHA256SUMS.gpg")
    images, input_sums, input_sig = load_input(src, keyring)
    if certs is not None:
        for image in images:  # before waiting for the lock
            certs.check(image.source, str(image.source))
    else:
        _log.warning(
            "--allow-unsigned: the Butane configs install no verity certificate and no image "
            "policy; hosts provisioned from them merge unsigned images"
        )
    _log.info(f"{len(images)} verified image(s) in {src}")
    with dest_lock(dest):
        gens = generations_dir(dest)
        live = _live(dest)
        given = (live, images, input_sums, input_sig, base_url, keep, signer, keyring, certs)
        if canary_cache is None:
            return _commit(dest, gens, live, plan(*given))
        gens.mkdir(exist_ok=True)
        for stale in gens.glob(".canary-*"):  # left by a publish that was killed
            shutil.rmtree(stale)
        with tempfile.TemporaryDirectory(prefix=".canary-", dir=gens) as scratch:
            canaries = _canaries(live, images, Path(scratch), canary_cache)
            return _commit(dest, gens, live, plan(*given, canaries))


def _canaries(
    live: Path | None, images: list[Image], scratch: Path, cache: Path
) -> dict[Arch, Attachment]:
    """A canary for every arch the next tree holds: the live tree's, or a new one."""
    arches = {i.arch for i in images} | {
        i.arch for i in (_current_images(live).values() if live else ())
    }
    found = {}
    for arch in sorted(arches):
        file = canary.file_name(arch)
        path = live / canary.NAME / file if live else None
        if path is None or not path.is_file():
            _log.info(f"making the {arch} trust canary")
            path = scratch / file
            canary.make_canary(arch, path, cache)
        found[arch] = Attachment(file, sha256_file(path), path)
    return found


def _commit(dest: Path, gens: Path, live: Path | None, new: Plan) -> dict[str, Any]:
    """Write `new` as the next generation and swap it in (the caller holds the lock)."""
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
    for rel, item in sorted(new.images.items()):
        _place(item, live, tmp / rel)
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

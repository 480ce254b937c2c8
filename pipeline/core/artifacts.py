"""The artifact contract: what an output directory holds and how every step reads it.

    <name>-<version>-<arch>.raw         an image (plain squashfs/erofs from build, or a DDI)
    <name>-<version>-<arch>.raw.json    its metadata (`ImageMeta`)
    <name>-<version>-<arch>.spdx.json   its SPDX SBOM (build)
    <name>-<version>-<arch>.intoto.jsonl  its signed SLSA provenance, a DSSE envelope (sign)
    SHA256SUMS                          sha256sum(1) lines for the images and those two
    SHA256SUMS.gpg                      detached OpenPGP signature of SHA256SUMS (after sign)

Name, version and arch come from the image's file name, which SHA256SUMS (and so its signature)
covers; `<image>.json` is not signed, so it must agree with the file name or the image is
refused: unsigned metadata never decides what is built on, tested or published. Build, the
rebuild check, sign, smoke, publish static and OCI all read directories through `ImageDir`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError
from pipeline.core.fs import (
    fsync_dir,
    link_or_copy,
    locked,
    os_problem,
    scratch_dir,
    sha256_file,
    write_atomic,
)
from pipeline.core.vocab import (
    IMAGE_SUFFIX,
    META_SUFFIX,
    NAME_PATTERN,
    PROVENANCE_SUFFIX,
    SBOM_SUFFIX,
    SHA256_RE,
    SUMS,
    VERSION_PATTERN,
    Arch,
    ImageFormat,
    attestation_name,
    containerd_record_problem,
    homepage_problem,
    license_problem,
)

_ARCHES = "|".join(re.escape(a) for a in Arch)
_IMAGE_RE = re.compile(
    rf"^(?P<name>{NAME_PATTERN})-(?P<version>{VERSION_PATTERN})"
    rf"-(?P<arch>{_ARCHES}){re.escape(IMAGE_SUFFIX)}$"
)
_SUMS_LINE = re.compile(r"^([0-9a-f]{64}) [ *]([^/\s][^/]*)$")


@dataclass(frozen=True, order=True)
class ImageName:
    name: str
    version: str
    arch: Arch

    @property
    def file(self) -> str:
        return f"{self.name}-{self.version}-{self.arch}{IMAGE_SUFFIX}"

    @property
    def label(self) -> str:
        """How progress lines name this image."""
        return f"{self.name} {self.version} {self.arch}"

    @classmethod
    def parse(cls, file: str) -> ImageName:
        match = _IMAGE_RE.match(file)
        if not match:
            raise PipelineError(
                f"{file}: not named <name>-<version>-<arch>{IMAGE_SUFFIX} "
                f"(arch one of {', '.join(Arch)})"
            )
        return cls(match["name"], match["version"], Arch(match["arch"]))


# ---------------------------------------------------------------- SHA256SUMS


def read_sums(path: Path) -> dict[str, str]:
    """file name -> sha256; malformed lines are an error naming the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise PipelineError(f"{path}: cannot read: {why}") from None
    sums: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = _SUMS_LINE.match(line)
        if not match:
            raise PipelineError(f"{path}: line {number}: not '<sha256>  <file name>'")
        if match.group(2) in sums:
            raise PipelineError(f"{path}: line {number}: {match.group(2)} listed twice")
        sums[match.group(2)] = match.group(1)
    return sums


def format_sums(sums: dict[str, str]) -> str:
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items()))


# ---------------------------------------------------------------- metadata


@dataclass(frozen=True)
class InputRecord:
    url: str
    sha256: str


@dataclass(frozen=True)
class VerityRecord:
    """How a DDI was made from a plain image: what hosts check and what it was signed from."""

    root_hash: str
    certificate_sha256: str
    source_format: str
    source_sha256: str


@dataclass(frozen=True)
class ElfRecord:
    """An ELF file of the image: its machine, and what a dynamic one needs from the host."""

    path: str
    machine: str
    interpreter: str | None = None
    needed: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageMeta:
    """`<image>.json`. `extra` carries sections this version does not know, unchanged."""

    name: str
    version: str
    arch: Arch
    format: ImageFormat
    sha256: str
    size: int
    recipe: dict[str, Any] = field(default_factory=dict)
    inputs: tuple[InputRecord, ...] = ()
    tools: dict[str, str] = field(default_factory=dict)
    source_date_epoch: int = 0
    build_key: str = ""
    verity: VerityRecord | None = None
    elf: tuple[ElfRecord, ...] = ()
    source: dict[str, Any] | None = None  # what a source build was built from
    builder: dict[str, str] = field(default_factory=dict)  # who ran the build (provenance)
    started_on: str = ""  # when the build ran (RFC 3339): provenance's startedOn
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def image(self) -> ImageName:
        return ImageName(self.name, self.version, self.arch)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            **self.extra,
            "name": self.name,
            "version": self.version,
            "arch": str(self.arch),
            "format": str(self.format),
            "recipe": self.recipe,
            "inputs": [asdict(i) for i in self.inputs],
            "tools": self.tools,
            "source_date_epoch": self.source_date_epoch,
            "image": {"file": self.image.file, "sha256": self.sha256, "size": self.size},
            "build_key": self.build_key,
        }
        if self.verity is not None:
            data["verity"] = asdict(self.verity)
        data["elf"] = [asdict(e) for e in self.elf]
        if self.source is not None:
            data["source"] = self.source
        if self.builder:
            data["builder"] = self.builder
        if self.started_on:
            data["started_on"] = self.started_on
        return data

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, data: Any, where: str) -> ImageMeta:
        """Parse and type-check metadata; PipelineError naming `where` and the field."""
        try:
            image = data["image"]
            verity = data.get("verity")
            meta = cls(
                name=_str(data["name"]),
                version=_str(data["version"]),
                arch=Arch(data["arch"]),
                format=ImageFormat(data["format"]),
                sha256=_sha(image["sha256"]),
                size=_int(image["size"]),
                recipe={
                    str(k): {str(a): _str(b) for a, b in dict(v).items()}
                    if k == "containerd"
                    else _str(v)
                    for k, v in dict(data.get("recipe", {})).items()
                },
                inputs=tuple(
                    InputRecord(_str(i["url"]), _sha(i["sha256"])) for i in data.get("inputs", [])
                ),
                tools={str(k): _str(v) for k, v in dict(data.get("tools", {})).items()},
                source_date_epoch=_int(data.get("source_date_epoch", 0)),
                build_key=_str(data.get("build_key", "")),
                verity=VerityRecord(**{f.name: _str(verity[f.name]) for f in fields(VerityRecord)})
                if verity
                else None,
                elf=tuple(
                    ElfRecord(
                        _str(e["path"]),
                        _str(e["machine"]),
                        _str(e["interpreter"]) if e.get("interpreter") else None,
                        tuple(_str(n) for n in e.get("needed", ())),
                    )
                    for e in data.get("elf", [])
                ),
                source=dict(data["source"]) if data.get("source") else None,
                builder={str(k): _str(v) for k, v in dict(data.get("builder", {})).items()},
                started_on=_str(data.get("started_on", "")),
                extra={k: v for k, v in data.items() if k not in _KNOWN},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise PipelineError(f"{where}: not valid image metadata ({_what(err)})") from None
        # The metadata is not signed, yet publish copies these fields into the Butane, index.json
        # and OCI annotations: they pass the checks the recipe passed, or nothing is published.
        recipe = meta.recipe
        problems = [
            homepage_problem(str(recipe["homepage"])) if "homepage" in recipe else None,
            license_problem(str(recipe["license"])) if "license" in recipe else None,
            containerd_record_problem(recipe["containerd"]) if "containerd" in recipe else None,
        ]
        if problem := next((p for p in problems if p), None):
            raise PipelineError(f"{where}: recipe: {problem}")
        if image.get("file") != meta.image.file:
            raise PipelineError(
                f"{where}: image.file {image.get('file')!r} does not match "
                f"name, version and arch ({meta.image.file})"
            )
        return meta


_KNOWN = {
    "name",
    "version",
    "arch",
    "format",
    "recipe",
    "inputs",
    "tools",
    "source_date_epoch",
    "image",
    "build_key",
    "verity",
    "elf",
    "source",
    "builder",
    "started_on",
}


def _what(err: Exception) -> str:
    return f"missing {err}" if isinstance(err, KeyError) else str(err) or type(err).__name__


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a string")
    return value


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{value!r} is not an integer")
    return value


def _sha(value: Any) -> str:
    if not isinstance(value, str) or not SHA256_RE.match(value):
        raise ValueError(f"{value!r} is not a sha256")
    return value


# ---------------------------------------------------------------- directories


@dataclass(frozen=True)
class Artifact:
    """One image in a directory: its (signed) name, path and checked metadata, if any."""

    name: ImageName
    path: Path
    meta: ImageMeta | None


class ImageDir:
    """An output directory of images, their metadata and SHA256SUMS."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def sums_path(self) -> Path:
        return self.path / SUMS

    def meta_path(self, image: ImageName) -> Path:
        return self.path / f"{image.file}{META_SUFFIX}"

    def sbom_path(self, image: ImageName) -> Path:
        return self.path / attestation_name(image.file, SBOM_SUFFIX)

    def provenance_path(self, image: ImageName) -> Path:
        return self.path / attestation_name(image.file, PROVENANCE_SUFFIX)

    def attestations(self, image: ImageName) -> list[Path]:
        """The image's SBOM and provenance files that exist."""
        return [p for p in (self.sbom_path(image), self.provenance_path(image)) if p.is_file()]

    def image_files(self) -> list[Path]:
        if not self.path.is_dir():
            raise PipelineError(f"{self.path}: not a directory")
        return sorted(self.path.glob(f"*{IMAGE_SUFFIX}"))

    def artifacts(self, require_meta: bool = False) -> list[Artifact]:
        """Every image of the directory, named by its file; raises on a bad name or metadata
        that disagrees with it (or is missing, with `require_meta`)."""
        found = []
        for path in self.image_files():
            name = ImageName.parse(path.name)
            if path.is_symlink() or not path.is_file():
                raise PipelineError(f"{path}: not a regular file")
            found.append(Artifact(name, path, self.read_meta(name, require_meta)))
        return found

    def read_meta(self, image: ImageName, required: bool = False) -> ImageMeta | None:
        path = self.meta_path(image)
        if not path.exists():
            if required:
                raise PipelineError(f"{path}: missing (build metadata of {image.file})")
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise PipelineError(f"{path}: not valid JSON ({type(err).__name__})") from None
        meta = ImageMeta.from_json(data, str(path))
        if meta.image != image:
            raise PipelineError(
                f"{path}: describes {meta.image.file}, not {image.file}; "
                "the image is refused (metadata must agree with the signed "
                "file name)"
            )
        return meta

    def sums(self) -> dict[str, str]:
        return read_sums(self.sums_path) if self.sums_path.exists() else {}

    def put(self, staged: Path, meta: ImageMeta, sbom: bytes) -> None:
        """Move a finished image in with its metadata, SBOM and SHA256SUMS entries, as one
        step under the directory lock: a concurrent build of the same name never mixes them."""
        with locked(self.path):
            staged.replace(self.path / meta.image.file)
            write_atomic(self.meta_path(meta.image), meta.dumps())
            write_atomic(self.sbom_path(meta.image), sbom)
            self.provenance_path(meta.image).unlink(missing_ok=True)  # of an older build
            self._update_sums({meta.image.file: meta.sha256})

    def update_sums(self, known: dict[str, str] | None = None) -> dict[str, str]:
        """Rewrite SHA256SUMS to list exactly the images in the directory. `known` gives
        hashes just computed; other entries are kept while their file exists, missing ones
        are hashed."""
        with locked(self.path):
            return self._update_sums(known or {})

    def _update_sums(self, known: dict[str, str]) -> dict[str, str]:
        old = self.sums()
        written = self.sums_path.stat().st_mtime_ns if self.sums_path.is_file() else 0

        def listed(path: Path) -> str | None:
            """The old entry, while the file is unchanged since SHA256SUMS was written: an
            image replaced later (a rebuild killed before it updated SHA256SUMS) has a newer
            ctime, which no tool can set back."""
            return old.get(path.name) if path.stat().st_ctime_ns <= written else None

        images = self.image_files()
        sums = {p.name: known.get(p.name) or listed(p) or sha256_file(p) for p in images}
        # Attestations are small and rewritten in place by a rebuild: always hashed afresh.
        sums.update(
            {
                p.name: sha256_file(p)
                for image in images
                for p in self.attestations(ImageName.parse(image.name))
            }
        )
        write_atomic(self.sums_path, format_sums(sums))
        return sums


def merge_dirs(sources: list[Path], out: Path) -> dict[str, str]:
    """A new directory `out` holding every image of `sources` with its metadata and
    attestations, and one SHA256SUMS listing them all; returns that listing.

    Each source's images are checked against its own SHA256SUMS (a build lists every image it
    wrote), and an image found in two sources must be the same bytes. Nothing else of a source
    is taken (locks, scratch files, stale sums). `out` appears whole or not at all; it must not
    exist yet. What `build-all` and the Dagger module use to gather per-image builds."""
    if out.exists() or out.is_symlink():
        raise PipelineError(f"{out}: already exists; merge writes a new directory")
    chosen: dict[str, tuple[Path, str]] = {}  # file name -> (path, sha256)
    for source in sources:
        directory = ImageDir(source)
        listed = directory.sums()
        for artifact in directory.artifacts(require_meta=True):
            files = [
                artifact.path,
                directory.meta_path(artifact.name),
                *directory.attestations(artifact.name),
            ]
            for path in files:
                digest = sha256_file(path)
                if path.name in listed and listed[path.name] != digest:
                    raise PipelineError(
                        f"{path}: sha256 {digest} differs from its "
                        f"{source / SUMS} entry {listed[path.name]}"
                    )
                seen = chosen.setdefault(path.name, (path, digest))
                if seen[1] != digest:
                    raise PipelineError(
                        f"{path.name}: {seen[0]} and {path} differ; one image name, two contents"
                    )
            if artifact.name.file not in listed:
                raise PipelineError(f"{artifact.path}: not listed in {source / SUMS}")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with scratch_dir(out.parent, out.name) as work:
            for name, (path, _) in chosen.items():
                link_or_copy(path, work / name)
            os.chmod(work, 0o755)  # served by web servers and exported by Dagger as is
            # `work` is private until renamed: no lock (and so no lock file) needed.
            sums = ImageDir(work)._update_sums({n: d for n, (_, d) in chosen.items()})
            os.rename(work, out)
            fsync_dir(out.parent)
    except OSError as err:
        raise PipelineError(f"{out}: cannot write: {os_problem(err)}") from None
    return sums

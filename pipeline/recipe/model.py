"""What a recipe (`sysexts/<name>.yaml`) says, once loaded and validated: frozen data."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from urllib.parse import quote

from pipeline.core.errors import PipelineError
from pipeline.core.osv import Package
from pipeline.core.vocab import Arch

# A crates.io crate (`source.crate`) and where the registry serves its .crate file.
CRATE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
CRATE_URL = "https://static.crates.io/crates/{crate}/{crate}-{{version}}.crate"

# Placeholders a recipe may use in URLs and install paths; smoke commands also get {hello_wasm}.
PLACEHOLDERS = frozenset({"version", "arch", "uarch", "goarch"})
SMOKE_PLACEHOLDERS = PLACEHOLDERS | {"hello_wasm"}


class RecipeError(PipelineError):
    """Every problem found in one or more recipes, one `FILE: field: message` line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Input:
    """One upstream file for one version and arch; `sha256` None means not pinned yet."""

    url: str
    sha256: str | None


@dataclass(frozen=True)
class Install:
    """Copy archive member(s) `src` (a path or glob, placeholders allowed) to image path `dst`."""

    src: str
    dst: str
    mode: int | None
    input: int


@dataclass(frozen=True)
class ExtraFile:
    """A file the recipe itself ships (a systemd unit, a containerd drop-in...)."""

    path: str
    content: str
    mode: int


@dataclass(frozen=True)
class TargetOS:
    """The host an image is for: `_any` by default, or e.g. `flatcar` with a SYSEXT_LEVEL."""

    id: str = "_any"
    sysext_level: str | None = None
    version_id: str | None = None


# version -> arch -> inputs, or a string saying why that arch is not available.
Versions = dict[str, dict[Arch, tuple[Input, ...] | str]]


class BuildFrom(StrEnum):
    """Where an image's payload comes from."""

    RELEASE = "release"  # upstream's release assets (`versions:`)
    SOURCE = "source"  # built here from pinned source (`source:`)


class SourceKind(StrEnum):
    GO = "go"  # a module from the Go module proxy, pinned by its h1: hash
    CARGO = "cargo"  # a crate or source tree with a Cargo.lock
    CMAKE = "cmake"
    MAKE = "make"


@dataclass(frozen=True)
class Fetched:
    """A source file to download, pinned by the sha256 of its bytes or by the git tree id of
    what it unpacks to (upstream tag archives: the same content, whoever compressed it)."""

    url: str
    sha256: str | None = None
    tree: str | None = None


@dataclass(frozen=True)
class GitPin:
    url: str
    commit: str


@dataclass(frozen=True)
class SourcePin:
    """What one version builds from."""

    archive: Fetched | None = None  # a source archive (tar.gz, .crate, zip)
    git: GitPin | None = None  # or a git repository at a commit
    h1: str | None = None  # go: the module's hash (go.sum, the checksum database)
    # More pinned sources, by placeholder name: archives, or git checkouts (a repository whose
    # tree has submodules cannot be pinned by an archive's tree id).
    inputs: tuple[tuple[str, Fetched | GitPin], ...] = ()
    lock_sha256: str | None = None  # cargo: the Cargo.lock the build uses (after prepare)


@dataclass(frozen=True)
class Source:
    """How to build the recipe's payload from source (`source:` in a recipe)."""

    kind: SourceKind
    versions: dict[str, SourcePin]
    directory: str = "."  # where in the source tree to build
    prepare: tuple[str, ...] = ()  # declared shell steps run in the tree before building
    outputs: dict[str, str] = field(default_factory=dict)  # output name -> built file
    module: str = ""  # go
    packages: dict[str, str] = field(default_factory=dict)  # go: output name -> package
    ldflags: str = ""  # go
    tags: tuple[str, ...] = ()  # go: build tags
    package: str = ""  # cargo: -p
    features: tuple[str, ...] = ()  # cargo
    configure: tuple[str, ...] = ()  # cmake: configure arguments; make: make arguments
    target: str = ""  # cmake/make target
    arches: tuple[Arch, ...] = tuple(Arch)
    crate: str = ""  # cargo: a crates.io crate (the .crate, its own Cargo.lock and binaries)


@dataclass(frozen=True)
class ContainerdRuntime:
    """A containerd shim's CRI runtime handler (`containerd:` in a recipe); the loader turns it
    into the config files that register it (pipeline/recipe/containerd.py)."""

    handler: str  # the CRI runtime handler: a Kubernetes RuntimeClass's `handler`
    runtime_type: str  # io.containerd.<name>.<vN>: containerd runs containerd-shim-<name>-<vN>
    options: tuple[tuple[str, bool | int | str], ...] = ()  # the runtime's `options` table
    pods: bool = True  # the smoke test runs the hello module in a pod with this handler


@dataclass(frozen=True)
class Recipe:
    path: Path
    name: str
    summary: str
    homepage: str
    license: str
    version: str
    versions: Versions
    install: tuple[Install, ...]
    files: tuple[ExtraFile, ...] = ()
    smoke: tuple[str, ...] = ()
    os: TargetOS = field(default_factory=TargetOS)
    checksums: str | None = None
    source: Source | None = None
    default_from: BuildFrom = BuildFrom.RELEASE
    containerd: ContainerdRuntime | None = None
    packages: tuple[str, ...] = ()  # purl templates (`package:`), matched against advisories

    def upstream_packages(self, version: str) -> tuple[Package, ...]:
        return tuple(Package.from_purl(p) for p in self.purls(version))

    def purls(self, version: str) -> tuple[str, ...]:
        """The upstream packages `version` ships, as purls (the version part percent-encoded)."""
        return tuple(
            head + "@" + quote(tail.replace("{version}", version), safe="")
            for head, _, tail in (p.partition("@") for p in self.packages)
        )

    @property
    def ships_units(self) -> bool:
        return any(f.path.startswith(("/usr/lib/systemd/", "/etc/systemd/")) for f in self.files)

    def builds_from(self, version: str, wanted: BuildFrom | None = None) -> BuildFrom:
        """`wanted` if given, else the recipe's default, else whichever `version` has."""
        if wanted is not None:
            return wanted
        has = [b for b in BuildFrom if self.has(version, b)]
        return self.default_from if self.default_from in has or not has else has[0]

    def has(self, version: str, kind: BuildFrom) -> bool:
        if kind is BuildFrom.SOURCE:
            return self.source is not None and version in self.source.versions
        return version in self.versions

    def source_pin(self, version: str) -> SourcePin:
        if self.source is None or version not in self.source.versions:
            known = ", ".join(sorted(self.source.versions)) if self.source else "none"
            raise PipelineError(
                f"{self.path}: source.versions: no version {version!r} (known: {known})"
            )
        return self.source.versions[version]

    def unavailable(self, version: str, arch: Arch, wanted: BuildFrom | None = None) -> str | None:
        """Why `arch` has no build for `version` (from `wanted`, or the default), or None."""
        if self.builds_from(version, wanted) is BuildFrom.SOURCE:
            self.source_pin(version)
            assert self.source is not None
            return (
                None
                if arch in self.source.arches
                else f"the source build is for {', '.join(self.source.arches)} only"
            )
        entry = self._entry(version, arch)
        return entry if isinstance(entry, str) else None

    @property
    def all_versions(self) -> list[str]:
        return sorted(set(self.versions) | set(self.source.versions if self.source else ()))

    def inputs(self, version: str, arch: Arch) -> tuple[Input, ...]:
        entry = self._entry(version, arch)
        if isinstance(entry, str):
            raise PipelineError(f"{self.path}: versions.{version}.{arch}: not available: {entry}")
        return entry

    def pinned(self, version: str) -> bool:
        """What the default build of `version` downloads is all pinned."""
        if self.builds_from(version) is BuildFrom.SOURCE:
            return source_pinned(self.source_pin(version), self.source)
        return all(
            i.sha256
            for a in self.versions[version]
            if not self.unavailable(version, a)
            for i in self.inputs(version, a)
        )

    def unpinned_default(self) -> list[str]:
        """One line per arch the default version would build from an unpinned input (an arch
        marked unavailable, with its reason, is not one)."""
        version = self.version
        if self.builds_from(version) is BuildFrom.SOURCE:
            return (
                []
                if self.pinned(version)
                else [f"{self.path}: source.versions.{version}: the default version is not pinned"]
            )
        return [
            f"{self.path}: versions.{version}.{arch}: the default version has a null sha256 "
            "(pin it with lock, or mark the arch {unavailable: why})"
            for arch in self.versions[version]
            if not self.unavailable(version, arch)
            and any(not i.sha256 for i in self.inputs(version, arch))
        ]

    def expand(self, template: str, version: str, arch: Arch, **extra: str) -> str:
        values = {
            "version": version,
            "arch": str(arch),
            "uarch": arch.uname,
            "goarch": arch.goarch,
            **extra,
        }
        return template.format_map(values)

    def checksums_url(self, version: str, arch: Arch) -> str | None:
        return self.expand(self.checksums, version, arch) if self.checksums else None

    def _entry(self, version: str, arch: Arch) -> tuple[Input, ...] | str:
        if version not in self.versions:
            known = ", ".join(sorted(self.versions))
            raise PipelineError(f"{self.path}: versions: no version {version!r} (known: {known})")
        arches = self.versions[version]
        if arch not in arches:
            raise PipelineError(f"{self.path}: versions.{version}: no entry for arch '{arch}'")
        return arches[arch]


def source_pinned(pin: SourcePin, source: Source | None) -> bool:
    """Every byte the pin names is pinned (a go module needs its h1:, cargo its lock)."""
    fetched = [f for _, f in pin.inputs if isinstance(f, Fetched)] + (
        [pin.archive] if pin.archive else []
    )
    if any(not (f.sha256 or f.tree) for f in fetched):
        return False
    if source is not None and source.kind is SourceKind.GO and not pin.h1:
        return False
    if source is not None and source.kind is SourceKind.CARGO and not pin.lock_sha256:
        return False
    return bool(pin.archive or pin.git or pin.h1)

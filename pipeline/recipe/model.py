"""What a recipe (`sysexts/<name>.yaml`) says, once loaded and validated: frozen data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.core.vocab import Arch

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

    @property
    def ships_units(self) -> bool:
        return any(f.path.startswith(("/usr/lib/systemd/", "/etc/systemd/")) for f in self.files)

    def unavailable(self, version: str, arch: Arch) -> str | None:
        """Why `arch` has no build for `version`, or None when it has one."""
        entry = self._entry(version, arch)
        return entry if isinstance(entry, str) else None

    def inputs(self, version: str, arch: Arch) -> tuple[Input, ...]:
        entry = self._entry(version, arch)
        if isinstance(entry, str):
            raise PipelineError(f"{self.path}: versions.{version}.{arch}: not available: {entry}")
        return entry

    def pinned(self, version: str) -> bool:
        """Every input of every available arch of `version` has a sha256."""
        return all(i.sha256 for a in self.versions[version] if not self.unavailable(version, a)
                   for i in self.inputs(version, a))

    def expand(self, template: str, version: str, arch: Arch, **extra: str) -> str:
        values = {"version": version, "arch": str(arch), "uarch": arch.uname,
                  "goarch": arch.goarch, **extra}
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

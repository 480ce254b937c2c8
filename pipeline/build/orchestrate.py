"""recipe -> fetch -> stage -> image for one image, and many at once (build-all).

Outputs in `--out DIR` follow the artifact contract (pipeline.core.artifacts): the image, its
`<image>.json`, its SPDX SBOM `<name>-<version>-<arch>.spdx.json` and the directory's
SHA256SUMS. An image whose inputs, recipe, format and tools are unchanged is not rebuilt: its
metadata records a key over all of them.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import anyio

from pipeline import __version__
from pipeline.attest.provenance import builder_identity
from pipeline.attest.sbom import FORMAT as SBOM_FORMAT
from pipeline.attest.sbom import sbom
from pipeline.build.extract import FORMAT as EXTRACT_FORMAT
from pipeline.build.extract import unpack
from pipeline.build.fetch import Fetcher, input_filename
from pipeline.build.image import make_image, tool_version
from pipeline.build.source import build_from_source, fetch_source, toolchain
from pipeline.build.stage import stage
from pipeline.core import log
from pipeline.core.artifacts import ImageDir, ImageMeta, ImageName, InputRecord
from pipeline.core.errors import NotCached, PipelineError
from pipeline.core.fs import (
    locked,
    os_error_line,
    remove_tree,
    scratch_dir,
    sha256_file,
    sweep,
)
from pipeline.core.log import human_size, labelled, redact
from pipeline.core.osv import Advisory, Package, Severity
from pipeline.core.vocab import Arch, BuildStatus, ImageFormat
from pipeline.recipe.model import BuildFrom, Input, Recipe

_log = log.get("build")


@dataclass(frozen=True)
class Options:
    out_dir: Path
    fmt: ImageFormat = ImageFormat.SQUASHFS
    epoch: int = 0
    build_from: BuildFrom | None = None  # None: each recipe's default
    # (recipe name, version) -> the known advisories of the packages it ships (build/cli.py)
    advisories: dict[tuple[str, str], tuple[tuple[Package, Advisory], ...]] = field(
        default_factory=dict
    )
    accepted: frozenset[str] = frozenset()  # --accept-advisory: critical ones built anyway
    keep_work: bool = False  # --keep-work: leave each build's work tree in <out>/<image>.work


@dataclass
class Result:
    name: str
    version: str
    arch: Arch
    format: ImageFormat
    status: BuildStatus
    image: str | None = None
    sha256: str | None = None
    size: int | None = None
    seconds: float = 0.0
    error: str | None = None
    not_cached: bool = False  # failed offline for want of an input: a fetch would fix it
    started: str = field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC).isoformat(
            timespec="milliseconds"
        )
    )  # when this build ran

    def to_json(self) -> dict[str, object]:
        return {
            k: (str(v) if isinstance(v, Arch | ImageFormat | BuildStatus) else v)
            for k, v in asdict(self).items()
        }


def build_key(
    recipe: Recipe,
    version: str,
    arch: Arch,
    fmt: ImageFormat,
    epoch: int,
    tools: dict[str, str],
    origin: BuildFrom,
) -> str:
    """A hash over everything that decides the image bytes: for a source build, the source,
    its pins and the toolchain too."""
    material: dict[str, object] = {
        "pipeline": __version__,
        "format": str(fmt),
        "tools": tools,
        "epoch": epoch,
        "arch": str(arch),
        "name": recipe.name,
        "version": version,
        "os": asdict(recipe.os),
        "install": [asdict(i) for i in recipe.install],
        "files": [asdict(f) for f in recipe.files],
        "from": str(origin),
        "packages": recipe.purls(version),  # they are in the SBOM
        "sbom": SBOM_FORMAT,
    }
    if origin is BuildFrom.SOURCE:
        assert recipe.source is not None
        material["source"] = {
            **asdict(recipe.source),
            "versions": None,
            "pin": asdict(recipe.source_pin(version)),
        }
    else:
        material["inputs"] = [i.sha256 for i in recipe.inputs(version, arch)]
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def unpacked(
    fetcher: Fetcher, archive: Path, sha256: str, url: str, limit: int | None = None
) -> Path:
    """Input `url` (cached at `archive`) unpacked once into the cache and reused: keyed by its
    sha256, its file name (which decides how it unpacks) and the unpacker's format. Builds only
    read from it; a warm build decompresses nothing."""
    name = input_filename(url)
    key = hashlib.sha256(f"{sha256}\0{name}\0{EXTRACT_FORMAT}".encode()).hexdigest()[:32]
    base = fetcher.cache_dir / "unpacked"
    final = base / key
    if final.is_dir():
        return final
    base.mkdir(parents=True, exist_ok=True)
    sweep(base)
    with scratch_dir(base, key) as work:
        (work / "tree").mkdir()
        unpack(archive, name, work / "tree", redact(url), limit or fetcher.max_unpack)
        with locked(base):
            if not final.is_dir():
                (work / "tree").rename(final)
    return final


def _unchanged(out: ImageDir, image: ImageName, key: str) -> ImageMeta | None:
    """The existing metadata if the image on disk is exactly what `key` would build."""
    try:
        old = out.read_meta(image)
    except PipelineError:
        return None  # unreadable or disagreeing metadata: rebuild
    path = out.path / image.file
    if (
        old is None
        or old.build_key != key
        or not path.is_file()
        or not out.sbom_path(image).is_file()
    ):
        return None
    return old if sha256_file(path) == old.sha256 else None


@dataclass(frozen=True)
class Plan:
    """What one build reads: where it builds from, and its release inputs (none for source)."""

    origin: BuildFrom
    inputs: tuple[Input, ...]
    skipped: str = ""  # why this arch is not built


def plan(recipe: Recipe, version: str, arch: Arch, build_from: BuildFrom | None) -> Plan:
    origin = recipe.builds_from(version, build_from)
    if not recipe.has(version, origin):
        raise PipelineError(
            f"{recipe.path}: {version} has no {origin} build "
            f"({'source.versions' if origin is BuildFrom.SOURCE else 'versions'})"
        )
    reason = recipe.unavailable(version, arch, origin)
    if reason:
        return Plan(origin, (), reason)
    inputs = () if origin is BuildFrom.SOURCE else recipe.inputs(version, arch)
    for i, item in enumerate(inputs):
        if item.sha256 is None:
            raise PipelineError(
                f"{recipe.path}: versions.{version}.{arch}"
                f"{f'[{i}]' if len(inputs) > 1 else ''}.sha256: not pinned; "
                f"run 'wasm-sysexts lock {recipe.name} --version {version}'"
            )
    return Plan(origin, tuple(inputs))


def _fetched(
    recipe: Recipe, version: str, arch: Arch, fetcher: Fetcher, job: Plan
) -> tuple[list[str], list[Path]]:
    """The release inputs' URLs and their unpacked trees, downloaded and verified."""
    urls = [recipe.expand(i.url, version, arch) for i in job.inputs]
    paths = [fetcher.fetch(url, i.sha256) for url, i in zip(urls, job.inputs, strict=True)]
    return urls, [
        unpacked(fetcher, path, str(i.sha256), url)
        for url, path, i in zip(urls, paths, job.inputs, strict=True)
    ]


def fetch_one(
    recipe: Recipe, version: str, arch: Arch, fetcher: Fetcher, build_from: BuildFrom | None
) -> str:
    """Download, verify and unpack into the cache everything a build of `recipe` reads by pin,
    without building: a build with --offline then finds it (the Dagger module fetches in a
    container that reaches the mirror and builds in one that needs no service). Source
    builds' git pins are cloned by the build. Returns what was done, for the summary."""
    job = plan(recipe, version, arch, build_from)
    if job.skipped:
        return f"not available: {job.skipped}"
    if job.origin is BuildFrom.SOURCE:
        fetch_source(recipe, version, arch, fetcher)
        return "source fetched"
    _fetched(recipe, version, arch, fetcher, job)
    return f"{len(job.inputs)} input(s) fetched"


@contextmanager
def _kept(work: Path, opts: Options, image: ImageName) -> Iterator[None]:
    """With --keep-work, the build's work tree (source, prepared tree, target dir) moved to
    <out>/<image>.work when the build ends, however it ends."""
    try:
        yield
    finally:
        if opts.keep_work:
            kept = opts.out_dir / f"{image.file}.work"
            if kept.exists():
                remove_tree(kept)
            os.rename(work, kept)
            work.mkdir()  # the scratch directory's own cleanup finds it empty
            _log.info(f"work tree kept in {kept}")


def _advise(opts: Options, name: str, version: str) -> None:
    """One warning per known advisory of what this build ships; a critical one stops the build
    unless accepted by id (the decision is the builder's, made explicitly)."""
    for package, advisory in opts.advisories.get((name, version), ()):
        also = f" ({', '.join(advisory.aliases)})" if advisory.aliases else ""
        fixed = ", ".join(advisory.fixed_in(package)) or "no fixed version named"
        line = (
            f"{advisory.id}{also} ({advisory.severity}) affects "
            f"{package.name.rsplit('/', 1)[-1]} {package.version}, fixed in {fixed}"
        )
        if advisory.severity is Severity.CRITICAL and not (
            {advisory.id, *advisory.aliases} & opts.accepted
        ):
            raise PipelineError(
                f"{line}: not building it (build a fixed version, or pass "
                f"--accept-advisory {advisory.id})"
            )
        _log.warning(line)  # the log prints it as "warning: ..."


def build_one(recipe: Recipe, version: str, arch: Arch, fetcher: Fetcher, opts: Options) -> Result:
    """Build one image; a PipelineError leaves no new image, metadata or sums entry behind."""
    image = ImageName(recipe.name, version, arch)
    started = time.monotonic()
    result = Result(recipe.name, version, arch, opts.fmt, BuildStatus.FAILED)
    job = plan(recipe, version, arch, opts.build_from)
    origin, inputs = job.origin, job.inputs
    if job.skipped:
        result.status, result.error = BuildStatus.SKIPPED, f"not available: {job.skipped}"
        _log.info(f"skipped: {job.skipped}")
        return result
    _advise(opts, recipe.name, version)
    tools = {str(opts.fmt): tool_version(opts.fmt), "wasm-sysexts": __version__}
    if origin is BuildFrom.SOURCE:
        assert recipe.source is not None
        tools.update(toolchain(recipe.source.kind, arch))
    key = build_key(recipe, version, arch, opts.fmt, opts.epoch, tools, origin)
    out = ImageDir(opts.out_dir)
    old = _unchanged(out, image, key)
    if old is not None:
        out.update_sums({image.file: old.sha256})
        result.status, result.image, result.sha256 = BuildStatus.UNCHANGED, image.file, old.sha256
        result.size = old.size
        _log.info(f"unchanged: {image.file}")
        return result

    _log.info(f"building {image.file} ({opts.fmt}, from {origin})")
    urls, trees = _fetched(recipe, version, arch, fetcher, job)
    labels = [redact(u) for u in urls]
    build_log = opts.out_dir / f"{image.file}.build.log"
    build_log.unlink(missing_ok=True)  # a failed build's, superseded
    with scratch_dir(opts.out_dir, image.file) as work, _kept(work, opts, image):
        built = None
        if origin is BuildFrom.SOURCE:
            (work / "source").mkdir()
            built = build_from_source(
                recipe, version, arch, fetcher, work / "source", opts.epoch, build_log
            )
            build_log.unlink(missing_ok=True)  # kept only to read a failure
            trees, labels = [built.outputs], [f"the {recipe.name} source build's outputs"]
        root = work / "root"
        root.mkdir()
        elf = stage(recipe, version, arch, trees, labels, root, opts.epoch)
        staged = work / image.file
        make_image(root, staged, opts.fmt, opts.epoch, image.file)
        meta = ImageMeta(
            name=recipe.name,
            version=version,
            arch=arch,
            format=opts.fmt,
            sha256=sha256_file(staged),
            size=staged.stat().st_size,
            recipe={
                "file": recipe.path.name,
                "sha256": sha256_file(recipe.path),
                "summary": recipe.summary,
                "homepage": recipe.homepage,
                "license": recipe.license,
                **(
                    {
                        "containerd": {
                            "handler": recipe.containerd.handler,
                            "runtime_type": recipe.containerd.runtime_type,
                        }
                    }
                    if recipe.containerd
                    else {}
                ),
            },
            inputs=tuple(InputRecord(u, str(i.sha256)) for u, i in zip(urls, inputs, strict=True)),
            tools=tools,
            source_date_epoch=opts.epoch,
            build_key=key,
            elf=tuple(elf),
            source=built.record if built else None,
            builder=builder_identity(),
            started_on=result.started,
        )
        out.put(staged, meta, sbom(meta, root, recipe.purls(version)))
    result.status, result.image, result.sha256 = BuildStatus.BUILT, image.file, meta.sha256
    result.size = meta.size
    result.seconds = round(time.monotonic() - started, 1)
    _log.info(
        f"built {image.file}: {human_size(meta.size)} sha256 {meta.sha256[:16]}… "
        f"in {result.seconds}s"
    )
    return result


def build_many(
    jobs: list[tuple[Recipe, str, Arch]], fetcher: Fetcher, opts: Options, concurrency: int
) -> list[Result]:
    """Build every (recipe, version, arch) with bounded concurrency; failures do not stop others."""
    try:
        opts.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PipelineError(f"--out {opts.out_dir}: cannot create: {err.strerror}") from None
    sweep(opts.out_dir)  # work directories of killed builds
    results: list[Result | None] = [None] * len(jobs)

    def one(index: int) -> None:
        recipe, version, arch = jobs[index]
        started = time.monotonic()
        with labelled(ImageName(recipe.name, version, arch).label):
            try:
                results[index] = build_one(recipe, version, arch, fetcher, opts)
            except Exception as err:  # one runtime's failure, even a bug, must not stop the rest
                if isinstance(err, PipelineError):
                    message = str(err).splitlines()[0]
                elif isinstance(err, OSError):
                    message = os_error_line(err)
                else:
                    message = f"internal error: {type(err).__name__}: {err}"
                _log.info(f"FAILED: {message}")
                results[index] = Result(
                    recipe.name,
                    version,
                    arch,
                    opts.fmt,
                    BuildStatus.FAILED,
                    seconds=round(time.monotonic() - started, 1),
                    error=message,
                    not_cached=isinstance(err, NotCached),
                )

    async def main() -> None:
        limiter = anyio.CapacityLimiter(max(1, concurrency))
        async with anyio.create_task_group() as group:
            for index in range(len(jobs)):
                group.start_soon(partial(anyio.to_thread.run_sync, one, index, limiter=limiter))

    anyio.run(main)
    return [r for r in results if r is not None]


def summary_table(results: list[Result]) -> str:
    header = ("IMAGE", "STATUS", "SIZE", "SHA256", "TIME", "DETAIL")
    rows = [header] + [
        (
            r.image or ImageName(r.name, r.version, r.arch).file,
            str(r.status),
            human_size(r.size) if r.size else "-",
            (r.sha256 or "-")[:12],
            f"{r.seconds:.1f}s",
            r.error or "",
        )
        for r in results
    ]
    return log.table(rows)

"""Orchestrates recipe -> fetch -> stage -> image for one image, and many at once (build-all).

Outputs in `--out DIR`: `<name>-<version>-<arch>.raw`, its `<image>.json` metadata, and the
directory's `SHA256SUMS`. An image whose inputs, recipe, format and tools are unchanged is
not rebuilt: its metadata records a key over all of them.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from posixpath import basename
from urllib.parse import unquote, urlsplit

import anyio

from pipeline import __version__
from pipeline.errors import PipelineError
from pipeline.extract import unpack
from pipeline.fetch import Fetcher, sha256_file
from pipeline.image import make_image, tool_version
from pipeline.log import Reporter, human_size, redact
from pipeline.recipe import Recipe
from pipeline.stage import stage
from pipeline.sums import update_sums, write_atomic


@dataclass(frozen=True)
class Options:
    out_dir: Path
    fmt: str = "squashfs"
    epoch: int = 0


@dataclass
class Result:
    name: str
    version: str
    arch: str
    format: str
    status: str  # built | unchanged | skipped | failed
    image: str | None = None
    sha256: str | None = None
    size: int | None = None
    seconds: float = 0.0
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def image_name(name: str, version: str, arch: str) -> str:
    return f"{name}-{version}-{arch}.raw"


def input_filename(url: str) -> str:
    return unquote(basename(urlsplit(url).path))


def build_key(recipe: Recipe, version: str, arch: str, fmt: str, epoch: int, tool: str) -> str:
    """A hash over everything that decides the image bytes."""
    material = {
        "pipeline": __version__, "format": fmt, "tool": tool, "epoch": epoch, "arch": arch,
        "name": recipe.name, "version": version, "os": asdict(recipe.os),
        "inputs": [i.sha256 for i in recipe.inputs(version, arch)],
        "install": [asdict(i) for i in recipe.install],
        "files": [asdict(f) for f in recipe.files],
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _unchanged(image: Path, meta: Path, key: str) -> dict[str, object] | None:
    """The existing metadata if the image on disk is exactly what `key` would build."""
    try:
        old = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if old.get("build_key") != key or not image.is_file():
        return None
    return old if sha256_file(image) == old.get("image", {}).get("sha256") else None


def build_one(recipe: Recipe, version: str, arch: str, fetcher: Fetcher, opts: Options,
              reporter: Reporter) -> Result:
    """Build one image; a PipelineError leaves no new image, metadata or sums entry behind."""
    label = f"{recipe.name} {version} {arch}"
    started = time.monotonic()
    result = Result(recipe.name, version, arch, opts.fmt, "failed")
    reason = recipe.unavailable(version, arch)
    if reason:
        result.status, result.error = "skipped", f"not available: {reason}"
        reporter.info(label, f"skipped: {reason}")
        return result
    inputs = recipe.inputs(version, arch)
    for i, item in enumerate(inputs):
        if item.sha256 is None:
            raise PipelineError(f"{recipe.path}: versions.{version}.{arch}"
                                f"{f'[{i}]' if len(inputs) > 1 else ''}.sha256: not pinned; "
                                f"run 'wasm-sysexts lock {recipe.name} --version {version}'")
    tool = tool_version(opts.fmt)
    key = build_key(recipe, version, arch, opts.fmt, opts.epoch, tool)
    name = image_name(recipe.name, version, arch)
    image, meta = opts.out_dir / name, opts.out_dir / f"{name}.json"
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    old = _unchanged(image, meta, key)
    if old is not None:
        digest = str(old["image"]["sha256"])  # type: ignore[index]
        update_sums(opts.out_dir, {name: digest})
        result.status, result.image, result.sha256 = "unchanged", name, digest
        result.size = image.stat().st_size
        reporter.info(label, f"unchanged: {name}")
        return result

    reporter.info(label, f"building {name} ({opts.fmt})")
    urls = [recipe.expand(i.url, version, arch) for i in inputs]
    paths = [fetcher.fetch(url, i.sha256, label) for url, i in zip(urls, inputs, strict=True)]
    with tempfile.TemporaryDirectory(prefix=f".work-{recipe.name}-",
                                     dir=opts.out_dir) as work_dir:
        work = Path(work_dir)
        unpacked = []
        for i, (url, path) in enumerate(zip(urls, paths, strict=True)):
            target = work / f"input{i}"
            target.mkdir()
            unpack(path, input_filename(url), target, redact(url))
            unpacked.append(target)
        root = work / "root"
        root.mkdir()
        stage(recipe, version, arch, unpacked, [redact(u) for u in urls], root, opts.epoch)
        staged = work / name
        make_image(root, staged, opts.fmt, opts.epoch)
        digest = sha256_file(staged)
        size = staged.stat().st_size
        metadata = {
            "name": recipe.name, "version": version, "arch": arch, "format": opts.fmt,
            "recipe": {"file": recipe.path.name, "summary": recipe.summary,
                       "homepage": recipe.homepage, "license": recipe.license},
            "inputs": [{"url": u, "sha256": i.sha256} for u, i in zip(urls, inputs, strict=True)],
            "tools": {opts.fmt: tool, "wasm-sysexts": __version__},
            "source_date_epoch": opts.epoch,
            "image": {"file": name, "sha256": digest, "size": size},
            "build_key": key,
        }
        # Image first, then metadata, then sums: a crash in between leaves a rebuildable state
        # (no metadata means no skip), never a sums entry for a missing image.
        staged.replace(image)
        write_atomic(meta, json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    update_sums(opts.out_dir, {name: digest})
    result.status, result.image, result.sha256, result.size = "built", name, digest, size
    result.seconds = round(time.monotonic() - started, 1)
    reporter.info(label, f"built {name}: {human_size(size)} sha256 {digest[:16]}… "
                         f"in {result.seconds}s")
    return result


def build_many(jobs: list[tuple[Recipe, str, str]], fetcher: Fetcher, opts: Options,
               reporter: Reporter, concurrency: int) -> list[Result]:
    """Build every (recipe, version, arch) with bounded concurrency; failures do not stop others."""
    results: list[Result | None] = [None] * len(jobs)

    def one(index: int) -> None:
        recipe, version, arch = jobs[index]
        started = time.monotonic()
        try:
            results[index] = build_one(recipe, version, arch, fetcher, opts, reporter)
        except Exception as err:  # one runtime's failure, even a bug, must not stop the rest
            message = str(err).splitlines()[0] if isinstance(err, PipelineError) else \
                f"internal error: {type(err).__name__}: {err}"
            reporter.info(f"{recipe.name} {version} {arch}", f"FAILED: {message}")
            results[index] = Result(recipe.name, version, arch, opts.fmt, "failed",
                                    seconds=round(time.monotonic() - started, 1), error=message)

    async def main() -> None:
        limiter = anyio.CapacityLimiter(max(1, concurrency))
        async with anyio.create_task_group() as group:
            for index in range(len(jobs)):
                group.start_soon(partial(anyio.to_thread.run_sync, one, index, limiter=limiter))

    anyio.run(main)
    return [r for r in results if r is not None]


def summary_table(results: list[Result]) -> str:
    header = ("IMAGE", "STATUS", "SIZE", "SHA256", "TIME", "DETAIL")
    rows = [header] + [(
        r.image or image_name(r.name, r.version, r.arch), r.status,
        human_size(r.size) if r.size else "-", (r.sha256 or "-")[:12],
        f"{r.seconds:.1f}s", r.error or "",
    ) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
        for row in rows
    ).rstrip() + "\n"

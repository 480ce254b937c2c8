"""What one smoke-test boot will check: per image, the recipe's smoke commands (and, for
containerd shims, running a Wasm OCI image through them), written to the payload disk as data
for `guest.sh`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from pipeline.core.artifacts import ImageDir, ImageName
from pipeline.core.errors import PipelineError
from pipeline.core.vocab import Arch
from pipeline.recipe.load import find
from pipeline.recipe.model import Recipe
from pipeline.smoke.payloads import OCI_REF
from pipeline.vm.qemu import GUEST_MOUNT

GUEST_HELLO = f"{GUEST_MOUNT}/hello.wasm"
GUEST_OCI = f"{GUEST_MOUNT}/hello-oci.tar"
COMMAND_TIMEOUT = 180  # seconds per smoke command; TCG compiles Wasm slowly
SHIM_RE = re.compile(r"containerd-shim-([a-z0-9]+)-(v[0-9]+)$")
# The Spin shim runs Spin applications, not a plain WASI module: no generic ctr step for it.
SHIM_GENERIC_EXCLUDED = {"spin"}


class Outcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    NOT_RUN = "not run"


@dataclass
class Step:
    command: str
    expect: str | None = None  # text the output must contain
    status: Outcome = Outcome.NOT_RUN
    exit: int | None = None
    seconds: float | None = None
    output: str = ""
    reason: str = ""


@dataclass
class ImageReport:
    image: str
    name: str
    version: str = ""
    arch: str = ""
    merged: bool = False
    status: Outcome = Outcome.FAILED
    reason: str = ""
    steps: list[Step] = field(default_factory=list)


def shim_runtime(recipe: Recipe) -> str | None:
    """`io.containerd.<rt>.<vN>` if the recipe installs a containerd shim binary."""
    for entry in recipe.install:
        match = SHIM_RE.search(entry.dst.rstrip("/"))
        if match:
            return f"io.containerd.{match.group(1)}.{match.group(2)}"
    return None


def containerd_steps(runtime: str, name: str, expect: str) -> list[Step]:
    rt = runtime.split(".")[2]
    if rt in SHIM_GENERIC_EXCLUDED:
        return []
    up = ("mkdir -p /var/lib/containerd; touch /var/lib/containerd/.wsx 2>/dev/null || "
          "mount -t tmpfs tmpfs /var/lib/containerd; systemctl restart containerd && "
          "for i in $(seq 60); do ctr version >/dev/null 2>&1 && exit 0; sleep 0.5; done; "
          "ctr version")
    return [Step(up), Step(f"ctr image import {GUEST_OCI}"),
            Step(f"ctr run --rm --runtime {runtime} {OCI_REF} wsx-{name}", expect=expect)]


def _steps(recipe: Recipe, image: ImageName, expect: str) -> list[Step]:
    steps = []
    for template in recipe.smoke:
        command = recipe.expand(template, image.version, image.arch, hello_wasm=GUEST_HELLO)
        steps.append(Step(command, expect if "{hello_wasm}" in template else None))
    runtime = shim_runtime(recipe)
    if runtime:
        steps += containerd_steps(runtime, image.name, expect)
    return steps


def plan(images_dir: Path, recipes_dir: Path, expect: str, only: Path | None = None,
         arch: Arch | None = None) -> list[ImageReport]:
    """One report per `*.raw` in `images_dir` (or just `only`; with `arch`, just that arch's),
    with the steps to run. Images whose name, metadata or recipe is unusable fail here, before
    any boot."""
    if not images_dir.is_dir():
        raise PipelineError(f"{images_dir}: images directory not found")
    directory = ImageDir(images_dir)
    paths = [only] if only else directory.image_files()
    if not paths:
        raise PipelineError(f"{images_dir}: no *.raw images to test")
    reports = []
    for path in paths:
        if not path.is_file():
            raise PipelineError(f"{path}: image not found")
        try:
            image = ImageName.parse(path.name)
        except PipelineError as err:
            reports.append(ImageReport(image=path.name, name="", reason=str(err)))
            continue
        if arch is not None and image.arch is not arch:
            continue
        report = ImageReport(path.name, image.name, image.version, image.arch)
        reports.append(report)
        try:
            directory.read_meta(image)  # present metadata must agree with the file name
            recipe = find(recipes_dir, image.name)
        except PipelineError as err:
            report.reason = str(err).splitlines()[0]
            continue
        report.steps = _steps(recipe, image, expect)
        if not report.steps:
            report.reason = f"{recipe.path}: smoke: no commands to prove the image works"
    if not reports:
        raise PipelineError(f"{images_dir}: no {arch} images to test")
    names = [(r.name, r.arch) for r in reports if r.name]
    for report in reports:
        if report.name and names.count((report.name, report.arch)) > 1 and not report.reason:
            report.reason = f"{report.image}: another {report.arch} image in {images_dir} is " \
                            f"also named {report.name!r}; one VM can merge only one of them"
    return reports


def write_plan(reports: list[ImageReport], payload: Path) -> None:
    """The plan as data on the payload disk (see guest.sh)."""
    root = payload / "plan"
    for r in reports:
        if r.reason:
            continue
        (root / r.name / "steps").mkdir(parents=True)
        (root / r.name / "image").write_text(r.image)
        for i, step in enumerate(r.steps):
            (root / r.name / "steps" / str(i)).write_text(step.command)
    (payload / "plan-timeout").write_text(str(COMMAND_TIMEOUT))

"""What one smoke-test boot will check: per image, the recipe's smoke commands (and, for
containerd shims, a Wasm pod through CRI with the recipe's runtime handler), written to the
payload disk as data for `guest.sh`."""

from __future__ import annotations

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
GUEST_CRI = f"{GUEST_MOUNT}/cri.sh"
COMMAND_TIMEOUT = 180  # seconds per smoke command; TCG compiles Wasm slowly


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


def cri_steps(recipe: Recipe, expect: str) -> list[Step]:
    """For a shim recipe: containerd restarted on the merged config, the recipe's handler
    registered with the CRI plugin (Flatcar's runc handler intact), and a pod with that
    handler running the hello module, its greeting read back with `crictl logs`."""
    runtime = recipe.containerd
    if runtime is None:
        return []
    steps = [
        Step(f"sh {GUEST_CRI} up"),
        Step(
            f"sh {GUEST_CRI} handler {runtime.handler} {runtime.runtime_type}",
            expect=f"handler {runtime.handler} registered",
        ),
    ]
    if runtime.pods:
        steps.append(Step(f"sh {GUEST_CRI} pod {runtime.handler} {OCI_REF}", expect=expect))
    return steps


def uses_cri(reports: list[ImageReport]) -> bool:
    return any(s.command.startswith(f"sh {GUEST_CRI} ") for r in reports for s in r.steps)


def _steps(recipe: Recipe, image: ImageName, expect: str) -> list[Step]:
    steps = []
    for template in recipe.smoke:
        command = recipe.expand(template, image.version, image.arch, hello_wasm=GUEST_HELLO)
        steps.append(Step(command, expect if "{hello_wasm}" in template else None))
    return steps + cri_steps(recipe, expect)


def plan(
    images_dir: Path,
    recipes_dir: Path,
    expect: str,
    only: Path | None = None,
    arch: Arch | None = None,
) -> list[ImageReport]:
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
            report.reason = (
                f"{report.image}: another {report.arch} image in {images_dir} is "
                f"also named {report.name!r}; one VM can merge only one of them"
            )
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

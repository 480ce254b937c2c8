"""Step 6: boot one VM per arch with every image of that arch in a directory, merge them, run
each recipe's `smoke` commands, and report per image and per command. Each image boots on
its own arch (x86-64 images in an x86-64 VM, arm64 images in an arm64 VM).

`wasm-sysexts smoke-test DIR` finds each `*.raw`'s recipe by the name in its file name. The
harness (`pipeline.vm.qemu`) hands the guest a payload disk:

  images/<file>.raw   the images, linked as <extension dir>/<name>.raw
  plan/, plan-timeout what to run (smoke/plan.py writes it, smoke/guest.sh reads it)
  hello.wasm          `{hello_wasm}` in smoke commands: a WASI hello world. By default the
                      module assembled by smoke/payloads.py; `--hello-wasm FILE` replaces it,
                      and `--hello-expect TEXT` the output it must print.
  only with containerd shim images (their pods run through CRI, smoke/cri.py):
  support/<name>.raw  crictl, and in the reference VM Flatcar's containerd, as sysexts merged
                      with the images
  hello-oci.tar       an OCI image whose entrypoint is hello.wasm, run in a pod with the
                      recipe's runtime handler (crictl runp/create/start, then crictl logs)
  pause-oci.tar       the pod sandbox image, named as containerd's default
  cri.sh              the guest's CRI steps

A command using `{hello_wasm}` (or the pod) must print the expected text as well as exit 0.
"""

from __future__ import annotations

import importlib.resources
import json
import tempfile
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from pipeline.build.fetch import Fetcher
from pipeline.core import log
from pipeline.core.fs import link_or_copy
from pipeline.core.vocab import Arch, Channel
from pipeline.smoke import cri
from pipeline.smoke.plan import ImageReport, plan, uses_cri, write_plan
from pipeline.smoke.report import Boot, SmokeReport, apply_frames, finish
from pipeline.vm import flatcar, ignition
from pipeline.vm.qemu import BootResult, VMImage, boot
from pipeline.vm.reference import reference_vm

_log = log.get("smoke")


class GuestOS(StrEnum):
    FLATCAR = "flatcar"  # the official Flatcar QEMU image of a channel
    REFERENCE = "reference"  # the Debian trixie reference VM


@dataclass(frozen=True)
class Target:
    """Which VM to boot, and where its images come from."""

    os: GuestOS
    cache_dir: Path
    channel: Channel = Channel.STABLE
    flatcar_version: str = "current"
    mirror: str | None = None
    flatcar_keyring: Path | None = None


def guest_program() -> str:
    return importlib.resources.files("pipeline.smoke").joinpath("guest.sh").read_text("utf-8")


def run(
    images_dir: Path,
    target: Target,
    recipes_dir: Path,
    timeout: float,
    hello: bytes,
    expect: str,
    only: Path | None = None,
    arch: Arch | None = None,
    vm: VMImage | None = None,
) -> SmokeReport:
    """Plan, boot one VM per arch (only `arch` when given) with that arch's images, and report.
    `vm` None: make the VMs `target` names; else boot `vm` for its arch."""
    reports = plan(images_dir, recipes_dir, expect, only, arch)
    for r in reports:
        if r.reason:
            _log.info(f"{r.image}: {r.reason}")
    boots = []
    for boot_arch in sorted({Arch(r.arch) for r in reports if not r.reason}):
        group = [r for r in reports if r.arch == boot_arch]
        machine = vm if vm is not None and vm.arch is boot_arch else None
        boots.append(_boot_arch(images_dir, target, group, boot_arch, timeout, hello, machine))
    if not boots:
        finish(reports, BootResult([], "", False, "nothing to boot", "-", 0.0))
    passed = bool(reports) and all(r.status == "passed" for r in reports)
    return SmokeReport(str(target.os), passed, reports, boots)


def _boot_arch(
    images_dir: Path,
    target: Target,
    reports: list[ImageReport],
    arch: Arch,
    timeout: float,
    hello: bytes,
    vm: VMImage | None,
) -> Boot:
    """One boot with the images of `reports` (all of `arch`); fills in their results."""
    bootable = [r for r in reports if not r.reason]
    with tempfile.TemporaryDirectory(prefix="wsx-smoke-") as tmp:
        payload = Path(tmp) / "payload"
        (payload / "images").mkdir(parents=True)
        for r in bootable:
            link_or_copy(images_dir / r.image, payload / "images" / r.image)
        write_plan(reports, payload)
        (payload / "hello.wasm").write_bytes(hello)
        if uses_cri(bootable):
            flatcar = vm.kind == "flatcar" if vm else target.os is GuestOS.FLATCAR
            fetcher = Fetcher(target.cache_dir, mirror=target.mirror)
            cri.write_payload(payload, arch, hello, cri.support_images(fetcher, arch, flatcar))
        if vm is None:
            vm = _make_vm(target, bootable, arch, Path(tmp))

        def on_frame(frame: dict[str, object]) -> None:
            if frame.get("event") == "image":
                _log.info(f"{frame.get('image')}: merged {'yes' if frame.get('merged') else 'no'}")
            elif frame.get("event") == "step":
                _log.info(
                    f"{frame.get('image')} step {frame.get('index')}: "
                    f"exit {frame.get('exit')} in {frame.get('ms')} ms"
                )

        result = boot(vm, payload, guest_program(), timeout, on_frame=on_frame)
    merge_output, status = apply_frames(reports, result.frames)
    finish(reports, result)
    return Boot(
        str(arch),
        result.accel,
        result.seconds,
        result.timed_out,
        result.stopped_at,
        merge_output,
        status,
        result.first_boot_died,
    )


def _make_vm(target: Target, bootable: list[ImageReport], arch: Arch, work: Path) -> VMImage:
    if target.os is GuestOS.REFERENCE:
        return reference_vm(target.cache_dir, arch)
    base = flatcar.flatcar_vm(
        target.cache_dir,
        target.channel,
        target.flatcar_version,
        target.mirror,
        target.flatcar_keyring,
        arch,
    )
    config = work / "ignition.json"
    config.write_text(
        json.dumps(
            ignition.smoke_config([(r.name, r.image) for r in bootable], base.arch), indent=2
        )
    )
    return replace(base, config=config)

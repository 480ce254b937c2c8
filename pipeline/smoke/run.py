"""Step 6: boot ONE VM with every image of a directory, merge them, run each recipe's `smoke`
commands, and report per image and per command.

`wasm-sysexts smoke-test DIR` finds each `*.raw`'s recipe by the name in its file name. The
harness (`pipeline.vm.qemu`) hands the guest a payload disk:

  images/<file>.raw   the images, linked as <extension dir>/<name>.raw
  plan/, plan-timeout what to run (smoke/plan.py writes it, smoke/guest.sh reads it)
  hello.wasm          `{hello_wasm}` in smoke commands: a WASI hello world. By default the
                      module assembled by smoke/payloads.py; `--hello-wasm FILE` replaces it,
                      and `--hello-expect TEXT` the output it must print.
  hello-oci.tar       only with containerd shim images: an OCI image whose entrypoint is
                      hello.wasm, imported with `ctr image import` and run with
                      `ctr run --runtime io.containerd.<runtime>.<vN>`.

A command using `{hello_wasm}` (or the shim run) must print the expected text as well as exit 0.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from pipeline.core import log
from pipeline.core.vocab import Channel
from pipeline.smoke.payloads import hello_oci_tar
from pipeline.smoke.plan import ImageReport, plan, write_plan
from pipeline.smoke.report import SmokeReport, apply_frames, finish
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


def run(images_dir: Path, target: Target, recipes_dir: Path, timeout: float, hello: bytes,
        expect: str, only: Path | None = None, vm: VMImage | None = None) -> SmokeReport:
    """Plan, boot once, and report. `vm` None: make the VM `target` names."""
    reports = plan(images_dir, recipes_dir, expect, only)
    bootable = [r for r in reports if not r.reason]
    for r in reports:
        if r.reason:
            _log.info(f"{r.image}: {r.reason}")
    if not bootable:
        finish(reports, BootResult([], "", False, "nothing to boot", "-", 0.0))
        return SmokeReport(str(target.os), "-", 0.0, False, "", False, reports)
    with tempfile.TemporaryDirectory(prefix="wsx-smoke-") as tmp:
        payload = Path(tmp) / "payload"
        (payload / "images").mkdir(parents=True)
        for r in bootable:
            _place(images_dir / r.image, payload / "images" / r.image)
        write_plan(reports, payload)
        (payload / "hello.wasm").write_bytes(hello)
        if any(s.command.startswith("ctr image import") for r in bootable for s in r.steps):
            (payload / "hello-oci.tar").write_bytes(hello_oci_tar(hello))
        if vm is None:
            vm = _make_vm(target, bootable, Path(tmp))

        def on_frame(frame: dict[str, object]) -> None:
            if frame.get("event") == "image":
                _log.info(f"{frame.get('image')}: merged "
                          f"{'yes' if frame.get('merged') else 'no'}")
            elif frame.get("event") == "step":
                _log.info(f"{frame.get('image')} step {frame.get('index')}: "
                          f"exit {frame.get('exit')} in {frame.get('ms')} ms")

        result = boot(vm, payload, guest_program(), timeout, on_frame=on_frame)
    merge_output, status = apply_frames(reports, result.frames)
    finish(reports, result)
    passed = all(r.status == "passed" for r in reports)
    return SmokeReport(str(target.os), result.accel, result.seconds, result.timed_out,
                       result.stopped_at, passed, reports, merge_output, status)


def _place(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _make_vm(target: Target, bootable: list[ImageReport], work: Path) -> VMImage:
    if target.os is GuestOS.REFERENCE:
        return reference_vm(target.cache_dir)
    base = flatcar.flatcar_vm(target.cache_dir, target.channel, target.flatcar_version,
                              target.mirror, target.flatcar_keyring)
    config = work / "ignition.json"
    config.write_text(json.dumps(ignition.smoke_config([(r.name, r.image) for r in bootable],
                                                       base.arch), indent=2))
    return replace(base, config=config)




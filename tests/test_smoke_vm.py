"""Boot smoke tests in the Debian reference VM under TCG: ONE boot merges every image (two
real runtimes plus three broken images) and runs their smoke commands; a second boot hangs on
purpose and must be killed at its timeout. Containerd shims are tested through CRI in
test_cri.py."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from support.cache import VM_CACHE
from support.cli import run_cli
from support.gotools import wazero_binary
from support.mirror import Mirror
from support.payloads import HELLO_OUTPUT, wasmtime_binary
from support.vm_payloads import (
    WAZERO_VERSION,
    mislabel_arch,
    qemu_children,
    rename_impostor,
    write_vm_recipes,
)

from pipeline.vm import qemu
from pipeline.vm.reference import reference_vm

pytestmark = [pytest.mark.vm, pytest.mark.debroot]


def host_output(binary: Path, *args: str) -> str:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, check=True).stdout


def build(recipes: Path, mirror: Mirror, out: Path, *args: str) -> None:
    run_cli(
        "build",
        *args,
        "--recipes",
        recipes,
        "--mirror",
        mirror.url,
        "--out",
        out,
        "--cache",
        out.parent / "dl",
        "--quiet",
        check=True,
    )


@pytest.fixture(scope="module")
def smoke(
    tmp_path_factory: pytest.TempPathFactory, recipes: Path, mirror: Mirror, hello_wasm: Path
) -> tuple[int, dict[str, Any], str]:
    work = tmp_path_factory.mktemp("smoke")
    write_vm_recipes(recipes, mirror, work / "c")
    out = work / "out"
    build(recipes, mirror, out, "wasmtime", "wazero", "needslib", "impostor")
    build(recipes, mirror, out, "wrongarch", "--arch", "arm64")
    rename_impostor(out)
    mislabel_arch(out)
    proc = run_cli(
        "smoke-test",
        out,
        "--os",
        "reference",
        "--recipes",
        recipes,
        "--hello-wasm",
        hello_wasm,
        "--cache",
        VM_CACHE,
        "--timeout",
        "600",
        "--json",
    )
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(i["name"]): i for i in report["images"]}


def test_runtimes_merge_and_run_wasm(smoke: tuple[int, dict[str, Any], str]) -> None:
    code, report, stderr = smoke
    assert code == 1, "broken images are in the run, so the command must fail"
    [boot] = report["boots"]  # every image is named x86-64
    assert not boot["timed_out"] and boot["arch"] == "x86-64"
    images = by_name(report)
    for name in ("wasmtime", "wazero"):
        image = images[name]
        assert image["merged"] is True and image["status"] == "passed", (image, stderr)
        assert all(s["status"] == "passed" and s["exit"] == 0 for s in image["steps"])
        hello = [s for s in image["steps"] if "hello.wasm" in s["command"]]
        assert hello and HELLO_OUTPUT in hello[0]["output"]
        assert isinstance(hello[0]["seconds"], float)
        assert name in str(boot["sysext_status"])
    # The version lines are exactly what the same binaries print on the host.
    assert images["wazero"]["steps"][0]["output"] == host_output(wazero_binary(), "version")
    assert host_output(wazero_binary(), "version") == f"v{WAZERO_VERSION}\n"
    assert images["wasmtime"]["steps"][0]["output"] == host_output(wasmtime_binary(), "--version")


def test_broken_images_fail_with_reasons(smoke: tuple[int, dict[str, Any], str]) -> None:
    _, report, _ = smoke
    images = by_name(report)
    misnamed, wrongarch, needslib = images["misnamed"], images["wrongarch"], images["needslib"]
    assert misnamed["merged"] is False and misnamed["status"] == "failed"
    assert (
        "no usr/lib/extension-release.d/extension-release.misnamed in the image"
        in misnamed["reason"]
    ), misnamed["reason"]
    assert wrongarch["merged"] is False and wrongarch["status"] == "failed"
    assert wrongarch["reason"].endswith(
        "Extension 'wrongarch' is for architecture 'arm64', but deployed on top of 'x86-64'."
    ), wrongarch["reason"]
    assert all(s["status"] == "not run" for s in misnamed["steps"] + wrongarch["steps"])
    assert needslib["merged"] is True and needslib["status"] == "failed"
    step = needslib["steps"][0]
    assert step["exit"] == 127 and "libwsxmissing.so" in step["reason"], step


def test_human_report(tmp_path: Path, smoke: tuple[int, dict[str, Any], str]) -> None:
    from pipeline.smoke.plan import ImageReport, Step
    from pipeline.smoke.report import Boot, SmokeReport, render

    _, report, _ = smoke
    images = [
        ImageReport(**{**i, "steps": [Step(**s) for s in i["steps"]]}) for i in report["images"]
    ]
    boots = [Boot(**b) for b in report["boots"]]
    text = render(SmokeReport(**{**report, "images": images, "boots": boots}))
    assert text.startswith("smoke test on reference x86-64 (")
    assert "PASS  wasmtime-" in text and "FAIL  misnamed-1.0-x86-64.raw" in text
    assert "2/5 images passed" in text


def test_hung_guest_is_killed_and_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = reference_vm(VM_CACHE)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # the harness's temp files go here
    payload = tmp_path / "payload"
    payload.mkdir()
    script = 'wsx_frame \'{"event": "about-to-hang"}\'\nsleep 100000\n'
    result = qemu.boot(image, payload, script, timeout=110)  # boot ~40 s, more on a busy host
    assert result.timed_out and not result.finished
    assert [f["event"] for f in result.frames] == ["guest-start", "about-to-hang"]
    assert "about-to-hang" in result.stopped_at
    # systemd's greeting on the serial console: the guest booted its own userspace.
    assert "Welcome to Debian GNU/Linux 13 (trixie)!" in plain(result.console), result.console
    assert qemu_children(os.getpid()) == []
    assert list(temp.iterdir()) == [], "disks, logs and firmware copies are removed"


def plain(console: str) -> str:
    """The console transcript without its terminal colour sequences."""
    return re.sub(r"\x1b\[[0-9;]*m", "", console)


def test_guest_dying_before_its_script_is_booted_once_more(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A guest whose kernel dies before the harness's script starts (here: init exits at
    once, so the kernel panics and QEMU stops) is booted a second time, and only once; the
    result says why the first boot was discarded."""
    image = dataclasses.replace(
        reference_vm(VM_CACHE), append=f"{reference_vm(VM_CACHE).append} init=/bin/false"
    )
    payload = tmp_path / "payload"
    payload.mkdir()
    with caplog.at_level(logging.INFO, logger="wsx"):
        result = qemu.boot(image, payload, 'wsx_frame \'{"event": "never"}\'\n', timeout=300)
    assert not result.started and not result.timed_out
    assert result.first_boot_died.startswith("VM stopped (qemu exit 0)"), result.first_boot_died
    assert result.stopped_at.startswith("VM stopped (qemu exit 0)"), result.stopped_at
    assert "Attempted to kill init!" in result.console, result.console[-2000:]
    retries = [r.getMessage() for r in caplog.records if "booting once more" in r.getMessage()]
    assert retries == [
        f"the guest died before its script started ({result.first_boot_died}); booting once more"
    ]

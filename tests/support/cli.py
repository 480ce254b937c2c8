"""The CLI as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_cli(
    *args: str | Path,
    env: dict[str, str] | None = None,
    check: bool = False,
    timeout: float = 900,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m pipeline ARGS` as a user would (in `cwd`), capturing stdout and stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def run_build(
    name: str,
    recipes: Path,
    mirror_url: str,
    cache: Path,
    out: Path,
    *extra: str | Path,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """`wasm-sysexts build NAME` for x86-64, from `recipes`, through the test mirror."""
    return run_cli(
        "build",
        name,
        "--recipes",
        recipes,
        "--mirror",
        mirror_url,
        "--cache",
        cache,
        "--out",
        out,
        "--arch",
        "x86-64",
        *extra,
        check=check,
    )

#!/usr/bin/env python3
"""Dagger build-all fan-out and caching, measured on a real engine in one run, as users hit it.

    eval "$(../shared/dagger-engine/dagger-engine up)"; python3 benchmarks/dagger_fanout.py

A copy of this repository is the module's source, loaded as its `DefaultPath`/`Ignore`
annotation loads it, and its `sysexts/` holds test recipes (wasmtime, wsxhello; both arches)
pinned to archives a host mirror serves. Each round is one session, as each `dagger call` is:

    round 1 cold            every recipe edited (a fresh comment): every build runs
    round 2 nothing changed expected: no build runs
    round 3 sysexts/wsxhello.yaml edited   expected: exactly wsxhello's two builds
    round 4 pipeline/ edited               expected: every build (the CLI changed)

The rounds run first with the mirror passed as a host service (what `--mirror-service
tcp://...` makes: a new identity in every session), then without one; the second set finds
its downloads in the download cache volume the first filled. A build "executed" when the
`started_on` of its metadata differs from the previous round's: a cached build replays the
metadata of the run that made it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# In place of this script's directory, whose packaging.py would shadow the packaging module.
sys.path[0:1] = [str(ROOT / "tests"), str(ROOT / ".dagger/src")]

from support.daggermod import MIRROR, host_dir, module_instance, run, started  # noqa: E402
from support.mirror import Mirror  # noqa: E402
from support.payloads import (  # noqa: E402
    WASMTIME_VERSION,
    elf_header,
    tar_bytes,
    wasmtime_tarball,
)
from support.recipes import wasmtime_recipe  # noqa: E402
from support.registry_images import write_recipe  # noqa: E402

BASE = f"https://github.com/bytecodealliance/wasmtime/releases/download/v{WASMTIME_VERSION}"


def copy_repository(dest: Path, mirror: Mirror) -> Path:
    """The repository's tracked files at `dest`, its recipes replaced by the test recipes."""
    files = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    for recipe in (dest / "sysexts").glob("*.yaml"):
        recipe.unlink()
    write_recipe(mirror, dest / "sysexts")
    (dest / "sysexts" / "wasmtime.yaml").write_text(wasmtime_recipe(mirror))
    return dest


def edit(path: Path) -> None:
    with path.open("a") as f:
        f.write(f"# edited {time.time_ns()}\n")


def round_(mirror: Mirror, repo: Path, service: bool, out: Path) -> tuple[float, dict[str, str]]:
    async def body() -> None:
        obj = module_instance(mirror if service else None, root=repo)
        built = await obj.build_all(host_dir(repo / "sysexts"), mirror=MIRROR if service else "")
        await built.export(str(out))

    began = time.perf_counter()
    run(body)
    return time.perf_counter() - began, started(out)


def main() -> None:
    if not os.environ.get("_EXPERIMENTAL_DAGGER_RUNNER_HOST"):
        sys.exit('no engine: eval "$(../shared/dagger-engine/dagger-engine up)" first')
    with tempfile.TemporaryDirectory(prefix="wsx-fanout-") as tmp, Mirror(Path(tmp) / "m") as m:
        m.put(f"{BASE}/wasmtime-v{WASMTIME_VERSION}-x86_64-linux.tar.xz", wasmtime_tarball())
        m.put(
            f"{BASE}/wasmtime-v{WASMTIME_VERSION}-aarch64-linux.tar.xz",
            tar_bytes(
                {f"wasmtime-v{WASMTIME_VERSION}-aarch64-linux/wasmtime": (elf_header(), 0o755)}
            ),
        )
        repo = copy_repository(Path(tmp) / "repo", m)
        recipes = sorted((repo / "sysexts").glob("*.yaml"))
        rounds = [
            ("cold", recipes),
            ("nothing changed", []),
            ("sysexts/wsxhello.yaml edited", [repo / "sysexts" / "wsxhello.yaml"]),
            ("pipeline/ edited", [repo / "pipeline" / "__init__.py"]),
        ]
        for service in (True, False):
            previous: dict[str, str] = {}
            for number, (what, changed) in enumerate(rounds, 1):
                for path in changed:
                    edit(path)
                out = Path(tmp) / f"out-{number}-{service}"
                seconds, now = round_(m, repo, service, out)
                executed = sorted(i.removesuffix(".raw") for i in now if previous.get(i) != now[i])
                label = f"{what} with mirror service" if service else what
                print(
                    f"round {number} {label}: build_all {seconds:.1f} s; executed: "
                    f"{', '.join(executed) or 'none'}",
                    flush=True,
                )
                previous = now


if __name__ == "__main__":
    main()

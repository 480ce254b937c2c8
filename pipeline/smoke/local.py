"""`try IMAGE...`: a recipe's smoke commands against its image in seconds, without a VM.

The image's /usr is laid over the /usr of the reference VM's Debian root of the image's arch (a
read-only overlay, as systemd-sysext merges it on a host) in private mount, PID and network
namespaces, and each smoke command runs chrooted there; an image for the other arch runs
through qemu-user (binfmt_misc), which the root's own loader and libc make work for dynamically
linked binaries too. The root is the one `smoke-test --os reference` boots, made once per arch
and cached (the first arm64 one takes minutes). The VM smoke test stays the real gate: here
there is no systemd-sysext merge, no booted kernel, no containerd.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.core import log, run
from pipeline.core.artifacts import ImageName
from pipeline.core.debroot import PRIVATE
from pipeline.core.errors import PipelineError
from pipeline.recipe.load import find
from pipeline.sign.ddi import plain_format
from pipeline.smoke.payloads import HELLO_TEXT, hello_wasm_module
from pipeline.vm.reference import reference_root

HELLO = "/run/wsx/hello.wasm"
TIMEOUT = 120.0  # seconds per command: a local check, not a benchmark
_log = log.get("try")

# In the namespaces: the image's trees over the root's, /proc and /dev, then the command.
_SCRIPT = """\
set -e
r="$1"; t="$2"; hello="$3"; shift 3
mount -t overlay overlay -o "lowerdir=$t/usr:$r/usr" "$r/usr"
if [ -d "$t/opt" ]; then mount --bind "$t/opt" "$r/opt"; fi
mount -t tmpfs tmpfs "$r/run"
mkdir -p "$r/run/wsx"
cp "$hello" "$r{hello}"
mount -t proc proc "$r/proc"
mount --rbind /dev "$r/dev"
exec chroot "$r" /bin/sh -c "$1"
""".replace("{hello}", HELLO)


@dataclass(frozen=True)
class Tried:
    command: str
    passed: bool
    output: str  # the last lines of what it printed, or why it failed


def try_image(image: Path, recipes_dir: Path, cache_dir: Path) -> list[Tried]:
    """Run `image`'s recipe's smoke commands against it; one result per command."""
    name = ImageName.parse(image.name)
    recipe = find(recipes_dir, name.name)
    if not recipe.smoke:
        raise PipelineError(f"{recipe.path}: smoke: no commands to try")
    fmt, _ = plain_format(image)
    root = reference_root(cache_dir, name.arch)
    results = []
    with tempfile.TemporaryDirectory(prefix="wsx-try-") as scratch:
        work = Path(scratch)
        tree = work / "tree"
        if fmt == "squashfs":
            run.run(["unsquashfs", "-q", "-n", "-d", tree, image], what=f"unsquashfs {image}")
        else:
            run.run(["fsck.erofs", f"--extract={tree}", image], what=f"fsck.erofs {image}")
        hello = work / "hello.wasm"
        hello.write_bytes(hello_wasm_module())
        for template in recipe.smoke:
            command = recipe.expand(template, name.version, name.arch, hello_wasm=HELLO)
            _log.info(f"{image.name}: {command}")
            proc = run.run(
                [
                    *PRIVATE,
                    "--net",
                    "--",
                    "sh",
                    "-c",
                    _SCRIPT,
                    "try",
                    root,
                    tree,
                    hello,
                    command,
                ],
                what=command,
                check=False,
                timeout=TIMEOUT,
            )
            output = (proc.stdout + proc.stderr).decode(errors="replace")
            passed = proc.returncode == 0 and (
                "{hello_wasm}" not in template or HELLO_TEXT in output
            )
            lines = output.strip().splitlines() or [f"exit status {proc.returncode}"]
            results.append(Tried(command, passed, "\n".join(lines[-3:])))
    return results

"""Debian root filesystems made with mmdebstrap, cached by a hash of everything that shapes them.

Two steps need a newer userland than a builder host may have: signed DDIs need systemd-repart
>= 255 (Debian trixie has 257), and the smoke test boots a trixie reference VM. Both ask here
for a root with the packages they need; the second ask with the same inputs is free.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.log import Reporter
from pipeline.sums import locked

DEFAULT_MIRROR = "http://deb.debian.org/debian"
MIRROR_ENV = "WASM_SYSEXTS_DEBIAN_MIRROR"


def debian_mirror() -> str:
    return os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR


def root_key(suite: str, packages: Sequence[str], variant: str, mirror: str,
             hooks: Sequence[str]) -> str:
    material = {"suite": suite, "packages": sorted(packages), "variant": variant,
                "mirror": mirror, "hooks": list(hooks)}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]


def debian_root(cache_dir: Path, suite: str, packages: Sequence[str], reporter: Reporter,
                variant: str = "minbase", hooks: Sequence[str] = ()) -> Path:
    """A cached root directory of Debian `suite` with `packages` installed.

    `hooks` are mmdebstrap --customize-hook commands (`$1` is the root), part of the cache key.
    """
    tool = shutil.which("mmdebstrap")
    if tool is None:
        raise PipelineError("mmdebstrap: not found on PATH (install the Debian package mmdebstrap)")
    mirror = debian_mirror()
    key = root_key(suite, packages, variant, mirror, hooks)
    roots = cache_dir / "roots"
    final = roots / f"{suite}-{key}"
    with locked(roots):
        if final.is_dir():
            return final
        tmp = roots / f".tmp-{suite}-{key}"
        shutil.rmtree(tmp, ignore_errors=True)
        reporter.info("debian", f"creating {suite} root with {', '.join(sorted(packages))}")
        args = [tool, f"--variant={variant}", "--mode=root", "--format=directory",
                f"--include={','.join(sorted(packages))}"]
        args += [f"--customize-hook={hook}" for hook in hooks]
        args += [suite, str(tmp), mirror]
        proc = subprocess.run(args, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            reason = next((ln for ln in reversed(lines) if ln.startswith("E:")),
                          lines[-1] if lines else f"exit {proc.returncode}")
            raise PipelineError(f"mmdebstrap {suite} from {mirror}: {reason}")
        tmp.rename(final)
        return final


def run_in_root(root: Path, args: Sequence[str], binds: dict[Path, str] | None = None,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `args` chrooted into `root` with /proc, /sys, /dev and `binds` (host -> root path)
    mounted in a private mount namespace, so every mount disappears when the command ends."""
    if shutil.which("unshare") is None:
        raise PipelineError("unshare: not found on PATH (install the Debian package util-linux)")
    script = ['set -e', 'r="$1"; shift',
              'mount -t proc proc "$r/proc"', 'mount --rbind /sys "$r/sys"',
              'mount --rbind /dev "$r/dev"']
    bind_args: list[str] = []
    for i, (host, inside) in enumerate((binds or {}).items()):
        script += [f'mkdir -p "$r{inside}"', f'mount --bind "${{B{i}}}" "$r{inside}"']
        bind_args.append(f"B{i}={host}")
    script.append('exec chroot "$r" "$@"')
    command = ["env", *bind_args, "unshare", "--mount", "--propagation", "private", "--",
               "sh", "-c", "\n".join(script), "sh", str(root), *args]
    return subprocess.run(command, capture_output=True, text=True, check=False,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **(env or {})})

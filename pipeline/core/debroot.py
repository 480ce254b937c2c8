"""Debian root filesystems made with mmdebstrap, cached by a hash of everything that shapes them.

Two steps need a newer userland than a builder host may have: signed DDIs need systemd-repart
>= 257 (Debian trixie has it), and the smoke test boots trixie reference VMs. Both ask here for
a root with the packages they need; the second ask with the same inputs is free.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from pipeline.core import log, run
from pipeline.core.fs import locked, scratch_dir, sweep

DEFAULT_MIRROR = "http://deb.debian.org/debian"
MIRROR_ENV = "WASM_SYSEXTS_DEBIAN_MIRROR"
_log = log.get("debian")


def debian_mirror() -> str:
    return os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR


def root_key(
    suite: str, packages: Sequence[str], variant: str, mirror: str, hooks: Sequence[str], arch: str
) -> str:
    material = {
        "suite": suite,
        "packages": sorted(packages),
        "variant": variant,
        "mirror": mirror,
        "hooks": list(hooks),
        "arch": arch,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:24]


def _mmdebstrap_why(stderr: bytes, code: int) -> str:
    lines = stderr.decode("utf-8", "replace").splitlines()
    return next((ln for ln in reversed(lines) if ln.startswith("E:")), run.reason(stderr, code))


def debian_root(
    cache_dir: Path,
    suite: str,
    packages: Sequence[str],
    variant: str = "minbase",
    hooks: Sequence[str] = (),
    arch: str = "amd64",
) -> Path:
    """A cached root directory of Debian `suite` for dpkg arch `arch` with `packages`.

    `hooks` are mmdebstrap --customize-hook commands (`$1` is the root), part of the cache key.
    A foreign `arch` runs its maintainer scripts through qemu-user (binfmt_misc)."""
    mirror = debian_mirror()
    key = root_key(suite, packages, variant, mirror, hooks, arch)
    roots = cache_dir / "roots"
    name = f"{suite}-{key}" if arch == "amd64" else f"{suite}-{arch}-{key}"
    final = roots / name
    with locked(roots):
        if final.is_dir():
            return final
    sweep(roots)
    with scratch_dir(roots, name) as tmp:
        _log.info(f"creating {suite} {arch} root with {', '.join(sorted(packages))}")
        target = tmp / "root"
        # root mode mounts /proc, /sys and /dev into the target: a private mount namespace
        # makes them vanish with mmdebstrap even when it is killed.
        args = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            run.find("mmdebstrap"),
            f"--variant={variant}",
            "--mode=root",
            "--format=directory",
            f"--architectures={arch}",
            f"--include={','.join(sorted(packages))}",
        ]
        args += [f"--customize-hook={hook}" for hook in hooks]
        args += [suite, str(target), mirror]
        run.run(args, what=f"mmdebstrap {suite} {arch} from {mirror}", why=_mmdebstrap_why)
        with locked(roots):
            if not final.is_dir():  # another process may have made it meanwhile
                target.rename(final)
    return final


# Private mount and PID namespaces: every mount goes, and every process dies, with the command.
PRIVATE = ("unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child")


def run_in_root(
    root: Path,
    args: Sequence[str],
    binds: dict[Path, str] | None = None,
    env: dict[str, str] | None = None,
    what: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run `args` chrooted into `root` with /proc, /sys, /dev and `binds` (host -> root path)
    mounted in a private mount namespace, so every mount disappears when the command ends."""
    script = [
        "set -e",
        'r="$1"; shift',
        'mount -t proc proc "$r/proc"',
        'mount --rbind /sys "$r/sys"',
        'mount --rbind /dev "$r/dev"',
    ]
    bind_args: list[str] = []
    for i, (host, inside) in enumerate((binds or {}).items()):
        script += [f'mkdir -p "$r{inside}"', f'mount --bind "${{B{i}}}" "$r{inside}"']
        bind_args.append(f"B{i}={host}")
    script.append('exec chroot "$r" "$@"')
    # A private PID namespace too, whose init unshare kills when it dies itself (it dies with
    # the CLI, like every tool): the kernel then kills everything in the namespace, so the
    # mkfs that systemd-repart started cannot outlive a killed CLI.
    command = [
        *PRIVATE,
        "--",
        "env",
        *bind_args,
        "sh",
        "-c",
        "\n".join(script),
        "sh",
        str(root),
        *args,
    ]
    return run.run(
        command,
        what=what or Path(args[0]).name,
        check=check,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **(env or {})},
    )

"""The reference VM: Debian trixie (systemd 257, like Flatcar stable) with a read-only root file
system like an immutable host, built with mmdebstrap and cached by a hash of its inputs, for
x86-64 and arm64 (a foreign arch's root is made through qemu-user)."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from pathlib import Path

from pipeline.core import debroot, log
from pipeline.core.errors import PipelineError
from pipeline.core.fs import locked, scratch_dir, sweep
from pipeline.core.vocab import Arch
from pipeline.vm.qemu import GUEST_UNIT_NAME, MACHINES, VMImage, guest_file, mkfs_ext4, mkfs_version

SUITE = "trixie"
# What Flatcar's base image has and our steps use: runc (Flatcar's containerd sysext uses the
# base image's), libcryptsetup (verity-signed DDIs), systemd-pull and gpg (systemd-sysupdate
# with Verify=yes). containerd itself comes as a sysext, as on Flatcar (smoke/cri.py).
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "udev",
    "kmod",
    "initramfs-tools",
    "runc",
    "libcryptsetup12",
    "systemd-container",
    "gnupg",
)
KERNELS = {Arch.X86_64: "linux-image-amd64", Arch.ARM64: "linux-image-arm64"}
_log = log.get("vm")


def packages(arch: Arch) -> tuple[str, ...]:
    return (*PACKAGES, KERNELS[arch])


def write_hook(path: str, text: str, mode: str = "0644") -> str:
    """An mmdebstrap customize hook writing `text` to `path` in the root ($1)."""
    encoded = base64.b64encode(text.encode()).decode()
    return (
        f'mkdir -p "$1{os.path.dirname(path)}" && echo {encoded} | base64 -d > "$1{path}"'
        f' && chmod {mode} "$1{path}"'
    )


def hooks(arch: Arch) -> list[str]:
    wants = "/etc/systemd/system/multi-user.target.wants"
    masks = [f'ln -sf /dev/null "$1/etc/systemd/system/{unit}"' for unit in MACHINES[arch].gettys]
    return [
        write_hook("/etc/wsx/boot.sh", guest_file("boot.sh"), "0755"),
        write_hook(f"/etc/systemd/system/{GUEST_UNIT_NAME}", guest_file(GUEST_UNIT_NAME)),
        write_hook("/etc/systemd/network/50-wsx.network", guest_file("50-wsx.network")),
        f'mkdir -p "$1{wants}" && ln -sf /etc/systemd/system/{GUEST_UNIT_NAME} '
        f'"$1{wants}/{GUEST_UNIT_NAME}"',
        # A getty would hang up the console or the frame channel under the guest unit.
        *masks,
        # The root is read-only; containerd's state lives where Flatcar's /var would be, and
        # the CRI plugin watches /etc/cni/net.d, which it cannot create here.
        'mkdir -p "$1/var/lib/containerd" "$1/etc/cni/net.d" "$1/opt/cni/bin"',
        'echo "tmpfs /var/lib/containerd tmpfs mode=0711 0 0" >> "$1/etc/fstab"',
        'echo wsx-reference > "$1/etc/hostname"',
        # What a pod sandbox copies from the host (containerd's CRI needs both to exist).
        'printf "127.0.0.1 localhost wsx-reference\\n::1 localhost\\n" > "$1/etc/hosts"',
        'rm -f "$1/etc/resolv.conf" && echo "nameserver 10.0.2.3" > "$1/etc/resolv.conf"',
    ]


def reference_root(cache_dir: Path, arch: Arch) -> Path:
    """The reference VM's Debian root for `arch`, made once under `cache_dir/roots/` (also what
    `try` runs images against)."""
    return debroot.debian_root(
        cache_dir,
        SUITE,
        packages(arch),
        variant="minbase",
        hooks=hooks(arch),
        arch=arch.facts.debian,
    )


def reference_vm(cache_dir: Path, arch: Arch = Arch.X86_64) -> VMImage:
    """The `arch` reference VM: a read-only ext4 root disk plus its kernel and initrd, built
    once per input hash under `cache_dir/vm/` (the root itself under `cache_dir/roots/`)."""
    root = reference_root(cache_dir, arch)
    key = hashlib.sha256(f"{root.name}\n{mkfs_version()}".encode()).hexdigest()[:24]
    base = cache_dir / "vm"
    final = base / f"reference-{arch}-{key}"
    base.mkdir(parents=True, exist_ok=True)
    with locked(base):
        ready = (final / "disk.img").is_file()
    if not ready:
        sweep(base)
        with scratch_dir(base, final.name) as work:
            _log.info(f"making the {arch} reference VM disk from {root}")
            made = work / "vm"
            made.mkdir()
            for name in ("vmlinuz", "initrd.img"):
                source = root / name
                if not source.exists():
                    raise PipelineError(
                        f"{source}: missing in the reference root (is {KERNELS[arch]} installed?)"
                    )
                shutil.copyfile(source, made / name)
            mkfs_ext4(root, made / "disk.img", "wsxroot", headroom=256 << 20)
            with locked(base):
                if not (final / "disk.img").is_file():
                    shutil.rmtree(final, ignore_errors=True)
                    made.rename(final)
    console = MACHINES[arch].console
    return VMImage(
        kind="reference",
        arch=arch,
        disk=final / "disk.img",
        disk_format="raw",
        kernel=final / "vmlinuz",
        initrd=final / "initrd.img",
        append=f"console={console} root=/dev/vda ro panic=-1 loglevel=4",
    )

"""Boot a QEMU VM that runs one guest script and streams framed results back: the harness
under the smoke test (and any other step that needs to prove something inside a real OS).

- `boot(vm, payload_dir, guest_script, timeout, net_forward=None) -> BootResult` boots `vm`
  with the files of `payload_dir` on a second virtio disk, runs `guest_script` in the guest as
  root, powers off, and returns the frames the script emitted. VMs come from
  `pipeline.vm.reference` (Debian trixie, both arches) and `pipeline.vm.flatcar`.

The guest side (files in `pipeline/vm/guest/`). Every VM kind carries `wsx-guest.service`,
which waits for the disk labelled `WSXPAYLOAD`, mounts it read-only at `/run/wsx` and runs
`/run/wsx/guest.sh` (`prelude.sh` plus `guest_script`, POSIX sh) then `systemctl poweroff
-ff`, whatever happened. The prelude defines for the script:

- `$WSX_DIR`: the mount point of the payload disk (`/run/wsx`), holding `payload_dir`'s files.
- `wsx_frame JSON`: report one JSON object to the host (one line, no raw newlines in it).
- `wsx_b64 FILE [BYTES]`: the last BYTES (default 4000) of FILE, base64 on one line. Put such
  values under keys ending in `_b64`: the host decodes them into the key without the suffix.
- `wsx_ms`: milliseconds since the epoch, for timing.
- `wsx_net_up`: start the network (only with `net_forward`); the host is then reachable at
  `http://10.0.2.100:GUEST_PORT`.

Frames travel on a channel of their own (x86-64: the second serial port, guest `/dev/ttyS1`;
arm64: a virtio console, `/dev/hvc0`), so kernel and boot messages on the console (returned as
`BootResult.console`) never interleave with them, and each line carries a per-run random
nonce, so nothing but the script can forge one. The harness adds `{"event": "guest-start"}`
before and `{"event": "guest-end", "exit": N}` after the script.

Host side: KVM is probed by running a tiny real-mode guest (host arch only); otherwise the VM
runs under TCG (`-accel tcg -cpu max`), said in one log line. KVM that passes the probe but
fails on the real guest ("KVM internal error", seen with nested virtualization) is noticed in
QEMU's stderr, and the VM is booted again under TCG. The VM is killed at the
wall-clock `timeout`; its temp files and disks are removed on every exit path, and QEMU dies
with the CLI (the tool runner's parent-death signal).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import importlib.resources
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from pipeline.core import log, run
from pipeline.core.errors import PipelineError
from pipeline.core.vocab import Arch

PAYLOAD_LABEL = "WSXPAYLOAD"
GUEST_MOUNT = "/run/wsx"
FRAME_TAG = "@@WSX"
GUEST_UNIT_NAME = "wsx-guest.service"
_log = log.get("vm")


def guest_file(name: str) -> str:
    """A file of the guest side (pipeline/vm/guest/), as text."""
    return importlib.resources.files("pipeline.vm").joinpath("guest", name).read_text("utf-8")


@dataclass(frozen=True)
class _Machine:
    qemu: str
    args: tuple[str, ...]  # machine, and how the frame channel is attached (@FRAMES@)
    console: str  # the guest's console device for `console=`
    frames: str  # the guest device the prelude writes frames to
    gettys: tuple[str, ...]  # getty units that would hang up the console or the frame channel


MACHINES = {
    Arch.X86_64: _Machine(
        "qemu-system-x86_64",
        ("-machine", "q35", "-serial", "@CONSOLE@", "-serial", "@FRAMES@"),
        "ttyS0",
        "/dev/ttyS1",
        ("serial-getty@ttyS0.service", "serial-getty@ttyS1.service"),
    ),
    Arch.ARM64: _Machine(
        "qemu-system-aarch64",
        (
            "-machine",
            "virt",
            "-serial",
            "@CONSOLE@",
            "-device",
            "virtio-serial-pci",
            "-chardev",
            "@FRAMES@",
            "-device",
            "virtconsole,chardev=frames",
        ),
        "ttyAMA0",
        "/dev/hvc0",
        ("serial-getty@ttyAMA0.service", "serial-getty@hvc0.service"),
    ),
}


@dataclass(frozen=True)
class VMImage:
    """What to boot. Reference VMs boot `kernel`/`initrd` directly with `append`; Flatcar VMs
    boot `disk` through UEFI `firmware` (code, vars template) and read Ignition `config`."""

    kind: str  # "reference" | "flatcar"
    disk: Path
    disk_format: str  # "raw" | "qcow2"
    arch: Arch = Arch.X86_64
    kernel: Path | None = None
    initrd: Path | None = None
    append: str = ""
    firmware: tuple[Path, Path] | None = None
    config: Path | None = None  # Ignition config, passed via fw_cfg
    memory_mb: int = 1024


@dataclass
class BootResult:
    """Frames in arrival order; `console` is the serial console transcript;
    `stopped_at` says where a run that did not finish got to (empty when it finished)."""

    frames: list[dict[str, object]]
    console: str
    timed_out: bool
    stopped_at: str
    accel: str
    seconds: float
    # Why the first boot was discarded (the guest died before its script started), if it was.
    first_boot_died: str = ""

    @property
    def started(self) -> bool:
        """Whether the guest script started (the harness's first frame arrived)."""
        return any(f.get("event") == "guest-start" for f in self.frames)

    @property
    def finished(self) -> bool:
        return any(f.get("event") == "guest-end" for f in self.frames)


# ---------------------------------------------------------------- acceleration

# A 64 KiB BIOS whose reset vector writes 0x31 to QEMU's isa-debug-exit port: QEMU then exits
# with status (0x31 << 1) | 1 = 99. Any other outcome means the accelerator cannot run guests.
_PROBE_EXIT = 99


def _probe_bios() -> bytes:
    bios = bytearray(b"\xf4" * 65536)  # hlt everywhere
    bios[0xFFF0:0xFFF5] = b"\xb0\x31\xe6\xf4\xf4"  # mov al,0x31; out 0xf4,al; hlt
    return bytes(bios)


@functools.cache
def accelerator(arch: Arch = Arch.X86_64) -> tuple[str, str]:
    """("kvm", why) if QEMU can run an `arch` guest under KVM here, else ("tcg", why)."""
    if arch is not Arch.host():
        return "tcg", f"{arch} guest on a {Arch.host()} host"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "/dev/kvm is missing or not accessible"
    if arch is not Arch.X86_64:
        return "kvm", "/dev/kvm is usable"  # the probe guest is x86 real-mode code
    with tempfile.TemporaryDirectory(prefix="wsx-kvm-probe-") as tmp:
        bios = Path(tmp) / "probe.bin"
        bios.write_bytes(_probe_bios())
        try:
            proc = run.run(
                [
                    MACHINES[arch].qemu,
                    "-accel",
                    "kvm",
                    "-machine",
                    "pc",
                    "-cpu",
                    "host",
                    "-m",
                    "16",
                    "-display",
                    "none",
                    "-nodefaults",
                    "-no-reboot",
                    "-monitor",
                    "none",
                    "-bios",
                    str(bios),
                    "-device",
                    "isa-debug-exit,iobase=0xf4,iosize=0x01",
                ],
                timeout=20,
                check=False,
            )
        except PipelineError:
            return "tcg", "a KVM probe guest did not finish within 20 s"
    if proc.returncode != _PROBE_EXIT:
        lines = [
            ln for ln in proc.stderr.decode(errors="replace").splitlines() if "warning" not in ln
        ] or ["no output"]
        return "tcg", f"QEMU with KVM failed a probe guest (exit {proc.returncode}: {lines[-1]})"
    return "kvm", "KVM runs a probe guest"


# ---------------------------------------------------------------- disks


def _tree_size(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def mkfs_ext4(source: Path, image: Path, label: str, headroom: int) -> None:
    """An ext4 image holding a copy of `source` (mkfs.ext4 -d), sized to fit with `headroom`."""
    size = (_tree_size(source) * 5 // 4 + headroom) // (1 << 20) + 1
    run.run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            label,
            "-E",
            "root_owner=0:0",
            "-d",
            str(source),
            str(image),
            f"{size}M",
        ],
        what=f"mkfs.ext4 -d {source} {image}",
    )


def mkfs_version() -> str:
    return run.version("mkfs.ext4", "-V")


# ---------------------------------------------------------------- frames


def parse_frames(text: str, nonce: str) -> list[dict[str, object]]:
    """The JSON frames carrying `nonce` in serial output; other lines are ignored."""
    prefix = f"{FRAME_TAG} {nonce} "
    frames = []
    for line in text.splitlines():
        start = line.find(prefix)
        if start < 0:
            continue
        try:
            frame = json.loads(line[start + len(prefix) :].strip())
        except ValueError:
            continue
        if isinstance(frame, dict):
            frames.append(_decode(frame))
    return frames


def _decode(frame: dict[str, object]) -> dict[str, object]:
    out = dict(frame)
    for key, value in frame.items():
        if key.endswith("_b64") and isinstance(value, str):
            out[key[:-4]] = base64.b64decode(value).decode("utf-8", "replace")
            del out[key]
    return out


def describe(frame: dict[str, object] | None) -> str:
    if frame is None:
        return "before the guest script started (no frame received)"
    return "after frame " + json.dumps(
        {k: v for k, v in frame.items() if not isinstance(v, str) or len(v) < 80}
    )


# ---------------------------------------------------------------- boot


def boot(
    vm: VMImage,
    payload_dir: Path,
    guest_script: str,
    timeout: float,
    net_forward: tuple[int, str] | None = None,
    on_frame: Callable[[dict[str, object]], None] | None = None,
) -> BootResult:
    """Boot `vm`, run `guest_script` with `payload_dir` on the payload disk, power off.

    `net_forward=(guest_port, command)` gives the guest a restricted user-mode network in
    which each connection to `10.0.2.100:guest_port` is handed to a new `command` (a shell
    command line joining its stdin/stdout to a service); without it the VM has no network.
    `on_frame` sees each frame as it arrives. Raises PipelineError only when the VM cannot be
    started; a guest that hangs or dies is reported in the result (`timed_out`, `stopped_at`).
    """
    if not payload_dir.is_dir():
        raise PipelineError(f"{payload_dir}: payload directory not found")
    accel, why = accelerator(vm.arch)
    if vm.arch in _KVM_FAILED:
        accel, why = "tcg", _KVM_FAILED[vm.arch]
    _log.info(
        f"accelerator: {accel} ({why})"
        if accel == "kvm"
        else f"accelerator: TCG, software emulation, slow ({why})"
    )
    result = _boot(vm, payload_dir, guest_script, timeout, net_forward, on_frame, accel)
    if result is None:
        # KVM can pass the probe yet fail on the real guest (nested virtualization that cannot
        # emulate some instructions): QEMU then hangs after "KVM internal error".
        _KVM_FAILED[vm.arch] = "KVM could not run the guest (KVM internal error)"
        _log.info(f"{_KVM_FAILED[vm.arch]}; booting again under TCG, software emulation, slow")
        result = _boot(vm, payload_dir, guest_script, timeout, net_forward, on_frame, "tcg")
    assert result is not None
    if not result.started:
        # The guest died before the script began (under TCG a guest kernel has oopsed early
        # now and then): nothing of the script ran, so one more boot is an honest retry.
        # A guest that dies again, or at any point once its script started, is reported.
        died = result.stopped_at or "no frame received"
        _log.info(f"the guest died before its script started ({died}); booting once more")
        again = _boot(vm, payload_dir, guest_script, timeout, net_forward, on_frame, result.accel)
        if again is not None:  # None: KVM failed this time; the first result stands
            result = dataclasses.replace(again, first_boot_died=died)
    return result


_KVM_FAILED: dict[Arch, str] = {}  # arches whose guests KVM failed to run in this process


def _boot(
    vm: VMImage,
    payload_dir: Path,
    guest_script: str,
    timeout: float,
    net_forward: tuple[int, str] | None,
    on_frame: Callable[[dict[str, object]], None] | None,
    accel: str,
) -> BootResult | None:
    """One boot under `accel`; None if KVM failed to run the guest."""
    machine = MACHINES[vm.arch]
    nonce = secrets.token_hex(12)
    tmp = Path(tempfile.mkdtemp(prefix="wsx-vm-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        payload = _payload_disk(payload_dir, guest_script, nonce, machine.frames, tmp)
        console_log, frames_log = tmp / "console.log", tmp / "frames.log"
        frames_dev = (
            f"file,id=frames,path={frames_log}" if vm.arch is Arch.ARM64 else f"file:{frames_log}"
        )
        cpu = (
            ["-accel", "kvm", "-cpu", "host"]
            if accel == "kvm"
            else ["-accel", "tcg", "-cpu", "max"]
        )
        args = [
            machine.qemu,
            "-name",
            f"wsx-{vm.kind}",
            "-m",
            str(vm.memory_mb),
            "-smp",
            "2",
            *cpu,
            "-display",
            "none",
            "-nodefaults",
            "-no-reboot",
            "-monitor",
            "none",
            *(
                a.replace("@CONSOLE@", f"file:{console_log}").replace("@FRAMES@", frames_dev)
                for a in machine.args
            ),
            "-object",
            "rng-random,filename=/dev/urandom,id=rng0",
            "-device",
            "virtio-rng-pci,rng=rng0",
        ]
        args += _boot_args(vm, tmp)
        args += [
            "-drive",
            f"file={payload},format=raw,if=none,id=payload,readonly=on",
            "-device",
            "virtio-blk-pci,drive=payload",
        ]
        if net_forward:
            guest_port, command = net_forward
            args += [
                "-netdev",
                f"user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:{guest_port}-cmd:{command}",
                "-device",
                "virtio-net-pci,netdev=n0",
            ]
        else:
            args += ["-nic", "none"]
        started = time.monotonic()
        qemu_err = tmp / "qemu.stderr"
        with open(qemu_err, "wb") as err_file:
            proc = run.spawn(args, stdout=subprocess.DEVNULL, stderr=err_file)
            _log.info(f"booted {vm.kind} {vm.arch} VM (pid {proc.pid}, timeout {timeout:.0f}s)")
            state = _wait(proc, frames_log, qemu_err, nonce, started + timeout, on_frame)
        seconds = round(time.monotonic() - started, 1)
        _kill(proc)
        if state is _Wait.KVM_FAILED:
            return None
        frames = parse_frames(_read(frames_log), nonce)
        end = next((f for f in frames if f.get("event") == "guest-end"), None)
        stopped_at = "" if end else describe(frames[-1] if frames else None)
        if state is _Wait.TIMED_OUT:
            _log.info(f"timed out after {timeout:.0f}s, VM killed, {stopped_at}")
        elif end is None:
            err = _read(qemu_err).strip().splitlines()
            detail = f"; qemu: {err[-1]}" if err and proc.returncode else ""
            stopped_at = f"VM stopped (qemu exit {proc.returncode}) {stopped_at}{detail}"
            _log.info(stopped_at)
        else:
            _log.info(f"guest script finished in {seconds}s")
        return BootResult(
            frames=frames,
            console=_read(console_log),
            timed_out=state is _Wait.TIMED_OUT,
            stopped_at=stopped_at,
            accel=accel,
            seconds=seconds,
        )
    finally:
        if proc is not None:
            _kill(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def _boot_args(vm: VMImage, tmp: Path) -> list[str]:
    if not vm.disk.is_file():
        raise PipelineError(f"{vm.disk}: VM disk not found")
    # snapshot=on: the cached disk is never written; QEMU keeps changes in an unlinked file.
    root = [
        "-drive",
        f"file={vm.disk},format={vm.disk_format},if=none,id=root,snapshot=on",
        "-device",
        "virtio-blk-pci,drive=root,bootindex=1",
    ]
    if vm.kernel is not None:
        args = ["-kernel", str(vm.kernel), "-append", vm.append]
        return args + (["-initrd", str(vm.initrd)] if vm.initrd else []) + root
    if vm.firmware is None:
        raise PipelineError(f"{vm.disk}: VM has neither a kernel nor UEFI firmware to boot")
    code, vars_template = vm.firmware
    vars_copy = tmp / "efi_vars"
    shutil.copyfile(vars_template, vars_copy)
    fmt = "qcow2" if code.suffix == ".qcow2" else "raw"
    vfmt = "qcow2" if vars_template.suffix == ".qcow2" else "raw"
    args = [
        "-drive",
        f"if=pflash,unit=0,file={code},format={fmt},readonly=on",
        "-drive",
        f"if=pflash,unit=1,file={vars_copy},format={vfmt}",
    ]
    if vm.arch is Arch.X86_64:
        args += ["-machine", "smm=on", "-global", "ICH9-LPC.disable_s3=1"]
    if vm.config is not None:
        args += ["-fw_cfg", f"name=opt/org.flatcar-linux/config,file={vm.config}"]
    if vm.append:
        args += ["-append", vm.append]
    return args + root


def prelude(nonce: str, frames_device: str, script: str) -> str:
    return (
        guest_file("prelude.sh")
        .replace("@NONCE@", nonce)
        .replace("@FRAMES@", frames_device)
        .replace("@SCRIPT@", script.rstrip("\n"))
    )


def _payload_disk(
    payload_dir: Path, guest_script: str, nonce: str, frames_device: str, tmp: Path
) -> Path:
    staging = tmp / "payload"
    try:
        shutil.copytree(payload_dir, staging, symlinks=False, copy_function=os.link)
    except (OSError, shutil.Error):
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(payload_dir, staging, symlinks=False)
    if (staging / "guest.sh").exists():
        raise PipelineError(f"{payload_dir}/guest.sh: name reserved for the harness's script")
    (staging / "guest.sh").write_text(prelude(nonce, frames_device, guest_script))
    image = tmp / "payload.img"
    mkfs_ext4(staging, image, PAYLOAD_LABEL, headroom=16 << 20)
    shutil.rmtree(staging)
    return image


class _Wait(Enum):
    EXITED = "exited"
    TIMED_OUT = "timed out"
    KVM_FAILED = "KVM failed"


def _wait(
    proc: subprocess.Popen[bytes],
    frames_log: Path,
    qemu_err: Path,
    nonce: str,
    deadline: float,
    on_frame: Callable[[dict[str, object]], None] | None,
) -> _Wait:
    """Wait for QEMU to exit, reporting frames as they arrive."""
    seen = 0
    while True:
        try:
            proc.wait(timeout=0.3)
            exited = True
        except subprocess.TimeoutExpired:
            exited = False
        frames = parse_frames(_read(frames_log), nonce)
        for frame in frames[seen:]:
            if on_frame is not None:
                on_frame(frame)
            event = frame.get("event")
            if event in ("guest-start", "guest-end"):
                _log.info(
                    f"{event}" + (f" exit {frame.get('exit')}" if event == "guest-end" else "")
                )
        seen = len(frames)
        if exited:
            return _Wait.EXITED
        if not frames and "KVM internal error" in _read(qemu_err):
            return _Wait.KVM_FAILED
        if time.monotonic() >= deadline:
            return _Wait.TIMED_OUT


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill QEMU and reap it (its guestfwd helpers exit when their connections close)."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace").replace("\r", "")
    except FileNotFoundError:
        return ""

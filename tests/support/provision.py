"""Provision a reference VM disk the way Flatcar's initramfs does: Ignition's `fetch` and `files`
stages (`ignition --root=/sysroot --platform=... --stage=files`, bootengine's
ignition-files.service) applied to the reference root, then the first boot.

`provision()` runs this file as a script in new mount and network namespaces (as root):

    python3 provision.py ROOT CONFIG TREE DISK LOG

- the reference ROOT (read-only, cached) becomes the lower layer of an overlay, so Ignition
  writes only into a private upper layer;
- the network has only `lo`, carrying the guest's address of the update server
  (10.0.2.100), where TREE is served on port 8080: the config's URLs are the ones the booted
  guest uses, and Ignition fetches every image and keyring from them, checking their hashes;
- /etc/machine-id says `uninitialized`, so the boot is a first boot and systemd applies the
  presets Ignition wrote for enabled units, as on Flatcar;
- DISK is an ext4 image of the result; Ignition's log goes to LOG.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SERVER = ("10.0.2.100", 8080)  # the guest's view of the host (QEMU user networking)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def provision(ignition: Path, root: Path, config: Path, tree: Path, disk: Path, log: Path) -> None:
    """Apply Ignition `config` (JSON) to a copy-on-write view of `root`, serving `tree`, and
    write the result as the ext4 image `disk`. Raises CalledProcessError with Ignition's log."""
    env = {**os.environ, "WSX_IGNITION": str(ignition)}
    here = Path(__file__).resolve()
    subprocess.run(
        [
            "unshare",
            "--mount",
            "--net",
            "--propagation",
            "private",
            sys.executable,
            str(here),
            *(str(p) for p in (root, config, tree, disk, log)),
        ],
        env={**env, "PYTHONPATH": str(here.parents[2])},
        check=True,
    )


def _main(root: Path, config: Path, tree: Path, disk: Path, log: Path) -> None:
    from pipeline.vm.qemu import mkfs_ext4

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", f"{SERVER[0]}/32", "dev", "lo"], check=True)
    server = ThreadingHTTPServer(SERVER, functools.partial(_Quiet, directory=str(tree)))
    threading.Thread(target=server.serve_forever, daemon=True).start()

    work = disk.parent / f".{disk.name}.work"
    layers = {name: work / name for name in ("upper", "work", "sysroot", "run")}
    for path in layers.values():
        path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)  # Ignition's state
    subprocess.run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={root},upperdir={layers['upper']},workdir={layers['work']}",
            str(layers["sysroot"]),
        ],
        check=True,
    )
    ignition = os.environ["WSX_IGNITION"]
    env = {**os.environ, "IGNITION_CONFIG_FILE": str(config)}
    with open(log, "w") as out:
        for stage in ("fetch", "files"):
            subprocess.run(
                [
                    ignition,
                    f"--root={layers['sysroot']}",
                    "--platform=file",
                    f"--stage={stage}",
                    f"--config-cache={work / 'ignition.json'}",
                    "--log-to-stdout",
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
            )
    (layers["sysroot"] / "etc" / "machine-id").write_text("uninitialized\n")
    mkfs_ext4(layers["sysroot"], disk, "wsxroot", headroom=256 << 20)
    server.shutdown()


if __name__ == "__main__":
    _main(*(Path(arg) for arg in sys.argv[1:6]))

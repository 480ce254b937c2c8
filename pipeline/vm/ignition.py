"""Ignition config (spec 3.x JSON, what Butane `variant: flatcar` produces) for a Flatcar VM
running the smoke test: the guest entry of `pipeline.vm` with its unit, the payload images
linked as `/etc/extensions/<name>.raw`, and no update or reboot manager interfering.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from pipeline.core.vocab import Arch
from pipeline.vm.qemu import GUEST_MOUNT, GUEST_UNIT_NAME, MACHINES, guest_file

SPEC_VERSION = "3.3.0"  # Butane flatcar 1.0.0 emits 3.3.0; Flatcar LTS and newer accept it


def _data_url(text: str) -> str:
    return "data:;base64," + base64.b64encode(text.encode()).decode()


def smoke_config(images: Sequence[tuple[str, str]], arch: Arch = Arch.X86_64) -> dict[str, object]:
    """`images` are (extension name, file on the payload disk's images/) pairs. The links
    dangle until the guest unit mounts the payload disk; the guest script then refreshes."""
    return {
        "ignition": {"version": SPEC_VERSION},
        "storage": {
            "files": [
                {
                    "path": "/etc/wsx/boot.sh",
                    "mode": 0o755,
                    "overwrite": True,
                    "contents": {"source": _data_url(guest_file("boot.sh"))},
                }
            ],
            "links": [
                {
                    "path": f"/etc/extensions/{name}.raw",
                    "hard": False,
                    "overwrite": True,
                    "target": f"{GUEST_MOUNT}/images/{file}",
                }
                for name, file in images
            ],
        },
        "systemd": {
            "units": [
                {"name": GUEST_UNIT_NAME, "enabled": True, "contents": guest_file(GUEST_UNIT_NAME)},
                {"name": "update-engine.service", "mask": True},
                {"name": "locksmithd.service", "mask": True},
                # A getty hangs up the console (or the frame channel) under a unit writing to it.
                *({"name": unit, "mask": True} for unit in MACHINES[arch].gettys),
            ]
        },
    }

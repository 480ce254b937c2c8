"""The trust canary (`publish static --trust-canary`): a negative check every host runs.

The canary is a sysext DDI signed by a key made for it and forgotten at once, so no host can
trust it. The Butane configs install it (pinned by hash) and a unit that, after every boot's
merge, offers it to the host's own merge (`systemctl reload systemd-sysext.service`, with
whatever image policy the host has) from /run/extensions and fails loudly, in one journal line
naming the image, if it got merged. It is never linked from /etc/extensions: one refused image
fails a whole merge, so a standing canary would keep every boot from merging anything.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pipeline.build.image import make_image
from pipeline.core.vocab import Arch, ImageFormat
from pipeline.sign.ddi import make_signed_ddi
from pipeline.sign.keys import make_verity_pair

NAME = "wasm-sysexts-canary"
VERSION = "1"
MARKER = f"/usr/lib/{NAME}/merged"  # inside the image: present only while it is merged
CHECK = "/etc/wasm-sysexts/trust-canary"  # the unit's script


def file_name(arch: Arch) -> str:
    return f"{NAME}-{VERSION}-{arch}.raw"


def make_canary(arch: Arch, out: Path, cache_dir: Path) -> None:
    """Write the `arch` canary DDI to `out`, signed by a throwaway key."""
    with tempfile.TemporaryDirectory(prefix=".canary-", dir=out.parent) as tmp:
        root = Path(tmp) / "root"
        release = root / "usr/lib/extension-release.d" / f"extension-release.{NAME}"
        release.parent.mkdir(parents=True)
        release.write_text(
            f"ID=_any\nARCHITECTURE={arch}\nSYSEXT_ID={NAME}\nSYSEXT_VERSION_ID={VERSION}\n"
        )
        marker = root / MARKER.lstrip("/")
        marker.parent.mkdir(parents=True)
        marker.write_text("signed by a throwaway key: a host that merged this trusts anyone\n")
        plain = Path(tmp) / "plain.raw"
        make_image(root, plain, ImageFormat.SQUASHFS, 0, file_name(arch))
        key_pem, cert_pem, _ = make_verity_pair(f"{NAME} throwaway key")
        make_signed_ddi(plain, out, key_pem, cert_pem, cache_dir)


def check_script(image: str) -> str:
    """The canary unit's script for the installed canary `image`."""
    return f"""\
#!/bin/sh
# wasm-sysexts trust canary: offer this host's merge an image signed by a throwaway key.
image={image}
if ! systemctl -q is-active systemd-sysext.service; then
    echo "{NAME}: cannot check $image: systemd-sysext.service is not active" >&2
    exit 1
fi
mkdir -p /run/extensions
ln -sf "$image" /run/extensions/{NAME}.raw
systemctl reload systemd-sysext.service 2>/dev/null
rm -f /run/extensions/{NAME}.raw
if [ -e {MARKER} ]; then
    systemctl reload systemd-sysext.service
    echo "{NAME}: $image was merged: this host merges images signed by an untrusted key" >&2
    exit 1
fi
echo "{NAME}: $image was refused, as it must be"
"""


UNIT = f"""\
[Unit]
Description=wasm-sysexts trust canary: this host must refuse an image signed by an untrusted key
After=systemd-sysext.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={CHECK}

[Install]
WantedBy=multi-user.target
"""

"""A booted host updates itself from our static tree with systemd-sysupdate (Verify=yes).

ONE boot of the Debian trixie reference VM (systemd 257, as Flatcar stable): v1 of `wsxhello`
is installed the way the Butane snippet installs it, our published `.transfer`/`.conf` and
public key go where hosts keep them, and the tree is served over HTTP from 127.0.0.1 on the
host (QEMU user networking restricted to one guest-forward). First a server whose SHA256SUMS
was altered (its signature no longer matches) must be refused with v1 still active; then
`systemd-sysupdate -C wsxhello update` + `systemd-sysext refresh` must activate v2.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import guest_steps
from support.cache import VM_CACHE
from support.cli import run_cli
from support.guest_steps import RUN_STEP, http_server
from support.mirror import Mirror
from support.registry_images import NAME, V1, V2, build_signed, make_key
from support.relay import relay_command

from pipeline.core.artifacts import format_sums, read_sums
from pipeline.core.fs import sha256_file
from pipeline.publish.sysupdate import transfer
from pipeline.vm import qemu
from pipeline.vm.reference import reference_vm

pytestmark = [pytest.mark.vm, pytest.mark.debroot]
GUEST_PORT = 8080


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    root = tmp_path / "htdocs"
    root.mkdir()
    with http_server(root) as port:
        yield root, port


GUEST = f"""
N={NAME}
{RUN_STEP}
run net wsx_net_up
# The root file system is read-only (like Flatcar's /usr): writable /etc, /opt and /tmp.
mkdir -p /run/rw && mount -t tmpfs tmpfs /run/rw && mkdir -p /run/rw/up /run/rw/work
mount -t overlay overlay -o lowerdir=/etc,upperdir=/run/rw/up,workdir=/run/rw/work /etc
mount -t tmpfs tmpfs /opt
touch /tmp/.w 2>/dev/null || mount -t tmpfs tmpfs /tmp
# What the Butane snippet installs: v1, the component's transfer files, the keyring.
mkdir -p /opt/extensions/$N /etc/extensions /etc/sysupdate.$N.d
cp $WSX_DIR/$N-{V1}-x86-64.raw /opt/extensions/$N/
ln -s /opt/extensions/$N/$N-{V1}-x86-64.raw /etc/extensions/$N.raw
cp $WSX_DIR/good/$N.transfer $WSX_DIR/good/$N.conf /etc/sysupdate.$N.d/
cp $WSX_DIR/import-pubring.gpg /etc/systemd/import-pubring.gpg
cp $WSX_DIR/import-pubring.gpg /etc/systemd/import-pubring.pgp
run merge-v1 systemd-sysext refresh
run active-v1 $N
SU=/usr/lib/systemd/systemd-sysupdate
run bad-update $SU --definitions=$WSX_DIR/bad update
run bad-link readlink -f /etc/extensions/$N.raw
run bad-refresh systemd-sysext refresh
run bad-active $N
run list $SU -C $N list
run update $SU -C $N update
run link readlink -f /etc/extensions/$N.raw
run refresh systemd-sysext refresh
run active $N
run status systemd-sysext status
"""


def test_sysupdate_updates_v1_to_v2_and_refuses_bad_signature(
    tmp_path: Path, mirror: Mirror, http_root: tuple[Path, int]
) -> None:
    # The reference VM carries systemd-pull (systemd-container) and gpg, as Flatcar does.
    image = reference_vm(VM_CACHE)
    secret, pubring = make_key(tmp_path / "key")
    signed = build_signed(run_cli, mirror, tmp_path / "images", secret)
    root, port = http_root
    base = f"http://10.0.2.100:{GUEST_PORT}"
    good = root / "good"
    for version in (V1, V2):
        run_cli(
            "publish",
            "static",
            "--allow-unsigned",
            signed[version],
            "--dest",
            good,
            "--base-url",
            f"{base}/good",
            "--gpg-key",
            secret,
            "--keyring",
            pubring,
            check=True,
        )

    # The attacker's server: v2 swapped for other bytes, SHA256SUMS updated to match, the
    # signature left as it was (the key is not theirs), so it no longer verifies.
    bad = root / "bad"
    shutil.copytree(good, bad)
    evil = bad / NAME / f"{NAME}-{V2}-x86-64.raw"
    evil.write_bytes((bad / NAME / f"{NAME}-{V1}-arm64.raw").read_bytes())
    sums = read_sums(bad / NAME / "SHA256SUMS")
    sums[evil.name] = sha256_file(evil)
    (bad / NAME / "SHA256SUMS").write_text(format_sums(sums))

    payload = tmp_path / "payload"
    (payload / "good").mkdir(parents=True)
    (payload / "bad").mkdir()
    shutil.copy(signed[V1] / f"{NAME}-{V1}-x86-64.raw", payload)
    shutil.copy(good / "import-pubring.gpg", payload)
    for suffix in ("transfer", "conf"):
        shutil.copy(good / "sysupdate.d" / f"{NAME}.{suffix}", payload / "good")
    (payload / "bad" / f"{NAME}.transfer").write_text(transfer(NAME, f"{base}/bad"))
    assert "Verify=yes" in (payload / "good" / f"{NAME}.transfer").read_text()

    result = qemu.boot(
        image, payload, GUEST, timeout=420, net_forward=(GUEST_PORT, relay_command(port))
    )
    steps, detail = guest_steps.steps(result)
    assert result.finished, f"{result.stopped_at}\n{detail}\n{result.console[-3000:]}"

    assert steps["active-v1"]["rc"] == 0 and steps["active-v1"]["out"] == f"{NAME} {V1}\n", detail
    retried = {k: v["tries"] for k, v in steps.items() if v["tries"] > 1}
    if retried:
        print(f"\n--- steps run again after a transport failure: {retried}")
    # Bad signature: refused for that reason, nothing staged, v1 still active.
    assert steps["bad-update"]["rc"] != 0, detail
    assert "gpg: BAD signature from" in steps["bad-update"]["out"], detail
    assert "Signature verification failed" in steps["bad-update"]["out"], detail
    assert "Transfer failed: " not in steps["bad-update"]["out"], detail
    assert steps["bad-link"]["out"].strip().endswith(f"{NAME}-{V1}-x86-64.raw"), detail
    assert steps["bad-active"]["out"] == f"{NAME} {V1}\n", detail
    # Good server: v2 downloaded, verified, linked and, after refresh, active.
    assert steps["update"]["rc"] == 0, detail
    assert steps["link"]["out"].strip() == f"/opt/extensions/{NAME}/{NAME}-{V2}-x86-64.raw", detail
    assert steps["refresh"]["rc"] == 0, detail
    assert steps["active"]["out"] == f"{NAME} {V2}\n", detail

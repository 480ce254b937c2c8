"""A host provisioned from the Butane config `publish static` writes merges only images signed
by a certificate the tree trusts, proven with Flatcar's own provisioning tool.

The tree trusts two verity certificates at once (a rotation): wasmtime is signed by the old
one, wazero by the new one. `publish butane` writes the config for both, the real `butane`
transpiles it, and Ignition (the version Flatcar stable ships, built from its Go module) runs
its fetch and files stages against the reference VM's root, fetching every file from the tree
(support/provision.py). Then ONE boot of that disk, with the tree served to the guest:

- both images merged at boot (systemd-sysext.service, under our drop-in's image policy) and
  each runtime runs a Wasm program;
- an unsigned image and an image signed by an untrusted key, each dropped into
  /etc/extensions/, are refused by the reload, with systemd's reason;
- systemd-sysupdate.service (our drop-ins: update, then the refresh under the policy) moves
  wazero to the newer version published after provisioning, Verify=yes, and merges it;
- the kubelet's node labels are in place (wazero is published as a containerd shim here).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import guest_steps
from support.cache import VM_CACHE
from support.cli import run_cli
from support.gotools import IGNITION_VERSION, butane_binary, ignition_binary, wazero_binary
from support.guest_steps import RUN_STEP, http_server
from support.keys import Keys, make_keys
from support.mirror import Mirror
from support.payloads import HELLO_OUTPUT, tar_bytes
from support.provision import SERVER, provision
from support.relay import relay_command
from support.vm_payloads import TEST_HOST, pin

from pipeline.core import debroot
from pipeline.core.vocab import Arch
from pipeline.publish import canary
from pipeline.publish.butane import IMAGE_POLICY, KUBELET_DEFAULTS, POLICY_DROPIN
from pipeline.vm import qemu
from pipeline.vm.reference import SUITE, hooks, packages, reference_vm

pytestmark = [pytest.mark.debroot]  # signed DDIs: systemd-repart in the trixie root

BASE = f"http://{SERVER[0]}:{SERVER[1]}"
# Two packagings of the same wazero binary: the version sysupdate moves between.
WAZERO_V1, WAZERO_V2 = "1.9.0", "1.9.1"
HANDLER = "wsxwazero"


@dataclass(frozen=True)
class Site:
    work: Path
    keys: dict[str, Keys]  # old, new (both trusted), rogue (not)
    signed: dict[str, Path]  # wasmtime (old), wazero-1/wazero-2 (new), rogue (rogue key)
    rogue_plain: Path  # the rogue image, unsigned

    def publish(
        self, images: Path, dest: Path, *extra: str | Path, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run_cli(
            "publish",
            "static",
            images,
            "--dest",
            dest,
            "--base-url",
            BASE,
            "--gpg-key",
            self.keys["old"].gpg,
            "--keyring",
            self.keys["old"].pubring,
            *extra,
            check=check,
        )

    def trusted(self) -> list[str | Path]:
        """Both certificates trusted (a rotation), and the trust canary."""
        return [
            "--verity-cert",
            self.keys["old"].cert,
            "--verity-cert",
            self.keys["new"].cert,
            "--trust-canary",
            "--cache",
            VM_CACHE,
        ]


def _recipes(mirror: Mirror, directory: Path, wasmtime: str) -> None:
    (directory / "wasmtime.yaml").write_text(wasmtime)
    url = f"{TEST_HOST}/wazero-provision.tar.gz"
    tarball = tar_bytes({"wazero": (wazero_binary().read_bytes(), 0o755)}, compression="gz")
    sha = pin(mirror, url, tarball)
    versions = "".join(
        f'  "{v}":\n    x86-64: {{url: "{url}", sha256: "{sha}"}}\n' for v in (WAZERO_V1, WAZERO_V2)
    )
    (directory / "wazero.yaml").write_text(
        "name: wazero\nsummary: wazero test packaging\nhomepage: https://wazero.io\n"
        f'license: Apache-2.0\nversion: "{WAZERO_V2}"\nversions:\n{versions}'
        'install:\n  - {from: "wazero", to: /usr/bin/wazero, mode: "0755"}\n'
        # A stand-in for the shim binary the handler needs: the node labels are the point.
        f'  - {{from: "wazero", to: /usr/bin/containerd-shim-{HANDLER}-v1, mode: "0755"}}\n'
        f"containerd: {{handler: {HANDLER}, runtime_type: io.containerd.{HANDLER}.v1}}\n"
    )
    url = f"{TEST_HOST}/rogue-1.0.tar.gz"
    sha = pin(mirror, url, tar_bytes({"README": b"not ours\n"}, compression="gz"))
    (directory / "rogue.yaml").write_text(
        "name: rogue\nsummary: an image no host may merge\nhomepage: https://wsx-test.example\n"
        f'license: MIT\nversion: "1.0"\nversions:\n  "1.0":\n'
        f'    x86-64: {{url: "{url}", sha256: "{sha}"}}\n'
        "install:\n  - {from: README, to: /usr/share/rogue/README}\n"
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, mirror: Mirror, recipes: Path) -> Site:
    work = tmp_path_factory.mktemp("provision")
    keys = {name: make_keys(work / f"keys-{name}") for name in ("old", "new", "rogue")}
    book = work / "recipes"
    book.mkdir()
    _recipes(mirror, book, (recipes / "wasmtime.yaml").read_text())

    def build(name: str, label: str, *extra: str) -> Path:
        out = work / f"built-{label}"
        run_cli(
            "build",
            name,
            *extra,
            "--arch",
            "x86-64",
            "--recipes",
            book,
            "--mirror",
            mirror.url,
            "--cache",
            work / "dl",
            "--out",
            out,
            "--quiet",
            check=True,
        )
        return out

    def sign(built: Path, key: Keys, label: str) -> Path:
        out = work / f"signed-{label}"
        run_cli(
            "sign",
            built,
            "--out",
            out,
            "--gpg-key",
            keys["old"].gpg,
            "--verity-key",
            key.verity_key,
            "--verity-cert",
            key.cert,
            "--cache",
            VM_CACHE,
            "--quiet",
            check=True,
        )
        return out

    rogue = build("rogue", "rogue")
    signed = {
        "wasmtime": sign(build("wasmtime", "wasmtime"), keys["old"], "wasmtime"),
        "wazero-1": sign(build("wazero", "wazero-1", "--version", WAZERO_V1), keys["new"], "z1"),
        "wazero-2": sign(build("wazero", "wazero-2", "--version", WAZERO_V2), keys["new"], "z2"),
        "rogue": sign(rogue, keys["rogue"], "rogue"),
    }
    return Site(work, keys, signed, rogue / "rogue-1.0-x86-64.raw")


def _reference_root() -> Path:
    """The cached reference root (the one reference_vm makes its disk from)."""
    return debroot.debian_root(
        VM_CACHE, SUITE, packages(Arch.X86_64), variant="minbase", hooks=hooks(Arch.X86_64)
    )


CANARY_UNIT = f"{canary.NAME}.service"
GUEST = f"""
{RUN_STEP}
run net wsx_net_up
# The trust canary ran after the boot's merge; wait for its verdict before merging anything.
i=0
while [ $i -lt 300 ]; do
    case $(systemctl show -p ActiveState --value {CANARY_UNIT}) in active|failed) break;; esac
    i=$((i + 1)); sleep 1
done
run canary-boot systemctl show -p ActiveState,Result --value {CANARY_UNIT}
run canary-boot-journal journalctl -u {CANARY_UNIT} -o cat --no-pager
run merged-at-boot systemd-sysext status
run policy systemctl cat systemd-sysext.service
run wasmtime wasmtime run $WSX_DIR/hello.wasm
run wazero wazero run $WSX_DIR/hello.wasm
run labels cat {KUBELET_DEFAULTS}
refuse() {{  # refuse CASE IMAGE: drop it in, reload the service, read the reason
    cp "$WSX_DIR/$2" /etc/extensions/rogue.raw
    since=$(date +%s.%N)
    run "$1" systemctl reload systemd-sysext.service
    run "$1-journal" journalctl -u systemd-sysext.service -o cat --no-pager --since "@$since"
    run "$1-rogue-absent" test ! -e /usr/share/rogue/README
    run "$1-still-merged" systemd-sysext status
    rm -f /etc/extensions/rogue.raw
}}
refuse unsigned rogue-unsigned.raw
refuse other-key rogue-other-key.raw
run reload-clean systemctl reload systemd-sysext.service
run update systemctl start systemd-sysupdate.service
run update-journal journalctl -u systemd-sysupdate.service -o cat --no-pager
run link readlink -f /etc/extensions/wazero.raw
run release cat /usr/lib/extension-release.d/extension-release.wazero
run wazero-after wazero run $WSX_DIR/hello.wasm
run status-after systemd-sysext status
# Without our policy, systemd 257 still refuses a DDI whose signature does not verify (the
# policy is what refuses unsigned images)...
rm /etc/systemd/system/systemd-sysext.service.d/{POLICY_DROPIN}
systemctl daemon-reload
run canary-no-policy systemctl restart {CANARY_UNIT}
# ... but a host someone "fixed" to merge whatever it is given, signature checks turned off,
# merges it as a plain verity image. The canary must notice on its next run.
printf '[Service]\nEnvironment=SYSTEMD_DISSECT_VERITY_SIGNATURE=0\n' \
    > /etc/systemd/system/systemd-sysext.service.d/50-no-signature-checks.conf
systemctl daemon-reload
since=$(date +%s.%N)
run canary-unprotected systemctl restart {CANARY_UNIT}
run canary-unprotected-journal journalctl -u {CANARY_UNIT} -o cat --no-pager --since "@$since"
"""


@pytest.mark.vm
@pytest.mark.gotool
def test_provisioned_host_merges_only_trusted_images_and_updates(
    site: Site, hello_wasm: Path, tmp_path: Path
) -> None:
    reference = reference_vm(VM_CACHE)
    htdocs = tmp_path / "htdocs"
    htdocs.mkdir()
    tree = htdocs / "tree"
    # One tree trusting the old and the new certificate; wazero 1.9.0 only, for now.
    for label in ("wasmtime", "wazero-1"):
        site.publish(site.signed[label], tree, *site.trusted())
    butane = tmp_path / "host.bu"
    run_cli("publish", "butane", tree, "--out", butane, check=True)
    text = butane.read_text()
    for line in ("ExecStart=", "ExecReload="):  # every merge systemd-sysext.service runs
        assert f"{line}systemd-sysext refresh --image-policy={IMAGE_POLICY}\n" in text, text
    assert "|| { systemctl reload-or-restart systemd-sysext.service" in text, text
    assert "verity+signed" not in text and "--allow-unsigned" not in text
    ignition = tmp_path / "host.ign"
    proc = subprocess.run(
        [str(butane_binary()), "--strict", str(butane)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    ignition.write_text(proc.stdout)
    config = json.loads(proc.stdout)
    assert {f["path"] for f in config["storage"]["files"]} >= {
        f"/etc/verity.d/{Path(c['file']).name}"
        for c in json.loads((tree / "index.json").read_text())["verity_certificates"]
    }

    disk = tmp_path / "provisioned.img"
    log = tmp_path / "ignition.log"
    provision(ignition_binary(), _reference_root(), ignition, tree, disk, log)
    ignition_log = log.read_text()
    assert f"Ignition {IGNITION_VERSION}" in ignition_log, ignition_log[:2000]
    assert "files: op(" in ignition_log and "writing file" in ignition_log, ignition_log

    # Published after provisioning: what sysupdate must find.
    site.publish(site.signed["wazero-2"], tree, *site.trusted())
    payload = tmp_path / "payload"
    payload.mkdir()
    shutil.copyfile(hello_wasm, payload / "hello.wasm")
    shutil.copyfile(site.rogue_plain, payload / "rogue-unsigned.raw")
    shutil.copyfile(site.signed["rogue"] / "rogue-1.0-x86-64.raw", payload / "rogue-other-key.raw")
    # The disk Ignition wrote, booted read-write as Flatcar's root is.
    vm = dataclasses.replace(reference, disk=disk, append=reference.append.replace(" ro ", " rw "))
    with http_server(tree) as port:
        result = qemu.boot(
            vm, payload, GUEST, timeout=600, net_forward=(SERVER[1], relay_command(port))
        )
    steps, detail = guest_steps.steps(result)
    assert result.finished, f"{result.stopped_at}\n{detail}\n{result.console[-3000:]}"

    def ok(step: str) -> str:
        assert steps[step]["rc"] == 0, f"{step} failed\n{detail}"
        return str(steps[step]["out"])

    # Merged at boot, by the unit our drop-in changed, with its policy.
    assert POLICY_DROPIN in ok("policy") and f"--image-policy={IMAGE_POLICY}" in ok("policy")
    for name in ("wasmtime", "wazero"):
        assert name in ok("merged-at-boot"), detail
        assert ok(name).strip() == HELLO_OUTPUT, detail
    assert (
        ok("labels").strip() == f"KUBELET_EXTRA_ARGS=--node-labels=wasm-sysexts.dev/{HANDLER}=true"
    )

    # Refused, each for its reason; what was merged stays merged, the rogue file never shows.
    for case in ("unsigned", "other-key"):
        assert steps[case]["rc"] != 0, f"{case} was merged\n{detail}"
        ok(f"{case}-rogue-absent")
        assert "wasmtime" in ok(f"{case}-still-merged") and "wazero" in ok(f"{case}-still-merged")
    unsigned, other = ok("unsigned-journal"), ok("other-key-journal")
    print(f"\n--- refused, unsigned:\n{unsigned}--- refused, other key:\n{other}")
    assert "rogue.raw" in unsigned and "does not match image policy" in unsigned.lower(), unsigned
    # An untrusted signature is refused by the kernel, which names the image by its root hash.
    rogue = json.loads((site.signed["rogue"] / "rogue-1.0-x86-64.raw.json").read_text())
    device = f"device-mapper: reload ioctl on {rogue['verity']['root_hash']}-verity"
    assert device in other and "failed: Required key not available" in other, other
    ok("reload-clean")

    # sysupdate (Verify=yes) moved wazero to the version published after provisioning, and
    # the refresh our drop-in runs merged it under the same policy.
    ok("update")
    print(f"--- sysupdate:\n{steps['update-journal']['out']}")
    assert ok("link").strip() == f"/opt/extensions/wazero/wazero-{WAZERO_V2}-x86-64.raw", detail
    assert f"SYSEXT_VERSION_ID={WAZERO_V2}" in ok("release").splitlines(), detail
    print(f"--- merged after the update:\n{ok('status-after')}")
    assert ok("wazero-after").strip() == HELLO_OUTPUT

    # The trust canary: refused at boot, as it must be; noticed once the policy was gone.
    guard = f"/opt/extensions/{canary.NAME}/{canary.file_name(Arch.X86_64)}"
    assert sorted(ok("canary-boot").split()) == ["active", "success"], detail
    assert f"{canary.NAME}: {guard} was refused, as it must be" in ok("canary-boot-journal")
    print(f"--- canary at boot:\n{ok('canary-boot-journal')}")
    ok("canary-no-policy")
    assert steps["canary-unprotected"]["rc"] != 0, detail
    merged = ok("canary-unprotected-journal")
    print(f"--- canary, signature checks off:\n{merged}")
    line = f"{canary.NAME}: {guard} was merged: this host merges images signed by an untrusted key"
    assert line in merged.splitlines(), merged


def _one_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("wasm-sysexts: error: ")]
    return line.removeprefix("wasm-sysexts: error: ")


def test_provision_publish_refuses_images_the_certificates_do_not_verify(
    site: Site, tmp_path: Path
) -> None:
    image = site.signed["wasmtime"] / next(p.name for p in site.signed["wasmtime"].glob("*.raw"))
    proc = site.publish(
        site.signed["wasmtime"],
        tmp_path / "tree",
        "--verity-cert",
        site.keys["new"].cert,
        check=False,
    )
    assert _one_error(proc) == (
        f"{image}: verity signature: signer is not this certificate (verity.crt)"
    )
    assert list(tmp_path.iterdir()) == [], "nothing written"
    # Trusting both certificates, it publishes; the index names both.
    site.publish(site.signed["wasmtime"], tmp_path / "tree", *site.trusted())
    index = json.loads((tmp_path / "tree" / "index.json").read_text())
    assert index["image_policy"] == IMAGE_POLICY
    assert len(index["verity_certificates"]) == 2


def test_provision_publish_refuses_a_tree_mixing_signed_and_unsigned_images(
    site: Site, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    unsigned = tmp_path / "unsigned"
    run_cli(
        "sign",
        site.rogue_plain.parent,
        "--out",
        unsigned,
        "--gpg-key",
        site.keys["old"].gpg,
        check=True,
    )
    # Unsigned input, enforcing: refused, naming the image.
    proc = site.publish(unsigned, tree, *site.trusted(), check=False)
    assert _one_error(proc).startswith(
        f"{unsigned / site.rogue_plain.name}: not a verity-signed DDI"
    )
    assert not tree.exists()
    # An unsigned tree (said so) ...
    proc = site.publish(unsigned, tree, "--allow-unsigned")
    assert "[publish] warning: --allow-unsigned: the Butane configs install no" in proc.stderr
    bu = (tree / "sysupdate.d" / "rogue.bu").read_text()
    assert "# WARNING: published with --allow-unsigned" in bu and "image-policy" not in bu
    before = sorted(p.name for p in tree.parent.iterdir())
    # ... then a signed image into it: the tree would mix them, so nothing is written.
    proc = site.publish(site.signed["wasmtime"], tree, *site.trusted(), check=False)
    assert _one_error(proc).endswith(
        f"/rogue/{site.rogue_plain.name}: not a verity-signed DDI, and hosts provisioned from "
        "this tree refuse unsigned images (sign with --verity-key/--verity-cert, or publish "
        "with --allow-unsigned)"
    )
    assert sorted(p.name for p in tree.parent.iterdir()) == before


def test_provision_butane_for_an_extension_not_in_the_tree_is_refused(
    site: Site, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    site.publish(site.signed["wasmtime"], tree, *site.trusted())
    out = tmp_path / "host.bu"
    proc = run_cli("publish", "butane", tree, "wasmtime", "spin", "--out", out)
    assert _one_error(proc) == (
        f"{tree / 'index.json'}: no extension spin in this tree (published: wasmtime)"
    )
    assert not out.exists()
    run_cli("publish", "butane", tree, "wasmtime", "--out", out, check=True)
    assert out.read_text() == (tree / "sysupdate.d" / "wasmtime.bu").read_text()

"""Signing and verification end to end with real tools: keys from gpg and `cryptography`, images
from the real build, SHA256SUMS.gpg checked by gpg, gpgv and sqv, verity-signed DDIs made by
systemd-repart (in a Debian trixie root) and checked by our verifier and by veritysetup."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
from support.cache import VM_CACHE
from support.cli import run_cli
from support.keys import Keys, make_keys
from support.mirror import Mirror
from support.payloads import HELLO_OUTPUT, WASMTIME_VERSION

from pipeline.sign.gpt import PARTITION_TYPES, read_partitions

X86 = f"wasmtime-{WASMTIME_VERSION}-x86-64.raw"
ARM = f"wasmtime-{WASMTIME_VERSION}-arm64.raw"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys") / "ours")


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys") / "other")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Holds the download cache of the builds."""
    return tmp_path_factory.mktemp("sign-work")


@pytest.fixture(scope="module")
def plain(work: Path, recipes: Path, mirror: Mirror) -> Path:
    """Real builds: squashfs images of wasmtime for x86-64 and arm64, with SHA256SUMS."""
    out = work / "plain"
    run_cli(
        "build",
        "wasmtime",
        "--recipes",
        recipes,
        "--mirror",
        mirror.url,
        "--cache",
        work / "cache",
        "--out",
        out,
        "--arch",
        "x86-64",
        "--arch",
        "arm64",
        check=True,
    )
    return out


@pytest.fixture(scope="module")
def plain_erofs(work: Path, recipes: Path, mirror: Mirror) -> Path:
    out = work / "plain-erofs"
    run_cli(
        "build",
        "wasmtime",
        "--recipes",
        recipes,
        "--mirror",
        mirror.url,
        "--cache",
        work / "cache",
        "--out",
        out,
        "--arch",
        "arm64",
        "--format",
        "erofs",
        check=True,
    )
    return out / ARM


def copy_images(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for image in src.glob("*.raw"):
        shutil.copyfile(image, dst / image.name)
    return dst


def signed_dir(directory: Path) -> Path:
    """Where `sign(directory)` writes: sign never rewrites its input."""
    return directory.with_name(directory.name + ".signed")


def sign(
    directory: Path,
    keys: Keys,
    *extra: str | Path,
    env: dict[str, str] | None = None,
    check: bool = True,
    out: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "sign",
        directory,
        "--out",
        out or signed_dir(directory),
        "--gpg-key",
        keys.gpg,
        *extra,
        env=env,
        check=check,
    )


def sign_verity(
    directory: Path, keys: Keys, check: bool = True
) -> subprocess.CompletedProcess[str]:
    # The cached Debian trixie root that runs systemd-repart is shared with the VM tests.
    return sign(
        directory,
        keys,
        "--verity-key",
        keys.verity_key,
        "--verity-cert",
        keys.cert,
        "--cache",
        VM_CACHE,
        check=check,
    )


def verify(directory: Path, keys: Keys, *extra: str | Path) -> subprocess.CompletedProcess[str]:
    return run_cli("verify", directory, "--keyring", keys.pubring, *extra)


def status_lines(proc: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """file -> its verify line."""
    return {ln.split(": ", 1)[0]: ln for ln in proc.stdout.splitlines() if ": " in ln}


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory, plain: Path, keys: Keys) -> Path:
    """The plain images, signed with OpenPGP only."""
    directory = copy_images(plain, tmp_path_factory.mktemp("signed") / "images")
    sign(directory, keys)
    return signed_dir(directory)


@pytest.fixture(scope="module")
def ddis(
    tmp_path_factory: pytest.TempPathFactory, plain: Path, plain_erofs: Path, keys: Keys
) -> Path:
    """The x86-64 squashfs and the arm64 erofs image, turned into verity-signed DDIs."""
    directory = tmp_path_factory.mktemp("ddis") / "images"
    directory.mkdir()
    shutil.copyfile(plain / X86, directory / X86)
    shutil.copyfile(plain_erofs, directory / ARM)
    sign_verity(directory, keys)
    return signed_dir(directory)


# --- keys ---------------------------------------------------------------------------------


def test_keys_have_safe_modes_and_printed_fingerprints(keys: Keys, tmp_path: Path) -> None:
    modes = {p.name: p.stat().st_mode & 0o777 for p in keys.dir.iterdir()}
    assert modes == {
        "gpg-signing.key": 0o600,
        "import-pubring.gpg": 0o644,
        "verity.key": 0o600,
        "verity.crt": 0o644,
    }
    shown = subprocess.run(
        ["gpg", "--homedir", str(tmp_path), "--with-colons", "--show-keys", str(keys.pubring)],
        capture_output=True,
        text=True,
        check=True,
    )
    fpr = next(ln.split(":")[9] for ln in shown.stdout.splitlines() if ln.startswith("fpr"))
    assert "pub:-:255:22:" in shown.stdout  # Ed25519 (EdDSA, algorithm 22)
    assert f"OpenPGP signing key (Ed25519): {fpr}" in keys.output
    cert = subprocess.run(
        ["openssl", "x509", "-in", str(keys.cert), "-noout", "-fingerprint", "-sha256", "-text"],
        capture_output=True,
        text=True,
        check=True,
    )
    found = cast(re.Match[str], re.search(r"Fingerprint=([0-9A-F:]+)", cert.stdout))
    digest = found.group(1)
    assert digest.replace(":", "").lower() in keys.output
    assert "Public-Key: (3072 bit)" in cert.stdout and "rsaEncryption" in cert.stdout


def test_keys_generate_refuses_to_overwrite(keys: Keys) -> None:
    before = {p.name: p.read_bytes() for p in keys.dir.iterdir()}
    proc = run_cli("keys", "generate", "--out", keys.dir)
    assert proc.returncode == 1
    assert "already exists; refusing to overwrite keys" in proc.stderr
    assert {p.name: p.read_bytes() for p in keys.dir.iterdir()} == before


# --- OpenPGP-signed SHA256SUMS ------------------------------------------------------------


def test_signed_directory_verifies(signed: Path, keys: Keys) -> None:
    proc = verify(signed, keys)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = status_lines(proc)
    assert lines["SHA256SUMS.gpg"].startswith("SHA256SUMS.gpg: OK (good signature by ")
    assert lines[X86] == f"{X86}: OK (sha256 matches)"
    assert lines[ARM] == f"{ARM}: OK (sha256 matches)"
    sums = (signed / "SHA256SUMS").read_text().splitlines()
    assert [ln.split()[1] for ln in sums] == sorted([ARM, X86])


def test_verify_json(signed: Path, keys: Keys) -> None:
    proc = verify(signed, keys, "--json")
    doc = json.loads(proc.stdout)
    assert doc["ok"] is True
    assert [f["file"] for f in doc["files"]] == ["SHA256SUMS.gpg", ARM, X86]


def test_other_openpgp_implementations_accept_the_signature(
    signed: Path, keys: Keys, tmp_path: Path
) -> None:
    sums, sig = str(signed / "SHA256SUMS"), str(signed / "SHA256SUMS.gpg")
    # systemd-sysupdate's own invocation of gpg.
    gpg = subprocess.run(
        [
            "gpg",
            "--homedir",
            str(tmp_path),
            "--no-options",
            "--batch",
            "--no-default-keyring",
            "--keyring",
            str(keys.pubring),
            "--trust-model=always",
            "--verify",
            sig,
            sums,
        ],
        capture_output=True,
        text=True,
    )
    assert gpg.returncode == 0 and "Good signature" in gpg.stderr, gpg.stderr
    gpgv = subprocess.run(
        ["gpgv", "--homedir", str(tmp_path), "--keyring", str(keys.pubring), sig, sums],
        capture_output=True,
        text=True,
    )
    assert gpgv.returncode == 0, gpgv.stderr
    sqv = subprocess.run(
        ["sqv", "--keyring", str(keys.pubring), sig, sums], capture_output=True, text=True
    )
    assert sqv.returncode == 0, sqv.stderr
    fpr = keys.output.split("(Ed25519): ", 1)[1].split()[0]
    assert sqv.stdout.strip() == fpr


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def tamper_image(d: Path, other: Keys) -> None:
    flip_byte(d / X86, (d / X86).stat().st_size // 2)


def tamper_sums(d: Path, other: Keys) -> None:
    text = (d / "SHA256SUMS").read_text()
    digest = text.split()[0]
    (d / "SHA256SUMS").write_text(text.replace(digest, digest[::-1], 1))


def sign_with_other_key(d: Path, other: Keys) -> None:
    resigned = d.with_name("by-other-key")
    sign(d, other, out=resigned)
    for path in resigned.iterdir():  # everything but the images: sums, signature, provenance
        if path.suffix != ".raw":
            shutil.copyfile(path, d / path.name)


def drop_signature(d: Path, other: Keys) -> None:
    (d / "SHA256SUMS.gpg").unlink()


def add_unlisted_image(d: Path, other: Keys) -> None:
    shutil.copyfile(d / X86, d / "extra-1.0-x86-64.raw")


@pytest.mark.parametrize(
    ("tamper", "culprits"),
    [
        (tamper_image, {X86: "sha256 "}),
        (tamper_sums, {"SHA256SUMS.gpg": "BAD signature", ARM: "sha256 "}),
        (sign_with_other_key, {"SHA256SUMS.gpg": "not made by a key in import-pubring.gpg"}),
        (drop_signature, {"SHA256SUMS.gpg": "SHA256SUMS.gpg is missing"}),
        (add_unlisted_image, {"extra-1.0-x86-64.raw": "not listed in SHA256SUMS"}),
    ],
    ids=["flipped-byte", "edited-sums", "other-key", "no-signature", "unlisted-image"],
)
def test_tampering_is_refused(
    tamper: Callable[[Path, Keys], None],
    culprits: dict[str, str],
    signed: Path,
    keys: Keys,
    other_keys: Keys,
    tmp_path: Path,
) -> None:
    d = tmp_path / "images"
    shutil.copytree(signed, d)
    tamper(d, other_keys)
    proc = verify(d, keys)
    assert proc.returncode == 1
    lines = status_lines(proc)
    failed = {f for f, ln in lines.items() if ": FAILED" in ln and f != str(d)}
    assert failed == set(culprits), proc.stdout
    for file, reason in culprits.items():
        assert reason in lines[file], lines[file]
    assert "FAILED (" in proc.stdout.splitlines()[-1]


def test_stale_sums_are_recomputed(signed: Path, keys: Keys, tmp_path: Path) -> None:
    d = tmp_path / "images"
    shutil.copytree(signed, d)
    (d / "SHA256SUMS").write_text(f"{'0' * 64}  {X86}\n")
    (d / "SHA256SUMS.gpg").unlink()
    sign(d, keys)
    assert (signed_dir(d) / "SHA256SUMS").read_bytes() == (signed / "SHA256SUMS").read_bytes()
    assert verify(signed_dir(d), keys).returncode == 0


def test_private_keys_never_appear_in_output(
    signed: Path, keys: Keys, other_keys: Keys, tmp_path: Path
) -> None:
    d = tmp_path / "images"
    shutil.copytree(signed, d)
    # The CLI's TMPDIR (short: gpg-agent sockets live there): its gpg homes must all be gone.
    scratch = Path(tempfile.mkdtemp(prefix="t4-"))
    # A passphrase-protected key given through environment variables, like CI secrets.
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback"]
    passphrase = "correct horse battery staple 42"
    subprocess.run(
        [
            *gpg,
            "--passphrase",
            passphrase,
            "--quick-gen-key",
            "Protected <p@x>",
            "ed25519",
            "sign",
            "never",
        ],
        check=True,
        capture_output=True,
    )
    armored = subprocess.run(
        [*gpg, "--passphrase", passphrase, "--armor", "--export-secret-keys"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    pubring = tmp_path / "protected.gpg"
    subprocess.run([*gpg, "--output", str(pubring), "--export"], check=True)
    env = {
        "SIGNING_KEY": armored,
        "SIGNING_PASSPHRASE": passphrase,
        "VERITY_KEY": keys.verity_key.read_text(),
        "TMPDIR": str(scratch),
    }
    outputs = [keys.output]
    good = tmp_path / "good"
    ok = run_cli(
        "sign",
        d,
        "--out",
        good,
        "--gpg-key",
        "env:SIGNING_KEY",
        "--gpg-passphrase",
        "env:SIGNING_PASSPHRASE",
        "--json",
        env=env,
    )
    outputs.append(ok.stdout + ok.stderr)
    assert ok.returncode == 0, ok.stderr
    assert run_cli("verify", good, "--keyring", pubring).returncode == 0
    failed = tmp_path / "failed"
    for bad in (["--gpg-passphrase", "env:NO_SUCH_VAR"], []):
        proc = run_cli("sign", d, "--out", failed, "--gpg-key", "env:SIGNING_KEY", *bad, env=env)
        assert proc.returncode == 1
        outputs.append(proc.stdout + proc.stderr)
    env_bad = {**env, "SIGNING_PASSPHRASE": "wrong"}
    proc = run_cli(
        "sign",
        d,
        "--out",
        failed,
        "--gpg-key",
        "env:SIGNING_KEY",
        "--gpg-passphrase",
        "env:SIGNING_PASSPHRASE",
        env=env_bad,
    )
    assert proc.returncode == 1 and "wrong or missing passphrase" in proc.stderr
    outputs.append(proc.stdout + proc.stderr)
    # A verity key that does not match its certificate fails before anything is written.
    proc = run_cli(
        "sign",
        d,
        "--out",
        failed,
        "--gpg-key",
        keys.gpg,
        "--verity-key",
        "env:VERITY_KEY",
        "--verity-cert",
        other_keys.cert,
        env=env,
    )
    assert proc.returncode == 1 and "does not match --verity-cert" in proc.stderr
    outputs.append(proc.stdout + proc.stderr)
    text = "\n".join(outputs)
    for secret in [
        passphrase,
        *keys.secrets(),
        *[ln for ln in armored.splitlines() if len(ln) >= 40],
    ]:
        assert secret not in text
    # Failed runs wrote nothing, left the good signature in place, and no gpg home behind.
    assert not failed.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gnupg",
        "good",
        "images",
        "protected.gpg",
    ]
    assert run_cli("verify", good, "--keyring", pubring).returncode == 0
    assert list(scratch.iterdir()) == []
    scratch.rmdir()


# --- verity-signed DDIs -------------------------------------------------------------------


@pytest.mark.debroot
def test_ddis_verify_with_our_cert(ddis: Path, keys: Keys) -> None:
    proc = verify(ddis, keys, "--verity-cert", keys.cert)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = status_lines(proc)
    for name, arch in ((X86, "x86-64"), (ARM, "arm64")):
        assert f"DDI {arch}, root hash " in lines[name]
        assert "verity signature by CN=wasm-sysexts image signing" in lines[name]
    assert not list(ddis.glob(".*ddi*")), "work files left behind"


@pytest.mark.debroot
def test_ddi_layout_and_payload(ddis: Path, plain: Path, hello_wasm: Path, tmp_path: Path) -> None:
    for name, arch in ((X86, "x86-64"), (ARM, "arm64")):
        types = {p.type_guid for p in read_partitions(ddis / name)}
        assert types == {
            PARTITION_TYPES[(arch, role)] for role in ("root", "root-verity", "root-verity-sig")
        }
    # The root partition holds exactly the plain image's tree; its wasmtime runs.
    root = next(
        p for p in read_partitions(ddis / X86) if p.type_guid == PARTITION_TYPES[("x86-64", "root")]
    )
    part = tmp_path / "root.erofs"
    with open(ddis / X86, "rb") as f:
        part.write_bytes(root.read(f))
    subprocess.run(
        ["fsck.erofs", f"--extract={tmp_path / 'ddi'}", str(part)], check=True, capture_output=True
    )
    subprocess.run(
        ["unsquashfs", "-q", "-n", "-d", str(tmp_path / "plain"), str(plain / X86)],
        check=True,
        capture_output=True,
    )

    def tree(top: Path) -> dict[str, tuple[bytes, int]]:
        return {
            p.relative_to(top).as_posix(): (p.read_bytes(), p.stat().st_mode)
            for p in top.rglob("*")
            if p.is_file()
        }

    assert tree(tmp_path / "ddi") == tree(tmp_path / "plain")
    run = subprocess.run(
        [str(tmp_path / "ddi/usr/bin/wasmtime"), "run", str(hello_wasm)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.strip() == HELLO_OUTPUT


@pytest.mark.debroot
def test_veritysetup_agrees_on_the_root_hash(ddis: Path, tmp_path: Path) -> None:
    parts = {p.type_guid: p for p in read_partitions(ddis / X86)}
    files = {}
    with open(ddis / X86, "rb") as f:
        for role in ("root", "root-verity", "root-verity-sig"):
            files[role] = tmp_path / role
            files[role].write_bytes(parts[PARTITION_TYPES[("x86-64", role)]].read(f))
    root_hash = json.loads(files["root-verity-sig"].read_bytes().rstrip(b"\0"))["rootHash"]
    proc = subprocess.run(
        ["veritysetup", "verify", str(files["root"]), str(files["root-verity"]), root_hash],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.debroot
def test_ddis_are_reproducible_and_resigning_keeps_them(
    ddis: Path, plain: Path, plain_erofs: Path, keys: Keys, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    again.mkdir()
    shutil.copyfile(plain / X86, again / X86)
    shutil.copyfile(plain_erofs, again / ARM)
    sign_verity(again, keys)
    again = signed_dir(again)
    for name in (X86, ARM):
        assert (again / name).read_bytes() == (ddis / name).read_bytes(), name
    assert (again / "SHA256SUMS").read_bytes() == (ddis / "SHA256SUMS").read_bytes()
    # Signing DDIs again with the same cert keeps them as they are.
    proc = sign_verity(again, keys)
    assert "already a DDI signed by this cert" in proc.stderr
    assert (signed_dir(again) / "SHA256SUMS").read_bytes() == (ddis / "SHA256SUMS").read_bytes()


@pytest.mark.debroot
def test_ddis_fail_with_another_cert(
    ddis: Path, keys: Keys, other_keys: Keys, tmp_path: Path
) -> None:
    proc = verify(ddis, keys, "--verity-cert", other_keys.cert)
    assert proc.returncode == 1
    lines = status_lines(proc)
    for name in (X86, ARM):
        assert lines[name] == (
            f"{name}: FAILED: verity signature: signer is not this certificate (verity.crt)"
        )
    # Signing with another verity key does not silently replace a signed DDI.
    d = tmp_path / "images"
    shutil.copytree(ddis, d)
    proc = sign_verity(d, other_keys, check=False)
    assert proc.returncode == 1 and "signer is not this certificate" in proc.stderr
    assert (d / "SHA256SUMS.gpg").read_bytes() == (ddis / "SHA256SUMS.gpg").read_bytes()
    assert not signed_dir(d).exists(), "a failed sign writes no directory"


@pytest.mark.debroot
def test_flipped_payload_byte_fails_verity_even_with_fresh_sums(
    ddis: Path, keys: Keys, tmp_path: Path
) -> None:
    """Someone holding the OpenPGP key but not the verity key cannot change the payload."""
    d = tmp_path / "images"
    shutil.copytree(ddis, d)
    root = next(
        p for p in read_partitions(d / X86) if p.type_guid == PARTITION_TYPES[("x86-64", "root")]
    )
    flip_byte(d / X86, root.offset + root.size // 2)
    sign(d, keys)  # OpenPGP only: SHA256SUMS now matches the tampered image
    proc = verify(signed_dir(d), keys, "--verity-cert", keys.cert)
    assert proc.returncode == 1
    lines = status_lines(proc)
    assert lines[X86] == f"{X86}: FAILED: verity hash tree does not match the data partition"
    assert ": OK" in lines[ARM] and ": OK" in lines["SHA256SUMS.gpg"]


def test_verity_cert_requires_ddis(signed: Path, keys: Keys) -> None:
    proc = verify(signed, keys, "--verity-cert", keys.cert)
    assert proc.returncode == 1
    assert status_lines(proc)[X86].endswith("not a verity-signed DDI (--verity-cert requires one)")


# --- enforcement in a booted host ---------------------------------------------------------

# Trusts our cert in userspace (/run/verity.d; the kernel keyring would need a signed kernel),
# then merges each image under a policy that requires verity signatures.
ENFORCE_GUEST = r"""
mkdir -p /run/verity.d /run/extensions
cp $WSX_DIR/verity.crt /run/verity.d/wasm-sysexts.crt
try() {  # try CASE IMAGE: merge under the policy, run wasmtime, unmerge
    ln -sf "$WSX_DIR/$2" /run/extensions/wasmtime.raw
    systemd-sysext merge --image-policy=root=signed+absent:usr=signed+absent >/run/merge 2>&1
    merge=$?
    /usr/bin/wasmtime --version >/run/run 2>&1
    ran=$?
    m=$(wsx_b64 /run/merge); r=$(wsx_b64 /run/run)
    f="{\"case\": \"$1\", \"merge\": $merge, \"run\": $ran"
    wsx_frame "$f, \"merge_out_b64\": \"$m\", \"run_out_b64\": \"$r\"}"
    systemd-sysext unmerge >/dev/null 2>&1
    rm -f /run/extensions/wasmtime.raw
}
try signed signed.raw
try other-key other-key.raw
try unsigned plain.raw
try signed-again signed.raw
"""


@pytest.mark.vm
@pytest.mark.debroot
def test_host_merges_only_images_signed_by_our_cert(
    ddis: Path, plain: Path, keys: Keys, other_keys: Keys, tmp_path: Path
) -> None:
    from pipeline.vm import qemu, reference

    # The reference VM carries libcryptsetup, through which systemd opens verity DDIs.
    assert "libcryptsetup12" in reference.PACKAGES
    image = reference.reference_vm(VM_CACHE)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copyfile(plain / X86, other / X86)
    sign_verity(other, other_keys)
    other = signed_dir(other)
    payload = tmp_path / "payload"
    payload.mkdir()
    shutil.copyfile(ddis / X86, payload / "signed.raw")
    shutil.copyfile(other / X86, payload / "other-key.raw")
    shutil.copyfile(plain / X86, payload / "plain.raw")
    shutil.copyfile(keys.cert, payload / "verity.crt")
    result = qemu.boot(image, payload, ENFORCE_GUEST, timeout=300)
    assert result.finished, result.stopped_at + result.console[-3000:]
    cases = {str(f["case"]): f for f in result.frames if "case" in f}
    for name in ("signed", "signed-again"):
        assert cases[name]["merge"] == 0 and cases[name]["run"] == 0, cases[name]
        assert str(cases[name]["run_out"]).startswith("wasmtime ")
    for name in ("other-key", "unsigned"):
        assert cases[name]["merge"] != 0 and cases[name]["run"] != 0, cases[name]
    assert "Image does not match image policy" in str(cases["unsigned"]["merge_out"])
    assert "Failed to merge" in str(cases["other-key"]["merge_out"])


def mkfs_descendants(root: int) -> list[int]:
    """PIDs of mksquashfs/mkfs.erofs processes below process `root`."""
    parent: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        pid, rest = int(entry.name), stat.rsplit(")", 1)
        names[pid] = stat[stat.index("(") + 1 : stat.rindex(")")]
        parent[pid] = int(rest[1].split()[1])

    def below(pid: int) -> bool:
        while pid > 1:
            pid = parent.get(pid, 0)
            if pid == root:
                return True
        return False

    return [p for p, n in names.items() if n in ("mksquashfs", "mkfs.erofs") and below(p)]


@pytest.mark.debroot
def test_cli_killed_while_repart_builds_a_ddi_leaves_no_mkfs_running(
    plain: Path, keys: Keys, tmp_path: Path
) -> None:
    """systemd-repart starts mksquashfs itself, out of reach of the death signal the CLI
    gives its own children; the PID namespace it runs in takes its children along."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "sign",
            str(plain),
            "--out",
            str(tmp_path / "out"),
            "--gpg-key",
            str(keys.gpg),
            "--verity-key",
            str(keys.verity_key),
            "--verity-cert",
            str(keys.cert),
            "--cache",
            str(VM_CACHE),
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    found: list[int] = []
    while proc.poll() is None and time.monotonic() < deadline and not found:
        found = mkfs_descendants(proc.pid)
        time.sleep(0.02)
    assert found, "repart's mkfs was never seen running"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1)
    alive = [pid for pid in found if Path(f"/proc/{pid}").exists()]
    assert alive == [], "mkfs outlived the CLI"

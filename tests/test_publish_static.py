"""`publish static`: the tree, its sums, signatures and index.json; atomic, serialized and
idempotent publishing; tampered input refused before anything is written."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.cli import run_cli
from support.registry_images import NAME, V1, V2, sign_into

from pipeline.core.artifacts import read_sums
from pipeline.core.fs import sha256_file
from pipeline.sign import openpgp

BASE = "http://127.0.0.1:8080/ext"


def publish(
    src: Path, dest: Path, key: tuple[Path, Path], *extra: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "publish",
        "static",
        "--allow-unsigned",
        src,
        "--dest",
        dest,
        "--gpg-key",
        key[0],
        "--keyring",
        key[1],
        *extra,
        check=check,
    )


def snapshot(dest: Path) -> dict[str, object]:
    """Everything a reader of `dest` can observe: link target and every file's bytes."""
    files = {
        str(p.relative_to(dest)): p.read_bytes() for p in sorted(dest.rglob("*")) if p.is_file()
    }
    return {"link": os.readlink(dest) if dest.is_symlink() else None, "files": files}


def test_publish_v1_then_v2(
    tmp_path: Path, signed_images: dict[str, Path], publish_key: tuple[Path, Path]
) -> None:
    dest = tmp_path / "www" / "ext"
    proc = publish(signed_images[V1], dest, publish_key, "--base-url", BASE)
    assert proc.stdout.strip() == f"{NAME}: {V1}"
    assert dest.is_symlink()
    ext = dest / NAME
    images = {f"{NAME}-{V1}-x86-64.raw", f"{NAME}-{V1}-arm64.raw"}
    attestations = {
        i.removesuffix(".raw") + suffix
        for i in images
        for suffix in (".spdx.json", ".intoto.jsonl")
    }
    assert {p.name for p in ext.iterdir()} == images | attestations | {
        "SHA256SUMS",
        "SHA256SUMS.gpg",
    }
    assert read_sums(ext / "SHA256SUMS") == read_sums(signed_images[V1] / "SHA256SUMS")
    assert openpgp.verify_detached(
        (ext / "SHA256SUMS").read_bytes(),
        (ext / "SHA256SUMS.gpg").read_bytes(),
        publish_key[1].read_bytes(),
    )

    transfer = (dest / "sysupdate.d" / f"{NAME}.transfer").read_text()
    assert (dest / "sysupdate.d" / f"{NAME}.conf").read_text() == transfer
    for line in (
        "Verify=yes",
        "Type=url-file",
        f"Path={BASE}/{NAME}/",
        f"MatchPattern={NAME}-@v-%a.raw",
        "Type=regular-file",
        f"Path=/opt/extensions/{NAME}",
        f"CurrentSymlink=/etc/extensions/{NAME}.raw",
        "InstancesMax=3",
    ):
        assert line in transfer.splitlines()
    assert (dest / "import-pubring.gpg").read_bytes() == publish_key[1].read_bytes()

    v1_link = os.readlink(dest)
    proc = publish(signed_images[V2], dest, publish_key)  # the base URL is remembered in index.json
    assert proc.stdout.strip() == f"{NAME}: {V2}, {V1}"
    assert os.readlink(dest) != v1_link
    sums = read_sums(ext / "SHA256SUMS")
    assert sums == {
        **read_sums(signed_images[V1] / "SHA256SUMS"),
        **read_sums(signed_images[V2] / "SHA256SUMS"),
    }
    for file, digest in sums.items():
        assert sha256_file(ext / file) == digest
    # The merged manifest is new, so it was re-signed with --gpg-key.
    assert openpgp.verify_detached(
        (ext / "SHA256SUMS").read_bytes(),
        (ext / "SHA256SUMS.gpg").read_bytes(),
        publish_key[1].read_bytes(),
    )

    index = json.loads((dest / "index.json").read_text())
    entry = index["extensions"][NAME]
    assert index["base_url"] == BASE
    assert entry["latest"] == V2
    assert [v["version"] for v in entry["versions"]] == [V2, V1]
    x86 = entry["versions"][0]["arches"]["x86-64"]
    stem = x86["file"].removesuffix(".raw")
    sbom, provenance = f"{stem}.spdx.json", f"{stem}.intoto.jsonl"
    assert x86 == {
        "file": f"{NAME}-{V2}-x86-64.raw",
        "sha256": sums[x86["file"]],
        "size": (ext / x86["file"]).stat().st_size,
        "url": f"{BASE}/{NAME}/{x86['file']}",
        "sbom": {"file": sbom, "sha256": sums[sbom], "url": f"{BASE}/{NAME}/{sbom}"},
        "provenance": {
            "file": provenance,
            "sha256": sums[provenance],
            "url": f"{BASE}/{NAME}/{provenance}",
        },
    }
    # The extension's directory verifies as a whole, provenance included.
    verified = run_cli("verify", ext, "--keyring", publish_key[1])
    assert verified.returncode == 0, verified.stdout
    assert f"{provenance}: OK (sha256 matches; SLSA provenance signed by" in verified.stdout
    assert set(entry["versions"][1]["arches"]) == {"x86-64", "arm64"}
    bu = (dest / entry["butane"]).read_text()
    assert f"sha256-{x86['sha256']}" in bu and "/etc/systemd/import-pubring.pgp" in bu
    # Unsigned, and said so: no certificate, no policy, a warning in the config and on stderr.
    assert "# WARNING: published with --allow-unsigned." in bu
    assert "verity.d" not in bu and "image-policy" not in bu
    assert "--allow-unsigned: the Butane configs install no verity certificate" in proc.stderr
    assert index["image_policy"] is None and index["verity_certificates"] == []

    # Idempotent: the same publish again writes nothing, not even a new generation.
    before = snapshot(dest)
    generations = sorted(p.name for p in (dest.parent / ".ext.generations").iterdir())
    proc = publish(signed_images[V2], dest, publish_key)
    assert "already up to date" in proc.stderr
    assert snapshot(dest) == before
    assert sorted(p.name for p in (dest.parent / ".ext.generations").iterdir()) == generations


def test_keep_prunes_oldest_by_sysupdate_order(
    tmp_path: Path, signed_images: dict[str, Path], publish_key: tuple[Path, Path]
) -> None:
    dest = tmp_path / "ext"
    publish(signed_images[V1], dest, publish_key, "--base-url", BASE)
    publish(signed_images[V2], dest, publish_key, "--keep", "1")
    assert sorted(read_sums(dest / NAME / "SHA256SUMS")) == sorted(
        f"{NAME}-{V2}-{arch}{suffix}"
        for arch in ("arm64", "x86-64")
        for suffix in (".raw", ".spdx.json", ".intoto.jsonl")
    )
    assert not list((dest / NAME).glob(f"*{V1}*"))


def test_signature_reused_when_manifest_unchanged_and_required_otherwise(
    tmp_path: Path, signed_images: dict[str, Path], publish_key: tuple[Path, Path]
) -> None:
    dest = tmp_path / "ext"
    # No --gpg-key: v1 alone merges into exactly its signed manifest, whose signature is kept.
    run_cli(
        "publish",
        "static",
        "--allow-unsigned",
        signed_images[V1],
        "--dest",
        dest,
        "--keyring",
        publish_key[1],
        "--base-url",
        BASE,
        check=True,
    )
    assert (dest / NAME / "SHA256SUMS.gpg").read_bytes() == (
        signed_images[V1] / "SHA256SUMS.gpg"
    ).read_bytes()
    before = snapshot(dest)
    proc = run_cli(
        "publish",
        "static",
        "--allow-unsigned",
        signed_images[V2],
        "--dest",
        dest,
        "--keyring",
        publish_key[1],
    )
    assert proc.returncode == 1
    assert "pass --gpg-key" in proc.stderr
    assert snapshot(dest) == before


def test_verity_certificate_is_required_unless_unsigned_is_allowed(
    tmp_path: Path, signed_images: dict[str, Path], publish_key: tuple[Path, Path]
) -> None:
    """Without --verity-cert, publish reads keys/verity.crt of the checkout it runs in; a tree
    hosts would refuse is refused before anything is written."""
    args: tuple[str | Path, ...] = ("publish", "static", signed_images[V1], "--dest")
    args += (tmp_path / "www", "--base-url", BASE)
    args += ("--gpg-key", publish_key[0], "--keyring", publish_key[1])
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    proc = run_cli(*args, cwd=checkout)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "wasm-sysexts: error: keys/verity.crt: missing (the default --verity-cert); pass "
        "--verity-cert FILE, or --allow-unsigned to publish images hosts do not verify"
    ]
    run_cli("keys", "generate", "--out", checkout / "keys", check=True)
    proc = run_cli(*args, cwd=checkout)
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()
    image = signed_images[V1] / f"{NAME}-{V1}-arm64.raw"
    assert line.startswith(f"wasm-sysexts: error: {image}: not a verity-signed DDI"), line
    proc = run_cli(*args, "--allow-unsigned", "--verity-cert", checkout / "keys/verity.crt")
    assert proc.returncode == 1
    assert "--allow-unsigned: publishes without --verity-cert; give one, not both" in proc.stderr
    assert not (tmp_path / "www").exists()


@pytest.mark.parametrize("damage", ["image", "signature", "unlisted"])
def test_tampered_input_refused_before_anything_is_written(
    tmp_path: Path, signed_images: dict[str, Path], publish_key: tuple[Path, Path], damage: str
) -> None:
    dest = tmp_path / "ext"
    publish(signed_images[V1], dest, publish_key, "--base-url", BASE)
    before = snapshot(dest)
    bad = shutil.copytree(signed_images[V2], tmp_path / "bad")
    image = bad / f"{NAME}-{V2}-x86-64.raw"
    if damage == "image":
        data = bytearray(image.read_bytes())
        data[len(data) // 2] ^= 0xFF
        image.write_bytes(bytes(data))
        expected = f"{image}: sha256"
    elif damage == "signature":
        (bad / "SHA256SUMS").write_text(
            (bad / "SHA256SUMS")
            .read_text()
            .replace(
                f"{NAME}-{V2}-arm64.raw", f"{NAME}-{V2}-arm64.raw\n" + "0" * 64 + "  extra.raw"
            )
        )
        expected = "SHA256SUMS.gpg: BAD signature"
    else:
        shutil.copy(image, bad / f"{NAME}-9.9.9-x86-64.raw")
        expected = "not listed in"
    proc = publish(bad, dest, publish_key, check=False)
    assert proc.returncode == 1, proc.stderr
    assert expected in proc.stderr
    assert snapshot(dest) == before
    assert not list((tmp_path / ".ext.generations").glob(".tmp-*"))


def test_killed_publish_leaves_previous_tree_intact(
    tmp_path: Path, signed_images: dict[str, Path], publish_key: tuple[Path, Path]
) -> None:
    dest = tmp_path / "ext"
    publish(signed_images[V1], dest, publish_key, "--base-url", BASE)
    before = snapshot(dest)
    unsigned = shutil.copytree(signed_images[V1], tmp_path / "unsigned")
    with open(unsigned / f"{NAME}-2.0.0-x86-64.raw", "wb") as f:
        f.write(b"hsqs")  # a squashfs magic, for sign; the rest is sparse: quick to hash,
        f.truncate(2 << 30)  # slow enough to copy to kill mid-way
    big = sign_into(run_cli, unsigned, tmp_path / "big", publish_key[0])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "publish",
            "static",
            "--allow-unsigned",
            str(big),
            "--dest",
            str(dest),
            "--gpg-key",
            str(publish_key[0]),
            "--keyring",
            str(publish_key[1]),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    gens = tmp_path / ".ext.generations"
    deadline = time.monotonic() + 120
    partial: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None and not partial:
        partial = [p for p in gens.glob(f".tmp-*/{NAME}/*2.0.0*") if p.stat().st_size > 0]
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert partial, "the publish finished before it could be killed mid-copy"
    assert snapshot(dest) == before
    # The next publish clears the debris and completes.
    publish(big, dest, publish_key)
    assert not list(gens.glob(".tmp-*"))
    assert f"{NAME}-2.0.0-x86-64.raw" in read_sums(dest / NAME / "SHA256SUMS")


def test_concurrent_publishes_are_serialized(
    tmp_path: Path, signed_images: dict[str, Path], publish_key: tuple[Path, Path]
) -> None:
    dest = tmp_path / "ext"
    publish(signed_images[V1], dest, publish_key, "--base-url", BASE)
    lock = open(tmp_path / ".ext.lock", "a")  # noqa: SIM115 - held across the check below
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        waiting = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline",
                "publish",
                "static",
                "--allow-unsigned",
                str(signed_images[V2]),
                "--dest",
                str(dest),
                "--gpg-key",
                str(publish_key[0]),
                "--keyring",
                str(publish_key[1]),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(3)
        assert waiting.poll() is None, waiting.communicate()
        assert f"{NAME}-{V2}" not in (dest / NAME / "SHA256SUMS").read_text()
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
    _, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    assert "waiting for another publish" in err

    # Two real publishes at once: both land, neither loses the other's images.
    renamed = shutil.copytree(signed_images[V1], tmp_path / "renamed")
    for image in renamed.glob("*.raw"):
        image.rename(image.with_name(image.name.replace(NAME, "wsxother")))
    for meta in renamed.glob("*.json"):
        meta.unlink()  # it describes the wsxhello image the bytes came from
    other = sign_into(run_cli, renamed, tmp_path / "other", publish_key[0])
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline",
                "publish",
                "static",
                "--allow-unsigned",
                str(src),
                "--dest",
                str(dest),
                "--gpg-key",
                str(publish_key[0]),
                "--keyring",
                str(publish_key[1]),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for src in (other, signed_images[V2])
    ]
    for p in procs:
        p.communicate(timeout=120)
        assert p.returncode == 0
    index = json.loads((dest / "index.json").read_text())
    assert sorted(index["extensions"]) == [NAME, "wsxother"]
    assert [v["version"] for v in index["extensions"][NAME]["versions"]] == [V2, V1]


def test_plain_directory_dest_is_swapped_atomically(
    tmp_path: Path, signed_images: dict[str, Path], publish_key: tuple[Path, Path]
) -> None:
    first = tmp_path / "first"
    publish(signed_images[V1], first, publish_key, "--base-url", BASE)
    dest = tmp_path / "webroot"
    shutil.copytree(first, dest, symlinks=False)  # e.g. a tree restored from a backup
    publish(signed_images[V2], dest, publish_key)
    assert dest.is_symlink()
    assert len(read_sums(dest / NAME / "SHA256SUMS")) == 4 * 3  # images, SBOMs, provenance
    previous = list((tmp_path / ".webroot.generations").glob("*-previous"))
    assert len(previous) == 1 and (previous[0] / NAME / f"{NAME}-{V1}-x86-64.raw").is_file()


def test_first_publish_needs_base_url(
    tmp_path: Path, signed_images: dict[str, Path], publish_key: tuple[Path, Path]
) -> None:
    proc = publish(signed_images[V1], tmp_path / "ext", publish_key, check=False)
    assert proc.returncode == 1
    assert "--base-url: required" in proc.stderr
    assert not (tmp_path / "ext").exists()


def test_publish_butane_reads_only_its_tree(
    tmp_path: Path, signed_images: dict[str, Path], publish_key: tuple[Path, Path]
) -> None:
    """`publish butane` writes what the tree's index says, and nothing from outside it."""
    dest = tmp_path / "www"
    publish(signed_images[V1], dest, publish_key, "--allow-unsigned", "--base-url", BASE)
    out = tmp_path / "host.bu"
    run_cli("publish", "butane", dest, "--arch", "arm64", "--out", out, check=True)
    assert f"{NAME}-{V1}-arm64.raw" in out.read_text()
    index = json.loads((dest / "index.json").read_text())
    index["verity_certificates"] = [{"file": "../../../etc/hostname", "sha256": "0" * 64}]
    live = dest.resolve()
    (live / "index.json").write_text(json.dumps(index))
    proc = run_cli("publish", "butane", dest, "--out", tmp_path / "evil.bu")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"wasm-sysexts: error: {dest / 'index.json'}: names '../../../etc/hostname', which is "
        "outside the tree"
    ]
    (live / "index.json").write_text(json.dumps({"extensions": {NAME: {}}}))
    proc = run_cli("publish", "butane", dest)
    assert proc.stderr.splitlines() == [
        f"wasm-sysexts: error: {dest / 'index.json'}: not an index publish static wrote"
    ]
    assert not (tmp_path / "evil.bu").exists()

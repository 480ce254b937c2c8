"""Flatcar target without a Flatcar download: the committed signing key, the Ignition config
(checked by ignition-validate), and download + DIGESTS signature verification against a
locally signed fake release tree served on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import IO, Any, cast

import pytest
from support.mirror import Mirror

from pipeline.core.errors import PipelineError
from pipeline.smoke.payloads import hello_oci_tar, hello_wasm_module
from pipeline.vm import flatcar
from pipeline.vm.ignition import smoke_config

VERSION = "4593.2.5"
IMAGE_BYTES = b"QFI\xfb fake flatcar qcow2 image\n" * 1000


def gpg(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "gpg",
            "--homedir",
            str(home),
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            *args,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
    )


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A throwaway signing key: (gpg home, exported public key, primary fingerprint)."""
    home = tmp_path_factory.mktemp("gpg")
    home.chmod(0o700)
    gpg(
        home,
        "--quick-gen-key",
        "Fake Flatcar Buildbot <fake@example.invalid>",
        "rsa2048",
        "sign",
        "never",
    )
    fpr = next(
        line.split(":")[9]
        for line in gpg(home, "--with-colons", "--list-keys").stdout.splitlines()
        if line.startswith("fpr:")
    )
    public = home / "public.asc"
    public.write_text(gpg(home, "--armor", "--export", fpr).stdout)
    return home, public, fpr


def digests(data: bytes) -> str:
    name = flatcar.IMAGE
    return (
        f"# MD5 HASH\n{hashlib.md5(data).hexdigest()}  {name}\n"
        f"# SHA1 HASH\n{hashlib.sha1(data).hexdigest()}  {name}\n"
        f"# SHA512 HASH\n{hashlib.sha512(data).hexdigest()}  {name}\n"
    )


def publish(mirror: Mirror, home: Path, channel: str, image: bytes, text: str) -> None:
    base = flatcar.release_url(channel, VERSION)
    mirror.put(base + flatcar.IMAGE, image)
    signed = gpg(home, "--clearsign", "--armor", "--output", "-", stdin=text).stdout
    mirror.put(base + flatcar.IMAGE + ".DIGESTS.asc", signed.encode())
    mirror.put(
        flatcar.release_url(channel, "current", "version.txt"),
        f"FLATCAR_BUILD=4593\nFLATCAR_VERSION={VERSION}\n".encode(),
    )


def test_committed_key_is_flatcars(tmp_path: Path) -> None:
    home = tmp_path / "g"
    home.mkdir(mode=0o700)
    gpg(home, "--import", str(flatcar.default_keyring()))
    listing = gpg(home, "--with-colons", "--list-keys").stdout.splitlines()
    assert next(ln.split(":")[9] for ln in listing if ln.startswith("fpr:")) == flatcar.FINGERPRINT


def test_good_tree_verifies_and_is_cached(
    tmp_path: Path, mirror: Mirror, signer: tuple[Path, Path, str]
) -> None:
    home, public, fpr = signer
    publish(mirror, home, "beta", IMAGE_BYTES, digests(IMAGE_BYTES))
    args: dict[str, Any] = dict(
        cache_dir=tmp_path,
        channel="beta",
        version="current",
        mirror=mirror.url,
        keyring=public,
        fingerprint=fpr,
    )
    image = flatcar.verified_image(**args)
    assert image.read_bytes() == IMAGE_BYTES and VERSION in str(image)
    path = "/beta.release.flatcar-linux.net/amd64-usr/" + VERSION + "/" + flatcar.IMAGE
    hits = mirror.hits[path]
    assert flatcar.verified_image(**args) == image
    assert mirror.hits[path] == hits, "a verified cached image is not downloaded again"


def test_tampered_image_is_refused(
    tmp_path: Path, mirror: Mirror, signer: tuple[Path, Path, str]
) -> None:
    home, public, fpr = signer
    publish(mirror, home, "alpha", IMAGE_BYTES + b"evil", digests(IMAGE_BYTES))
    with pytest.raises(PipelineError, match="does not match the signed DIGESTS"):
        flatcar.verified_image(tmp_path, "alpha", VERSION, mirror.url, public, fpr)
    cached = tmp_path / "flatcar" / "alpha" / "x86-64" / VERSION
    assert sorted(p.name for p in cached.iterdir() if p.name != ".lock") == [
        flatcar.IMAGE + ".DIGESTS.asc"
    ], "only the verified DIGESTS stays; no image"


def test_tampered_or_foreign_signature_is_refused(
    tmp_path: Path, mirror: Mirror, signer: tuple[Path, Path, str]
) -> None:
    home, public, fpr = signer
    publish(mirror, home, "lts", IMAGE_BYTES, digests(IMAGE_BYTES))
    url = flatcar.release_url("lts", VERSION, flatcar.IMAGE + ".DIGESTS.asc")
    signed = mirror.root / url.split("://", 1)[1]
    good = signed.read_text()
    # Signature intact, content changed: a different hash for the image.
    signed.write_text(good.replace(hashlib.sha512(IMAGE_BYTES).hexdigest(), "0" * 128))
    with pytest.raises(PipelineError, match="bad or missing signature"):
        flatcar.verified_image(tmp_path, "lts", VERSION, mirror.url, public, fpr)
    # Good signature, but by a key that is not Flatcar's (the default fingerprint).
    signed.write_text(good)
    with pytest.raises(PipelineError, match=f"not {flatcar.FINGERPRINT}"):
        flatcar.verified_image(tmp_path, "lts", VERSION, mirror.url, public)
    # The real Flatcar key does not accept our fake signature at all.
    with pytest.raises(PipelineError, match="bad or missing signature"):
        flatcar.verified_image(tmp_path, "lts", VERSION, mirror.url, flatcar.default_keyring())


def test_bad_channel_and_version() -> None:
    with pytest.raises(PipelineError, match="--channel"):
        flatcar.release_url("edge", VERSION)
    with pytest.raises(PipelineError, match="--flatcar-version"):
        flatcar.resolve_version("stable", "latest", None)


def test_ignition_config_validates(tmp_path: Path) -> None:
    config: dict[str, Any] = smoke_config(
        [("wasmtime", "wasmtime-49.0.4-x86-64.raw"), ("wazero", "wazero-1.9.0-x86-64.raw")]
    )
    path = tmp_path / "ignition.json"
    path.write_text(json.dumps(config, indent=2))
    proc = subprocess.run(["ignition-validate", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    links = {ln["path"]: ln["target"] for ln in config["storage"]["links"]}
    assert links["/etc/extensions/wazero.raw"] == "/run/wsx/images/wazero-1.9.0-x86-64.raw"
    units = {u["name"]: u for u in config["systemd"]["units"]}
    assert units["update-engine.service"]["mask"] and units["locksmithd.service"]["mask"]
    assert units["wsx-guest.service"]["enabled"]


def test_builtin_hello_and_oci_image(tmp_path: Path) -> None:
    from support.payloads import HELLO_OUTPUT, wasmtime_binary

    wasm = tmp_path / "hello.wasm"
    wasm.write_bytes(hello_wasm_module())
    runner = tmp_path / "wasmtime"
    runner.write_bytes(wasmtime_binary().read_bytes())
    runner.chmod(0o755)
    proc = subprocess.run([str(runner), "run", str(wasm)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == HELLO_OUTPUT + "\n", proc.stderr
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(hello_oci_tar(wasm.read_bytes()))) as tar:
        # Every member is a regular file, so extractfile() never returns None here.
        files = {m.name: cast(IO[bytes], tar.extractfile(m)).read() for m in tar.getmembers()}
    index = json.loads(files["index.json"])
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    manifest = json.loads(files["blobs/sha256/" + index["manifests"][0]["digest"][7:]])
    config = json.loads(files["blobs/sha256/" + manifest["config"]["digest"][7:]])
    assert config["config"]["Entrypoint"] == ["/hello.wasm"]

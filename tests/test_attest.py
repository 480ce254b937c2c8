"""SBOM and provenance of every image: SPDX 2.3 documents checked by the SPDX project's own
validator (spdx-tools' pyspdxtools), byte-identical on rebuild, naming the files, inputs, tools
and the Wasm engine a shim embeds; SLSA provenance in a DSSE envelope signed by `sign`,
accepted by `wasm-sysexts verify` and refused once tampered with."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support.cli import run_cli
from support.mirror import Mirror
from support.payloads import WASMTIME_VERSION
from support.registry_images import make_key
from support.sources import shim_image

from pipeline.core.artifacts import read_sums

IMAGE = f"wasmtime-{WASMTIME_VERSION}-x86-64.raw"
# Beside the image, named so that sysupdate's <name>-@v-%a.raw never matches them.
SBOM = IMAGE.replace(".raw", ".spdx.json")
PROVENANCE = IMAGE.replace(".raw", ".intoto.jsonl")


def build(recipes: Path, mirror: Mirror, work: Path, out: Path) -> Path:
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
        "--quiet",
        check=True,
    )
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, recipes: Path, mirror: Mirror) -> Path:
    work = tmp_path_factory.mktemp("attest")
    return build(recipes, mirror, work, work / "out")


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_key(tmp_path_factory.mktemp("attest-key"))


@pytest.fixture(scope="module")
def signed(built: Path, key: tuple[Path, Path]) -> Path:
    out = built.with_name("signed")
    run_cli("sign", built, "--out", out, "--gpg-key", key[0], check=True)
    return out


def validate(document: Path) -> None:
    """The SPDX validator must accept the document: it parses it into the SPDX model and
    validates it, exiting non-zero with the problems listed otherwise (checked to do so on a
    broken license expression and a file without checksums)."""
    proc = subprocess.run(["pyspdxtools", "-i", str(document)], capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stdout + proc.stderr, proc.stdout + proc.stderr


def packages(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["SPDXID"]: p for p in doc["packages"]}


def test_sbom_is_valid_spdx_listing_files_inputs_and_tools(built: Path, tmp_path: Path) -> None:
    validate(built / SBOM)
    doc = json.loads((built / SBOM).read_text())
    assert doc["spdxVersion"] == "SPDX-2.3" and doc["name"] == IMAGE
    meta = json.loads((built / f"{IMAGE}.json").read_text())
    pkgs = packages(doc)
    image = pkgs["SPDXRef-Image"]
    assert (image["name"], image["versionInfo"]) == ("wasmtime", WASMTIME_VERSION)
    assert image["licenseDeclared"] == meta["recipe"]["license"]
    # Every regular file of the image, with the sha256 the image really holds.
    tree = tmp_path / "tree"
    subprocess.run(["unsquashfs", "-q", "-n", "-d", str(tree), str(built / IMAGE)], check=True)
    on_disk = {
        f"./{p.relative_to(tree).as_posix()}": hashlib.sha256(p.read_bytes()).hexdigest()
        for p in tree.rglob("*")
        if p.is_file() and not p.is_symlink()
    }
    listed = {
        f["fileName"]: next(
            c["checksumValue"] for c in f["checksums"] if c["algorithm"] == "SHA256"
        )
        for f in doc["files"]
    }
    assert listed == on_disk and "./usr/bin/wasmtime" in listed
    [source] = meta["inputs"]
    [archive] = [p for p in pkgs.values() if p.get("primaryPackagePurpose") == "ARCHIVE"]
    assert archive["downloadLocation"] == source["url"]
    assert archive["checksums"] == [{"algorithm": "SHA256", "checksumValue": source["sha256"]}]
    tools = {
        p["name"]: p["versionInfo"]
        for p in pkgs.values()
        if p["SPDXID"].startswith("SPDXRef-Tool-")
    }
    assert tools == meta["tools"] and tools["squashfs"].startswith("mksquashfs ")
    kinds = {(r["spdxElementId"], r["relationshipType"]) for r in doc["relationships"]}
    assert ("SPDXRef-DOCUMENT", "DESCRIBES") in kinds
    assert ("SPDXRef-Image", "GENERATED_FROM") in kinds
    assert doc["creationInfo"]["created"] == "1970-01-01T00:00:00Z"  # SOURCE_DATE_EPOCH
    assert (
        read_sums(built / "SHA256SUMS")[SBOM]
        == hashlib.sha256((built / SBOM).read_bytes()).hexdigest()
    )


def test_sbom_is_byte_identical_on_rebuild(
    built: Path, recipes: Path, mirror: Mirror, tmp_path: Path
) -> None:
    again = build(recipes, mirror, tmp_path, tmp_path / "out")
    assert (again / SBOM).read_bytes() == (built / SBOM).read_bytes()


@pytest.mark.source
def test_shim_sbom_names_the_engine_it_embeds(mirror: Mirror) -> None:
    image = shim_image(mirror)
    sbom = image.with_suffix(".spdx.json")
    validate(sbom)
    doc = json.loads(sbom.read_text())
    engines = {
        (p["name"], p["versionInfo"]): p
        for p in doc["packages"]
        if p["SPDXID"].startswith("SPDXRef-Engine-")
    }
    # runwasi 0.6.0 locks wasmtime 27.0.0; the binary's crate paths say the same.
    assert ("wasmtime", "27.0.0") in engines, sorted(engines)
    wasmtime = engines[("wasmtime", "27.0.0")]
    assert "crate paths" in wasmtime["comment"] and "Cargo.lock" in wasmtime["comment"]
    assert wasmtime["externalRefs"][0]["referenceLocator"] == "pkg:cargo/wasmtime@27.0.0"
    [source] = [p for p in doc["packages"] if p["SPDXID"].startswith("SPDXRef-Source-")]
    assert "85aa9a228095af749083d338002a0abbd3c5241d" in source["comment"]  # the git tree pin


def statement_of(envelope: Path) -> dict[str, Any]:
    data = json.loads(envelope.read_text())
    return dict(json.loads(base64.b64decode(data["payload"])))


def test_provenance_is_signed_and_verifies(
    signed: Path, built: Path, key: tuple[Path, Path]
) -> None:
    sums = read_sums(signed / "SHA256SUMS")
    assert {IMAGE, SBOM, PROVENANCE} <= set(sums)
    envelope = json.loads((signed / PROVENANCE).read_text())
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    statement = statement_of(signed / PROVENANCE)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert {s["name"]: s["digest"]["sha256"] for s in statement["subject"]} == {
        IMAGE: sums[IMAGE],
        SBOM: sums[SBOM],
    }
    build_def = statement["predicate"]["buildDefinition"]
    meta = json.loads((built / f"{IMAGE}.json").read_text())
    assert build_def["externalParameters"]["recipe"] == "wasmtime.yaml"
    deps = build_def["resolvedDependencies"]
    assert {
        "uri": meta["inputs"][0]["url"],
        "digest": {"sha256": meta["inputs"][0]["sha256"]},
    } in deps
    assert {"name": "recipe:wasmtime.yaml", "digest": {"sha256": meta["recipe"]["sha256"]}} in deps
    builder = statement["predicate"]["runDetails"]["builder"]
    assert builder["id"] == "https://wasm-sysexts.dev/builder/cli"

    whole = run_cli("verify", signed, "--keyring", key[1])
    assert whole.returncode == 0, whole.stdout + whole.stderr
    assert f"{PROVENANCE}: OK (sha256 matches; SLSA provenance signed by" in whole.stdout
    one = run_cli("verify", signed / PROVENANCE, "--keyring", key[1])
    assert one.returncode == 0, one.stdout + one.stderr
    print(f"\n--- verify {PROVENANCE}:\n{one.stdout}")


def copy_signed(signed: Path, target: Path) -> Path:
    target.mkdir()
    for path in signed.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def test_tampered_provenance_is_refused(
    signed: Path, key: tuple[Path, Path], tmp_path: Path
) -> None:
    # A statement edited after signing (another image digest claimed), envelope re-encoded.
    edited = copy_signed(signed, tmp_path / "edited")
    data = json.loads((edited / PROVENANCE).read_text())
    body = statement_of(edited / PROVENANCE)
    body["subject"][0]["digest"]["sha256"] = "0" * 64
    data["payload"] = base64.b64encode(json.dumps(body).encode()).decode()
    (edited / PROVENANCE).write_text(json.dumps(data) + "\n")
    proc = run_cli("verify", edited / PROVENANCE, "--keyring", key[1])
    assert proc.returncode == 1
    assert f"{PROVENANCE}: FAILED: provenance: signature: BAD signature" in proc.stdout, proc.stdout
    print(f"\n--- verify of a tampered {PROVENANCE}:\n{proc.stdout}")

    # The SBOM swapped after signing: the signed statement's subject no longer matches.
    swapped = copy_signed(signed, tmp_path / "swapped")
    (swapped / SBOM).write_text((swapped / SBOM).read_text().replace("wasmtime", "wasmtimf"))
    proc = run_cli("verify", swapped / PROVENANCE, "--keyring", key[1])
    assert proc.returncode == 1
    assert f"provenance: subject {SBOM}: sha256 differs from the signed statement" in proc.stdout

    # Signed by a key the keyring does not hold.
    _, other = make_key(tmp_path / "other-key")
    proc = run_cli("verify", signed / PROVENANCE, "--keyring", other)
    assert proc.returncode == 1 and "not made by a key in" in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no-subject", "provenance: the signed statement names no subject"),
        ("twice", f"provenance: subject {SBOM} is named twice"),
        ("not-its-image", f"provenance: the signed statement does not name {IMAGE}, the image"),
    ],
)
def test_statement_must_name_its_own_image_once(
    signed: Path, key: tuple[Path, Path], tmp_path: Path, case: str, expected: str
) -> None:
    """Signed by our own key, yet wrong: no subject, one named twice (the last would win), or
    a statement that does not attest the image this file sits beside."""
    from pipeline.attest.provenance import envelope
    from pipeline.core.secret import SecretSpec
    from pipeline.sign.openpgp import Signer

    forged = copy_signed(signed, tmp_path / case)
    body = statement_of(forged / PROVENANCE)
    subjects = body["subject"]
    body["subject"] = {
        "no-subject": [],
        "twice": [*subjects, *[s for s in subjects if s["name"] == SBOM]],
        "not-its-image": [s for s in subjects if s["name"] != IMAGE],
    }[case]
    signer = Signer(SecretSpec("--gpg-key", file=key[0]))
    (forged / PROVENANCE).write_bytes(envelope(body, signer, "test statement"))
    proc = run_cli("verify", forged / PROVENANCE, "--keyring", key[1])
    assert proc.returncode == 1
    assert f"{PROVENANCE}: FAILED: {expected}" in proc.stdout, proc.stdout


def test_engines_come_from_the_package_dependency_graph_not_the_whole_workspace() -> None:
    """runwasi's workspace lock holds every shim's engine; each shim's graph holds only its
    own, and every crates.io crate it builds in (what the SBOM lists)."""
    import tarfile
    import tomllib

    from support.sources import RUNWASI, archive

    from pipeline.build.source import _reachable

    with tarfile.open(archive(RUNWASI)) as tar:
        member = tar.extractfile("runwasi-containerd-shim-wasmtime-v0.6.0/Cargo.lock")
        assert member is not None
        entries = tomllib.loads(member.read().decode())["package"]
    engines = {"wasmtime", "wasmer", "wasmedge-sdk", "wasmedge-sys"}

    def engines_of(package: str) -> dict[str, str]:
        return {n: v for n, v in _reachable(entries, package) if n in engines}

    assert engines_of("containerd-shim-wasmtime") == {"wasmtime": "27.0.0"}
    assert engines_of("containerd-shim-wasmer") == {"wasmer": "5.0.2"}
    assert engines_of("containerd-shim-wasmedge") == {
        "wasmedge-sdk": "0.14.0",
        "wasmedge-sys": "0.19.4",
    }
    graph = _reachable(entries, "containerd-shim-wasmtime")
    assert ["cranelift-codegen", "0.114.0"] in graph and len(graph) > 200
    # The workspace's own (path) crates are the source, not dependencies.
    assert not {n for n, _ in graph} & {"containerd-shim-wasmtime", "containerd-shim-wasm"}

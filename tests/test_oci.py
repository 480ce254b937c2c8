"""`publish oci` / `pull oci` against a real registry (Debian's docker-registry 2.8) on
127.0.0.1, read back by our client, skopeo and the oras Python SDK; idempotent pushes,
fault injection (500s, connection resets), auth (htpasswd over TLS, token, Docker config).

docker-registry 2.8 has no referrers API (GET /v2/<name>/referrers/<digest> is a 404), so
these tests exercise the referrers tag schema fallback (`sha256-<hex>`)."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from support.cli import run_cli
from support.gotools import oras_binary
from support.mirror import Mirror
from support.registry import FaultProxy, Registry
from support.registry_images import NAME, V1, V2, make_key

from pipeline.core.artifacts import read_sums
from pipeline.publish.oci.client import INDEX, MANIFEST
from pipeline.publish.oci.layout import ARTIFACT_TYPE, LAYER_TYPE, SIGNATURE_TYPE


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry(tmp_path / "registry") as reg:
        yield reg


@pytest.fixture
def proxy(registry: Registry) -> Iterator[FaultProxy]:
    with FaultProxy(registry.host) as p:
        yield p


def push(
    host: str, src: Path, *extra: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "publish",
        "oci",
        src,
        "--repository",
        f"{host}/wsx",
        "--insecure",
        *extra,
        env=env,
        check=check,
        timeout=300,
    )


def manifest(host: str, ref: str) -> tuple[dict[str, Any], str]:
    resp = requests.get(
        f"http://{host}/v2/wsx/{NAME}/manifests/{ref}",
        headers={"Accept": f"{MANIFEST}, {INDEX}"},
        timeout=10,
    )
    assert resp.status_code == 200, (ref, resp.status_code)
    return resp.json(), "sha256:" + hashlib.sha256(resp.content).hexdigest()


def test_push_then_pull_with_our_client_skopeo_and_oras(
    tmp_path: Path,
    registry: Registry,
    signed_images: dict[str, Path],
    publish_key: tuple[Path, Path],
) -> None:
    push(registry.host, signed_images[V1], "--keyring", str(publish_key[1]))
    proc = push(registry.host, signed_images[V2], "--tag-latest", "--json")
    pushed = {r["reference"].rsplit(":", 1)[1]: r["digest"] for r in json.loads(proc.stdout)}
    assert set(pushed) == {f"{V2}-x86-64", f"{V2}-arm64", V2, "latest"}
    sums = read_sums(signed_images[V2] / "SHA256SUMS")
    image_file = f"{NAME}-{V2}-x86-64.raw"
    original = (signed_images[V2] / image_file).read_bytes()

    # Layout: per-arch artifact manifest, one layer = the image, digest = its SHA256SUMS entry.
    doc, digest = manifest(registry.host, f"{V2}-x86-64")
    assert digest == pushed[f"{V2}-x86-64"]
    assert doc["artifactType"] == ARTIFACT_TYPE
    assert doc["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    [layer] = doc["layers"]
    assert layer["mediaType"] == LAYER_TYPE
    assert layer["digest"] == "sha256:" + sums[image_file]
    assert layer["annotations"]["org.opencontainers.image.title"] == image_file
    assert doc["annotations"]["dev.wasm-sysexts.sysext.version"] == V2
    assert doc["annotations"]["dev.wasm-sysexts.sysext.arch"] == "x86-64"
    assert doc["annotations"]["org.opencontainers.image.source"] == f"https://example.org/{NAME}"
    index, index_digest = manifest(registry.host, V2)
    assert index_digest == pushed[V2] == pushed["latest"]
    assert {
        (m["platform"]["os"], m["platform"]["architecture"]): m["digest"]
        for m in index["manifests"]
    } == {("linux", "amd64"): pushed[f"{V2}-x86-64"], ("linux", "arm64"): pushed[f"{V2}-arm64"]}
    # No referrers API in distribution 2.8: the signature sits behind the fallback tag.
    resp = requests.get(f"http://{registry.host}/v2/wsx/{NAME}/referrers/{digest}", timeout=10)
    assert resp.status_code == 404
    referrers, _ = manifest(registry.host, "sha256-" + digest.split(":")[1])
    by_type = {m["artifactType"]: m for m in referrers["manifests"]}
    assert set(by_type) == {
        SIGNATURE_TYPE,
        "application/spdx+json",
        "application/vnd.dsse.envelope.v1+json",
    }
    sig = by_type[SIGNATURE_TYPE]
    sig_doc, _ = manifest(registry.host, sig["digest"])
    assert sig_doc["subject"]["digest"] == digest

    # Our client: by version (index -> arch) and by digest.
    out = tmp_path / "ours"
    proc = run_cli(
        "pull",
        "oci",
        f"{registry.host}/wsx/{NAME}:{V2}",
        "--out",
        out,
        "--arch",
        "x86-64",
        "--keyring",
        publish_key[1],
        "--insecure",
        check=True,
    )
    assert proc.stdout.strip() == str(out / image_file)
    assert (out / image_file).read_bytes() == original
    assert (out / "SHA256SUMS").read_bytes() == (signed_images[V2] / "SHA256SUMS").read_bytes()
    run_cli(
        "pull",
        "oci",
        f"{registry.host}/wsx/{NAME}@{pushed[f'{V2}-arm64']}",
        "--out",
        out,
        "--keyring",
        publish_key[1],
        "--insecure",
        check=True,
    )
    assert (out / f"{NAME}-{V2}-arm64.raw").read_bytes() == (
        signed_images[V2] / f"{NAME}-{V2}-arm64.raw"
    ).read_bytes()

    # skopeo: inspect (raw: the non-raw form refuses non-image artifacts) and copy.
    ref = f"docker://{registry.host}/wsx/{NAME}:{V2}-x86-64"
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", ref], capture_output=True, check=True
    ).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", ref, f"dir:{tmp_path / 'dir'}"],
        capture_output=True,
        check=True,
    )
    assert (tmp_path / "dir" / sums[image_file]).read_bytes() == original
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--all",
            "--src-tls-verify=false",
            f"docker://{registry.host}/wsx/{NAME}:{V2}",
            f"oci:{tmp_path / 'oci'}:{V2}",
        ],
        capture_output=True,
        check=True,
    )
    blob = tmp_path / "oci" / "blobs" / "sha256" / sums[image_file]
    assert blob.read_bytes() == original

    # The oras Python SDK.
    import oras.client  # type: ignore[import-untyped]  # the oras SDK ships no py.typed

    files = oras.client.OrasClient(hostname=registry.host, insecure=True).pull(
        target=f"{registry.host}/wsx/{NAME}:{V2}-x86-64", outdir=str(tmp_path / "oras")
    )
    assert [Path(f).name for f in files] == [image_file]
    assert Path(files[0]).read_bytes() == original


def test_pull_refuses_wrong_key_and_corrupt_blob(
    tmp_path: Path,
    registry: Registry,
    signed_images: dict[str, Path],
    publish_key: tuple[Path, Path],
) -> None:
    push(registry.host, signed_images[V1])
    _, other = make_key(tmp_path / "other-key")
    ref = f"{registry.host}/wsx/{NAME}:{V1}-x86-64"
    proc = run_cli("pull", "oci", ref, "--out", tmp_path / "a", "--keyring", other, "--insecure")
    assert proc.returncode == 1
    assert "no valid signature" in proc.stderr and "not made by a key" in proc.stderr
    assert not list((tmp_path / "a").glob("*.raw"))

    digest = read_sums(signed_images[V1] / "SHA256SUMS")[f"{NAME}-{V1}-x86-64.raw"]
    data = registry.root / "storage/docker/registry/v2/blobs/sha256" / digest[:2] / digest / "data"
    data.write_bytes(data.read_bytes()[:-1] + b"X")
    proc = run_cli(
        "pull", "oci", ref, "--out", tmp_path / "b", "--keyring", publish_key[1], "--insecure"
    )
    assert proc.returncode == 1
    assert f"expected sha256:{digest}" in proc.stderr
    assert not list((tmp_path / "b").glob("*.raw"))


def test_second_push_uploads_nothing(
    registry: Registry, proxy: FaultProxy, signed_images: dict[str, Path]
) -> None:
    push(proxy.host, signed_images[V1])
    first = proxy.count("POST", r"/blobs/uploads/$")
    # empty config, two images, SHA256SUMS, its signature, two SBOMs, two provenance files
    assert first == 9
    before = dict(proxy.counts)
    proc = push(proxy.host, signed_images[V1])
    assert "0 blob(s) uploaded" in proc.stderr
    new = {k: v - before.get(k, 0) for k, v in proxy.counts.items() if v != before.get(k, 0)}
    assert not [k for k in new if k[0] in ("POST", "PUT", "PATCH")], new


def test_transient_faults_are_retried(
    tmp_path: Path,
    registry: Registry,
    proxy: FaultProxy,
    signed_images: dict[str, Path],
    publish_key: tuple[Path, Path],
) -> None:
    image = f"{NAME}-{V1}-x86-64.raw"
    layer = read_sums(signed_images[V1] / "SHA256SUMS")[image]

    resets: list[int] = []

    def rule(method: str, path: str, n: int, length: int) -> str | None:
        if method == "POST" and path.endswith("/blobs/uploads/") and n <= 2:
            return "500"
        if method == "PUT" and "/blobs/uploads/" in path and length >= 4096 and not resets:
            resets.append(length)
            return "reset"  # mid-blob: half the body read, then the connection dropped
        if method == "PUT" and "/manifests/" in path and n == 1:
            return "500"
        return None

    proxy.rule = rule
    proc = push(proxy.host, signed_images[V1])
    assert "retry" in proc.stderr
    assert resets, "no blob large enough to be cut mid-way"
    assert [a for *_, a in proxy.log].count("500") >= 3
    proxy.rule = lambda *a: None
    run_cli(
        "pull",
        "oci",
        f"{registry.host}/wsx/{NAME}:{V1}",
        "--out",
        tmp_path / "out",
        "--arch",
        "x86-64",
        "--keyring",
        publish_key[1],
        "--insecure",
        check=True,
    )
    assert hashlib.sha256((tmp_path / "out" / image).read_bytes()).hexdigest() == layer


def test_persistent_failure_leaves_tags_alone(
    registry: Registry, proxy: FaultProxy, signed_images: dict[str, Path]
) -> None:
    push(proxy.host, signed_images[V1], "--tag-latest")
    latest = manifest(registry.host, "latest")[1]
    proxy.rule = lambda method, path, n, length: "500" if "/blobs/uploads/" in path else None
    proc = push(proxy.host, signed_images[V2], "--tag-latest", check=False)
    assert proc.returncode == 1
    assert "gave up after" in proc.stderr and "HTTP 500" in proc.stderr
    assert len(proc.stderr.strip().splitlines()[-1]) < 300
    assert manifest(registry.host, "latest")[1] == latest
    tags = requests.get(f"http://{registry.host}/v2/wsx/{NAME}/tags/list", timeout=10).json()
    assert not [t for t in tags["tags"] if t.startswith(V2)]


def test_htpasswd_over_tls_docker_config_and_wrong_password(
    tmp_path: Path, signed_images: dict[str, Path], publish_key: tuple[Path, Path]
) -> None:
    secret = "pa55-w0rd-never-shown"
    with Registry(tmp_path / "reg", tls=True, users={"alice": secret}) as reg:
        assert reg.ca is not None
        env = {"REQUESTS_CA_BUNDLE": str(reg.ca), "REG_PW": secret}
        args: list[str | Path] = [
            "publish",
            "oci",
            signed_images[V1],
            "--repository",
            f"{reg.host}/wsx",
        ]
        proc = run_cli(*args, "--username", "alice", "--password-env", "REG_PW", env=env)
        assert proc.returncode == 0, proc.stderr
        assert secret not in proc.stdout + proc.stderr

        docker = tmp_path / "docker"
        docker.mkdir()
        auth = base64.b64encode(f"alice:{secret}".encode()).decode()
        (docker / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
        proc = run_cli(
            "pull",
            "oci",
            f"{reg.host}/wsx/{NAME}:{V1}-x86-64",
            "--out",
            tmp_path / "out",
            "--keyring",
            publish_key[1],
            env={"REQUESTS_CA_BUNDLE": str(reg.ca), "DOCKER_CONFIG": str(docker)},
        )
        assert proc.returncode == 0, proc.stderr

        env["REG_PW"] = "wrong-" + secret
        proc = run_cli(*args, "--username", "alice", "--password-env", "REG_PW", env=env)
        assert proc.returncode == 1
        assert "401 Unauthorized" in proc.stderr
        assert secret not in proc.stdout + proc.stderr

        proc = run_cli(*args, env={"REQUESTS_CA_BUNDLE": str(reg.ca)})
        assert proc.returncode == 1 and "credentials needed" in proc.stderr

        # Without the CA, TLS verification fails clearly; --insecure skips it.
        proc = run_cli(
            *args, "--username", "alice", "--password-env", "REG_PW", env={"REG_PW": secret}
        )
        assert proc.returncode == 1 and "TLS failed" in proc.stderr
        proc = run_cli(
            *args,
            "--insecure",
            "--username",
            "alice",
            "--password-env",
            "REG_PW",
            env={"REG_PW": secret},
        )
        assert proc.returncode == 0, proc.stderr


def test_bearer_token_auth(
    tmp_path: Path,
    registry: Registry,
    signed_images: dict[str, Path],
    publish_key: tuple[Path, Path],
) -> None:
    with FaultProxy(registry.host, token_user=("bob", "tok-secret")) as proxy:
        proc = push(
            proxy.host,
            signed_images[V1],
            "--username",
            "bob",
            "--password-env",
            "PW",
            env={"PW": "tok-secret"},
        )
        assert f"repository:wsx/{NAME}:pull,push" in proxy.scopes
        assert "tok-secret" not in proc.stderr
        proc = push(
            proxy.host,
            signed_images[V1],
            "--username",
            "bob",
            "--password-env",
            "PW",
            env={"PW": "nope"},
            check=False,
        )
        assert proc.returncode == 1 and "token request: HTTP 401" in proc.stderr


def test_docker_registry_lacks_referrers_api(registry: Registry) -> None:
    """Documents why the fallback tag schema is what these tests exercise."""
    resp = requests.get(f"http://{registry.host}/v2/x/referrers/sha256:{'0' * 64}", timeout=10)
    assert resp.status_code == 404
    assert shutil.which("docker-registry")


def test_failed_tag_write_puts_moved_tags_back(
    tmp_path: Path,
    registry: Registry,
    proxy: FaultProxy,
    mirror: Mirror,
    signed_images: dict[str, Path],
    publish_key: tuple[Path, Path],
) -> None:
    from support.registry_images import sign_into, write_recipe

    push(proxy.host, signed_images[V1])
    before = {a: manifest(registry.host, f"{V1}-{a}")[1] for a in ("x86-64", "arm64")}
    # The same version rebuilt with other bytes: pushing it moves its existing arch tags.
    recipes = write_recipe(mirror, tmp_path / "recipes").parent
    run_cli(
        "build",
        NAME,
        "--version",
        V1,
        "--arch",
        "x86-64",
        "--arch",
        "arm64",
        "--recipes",
        recipes,
        "--mirror",
        mirror.url,
        "--cache",
        tmp_path / "cache",
        "--out",
        tmp_path / "rebuilt",
        env={"SOURCE_DATE_EPOCH": "86400"},
        check=True,
    )
    rebuilt = sign_into(run_cli, tmp_path / "rebuilt", tmp_path / "signed", publish_key[0])
    proxy.rule = lambda method, path, n, length: (
        "500" if method == "PUT" and path.endswith(f"/manifests/{V1}") else None
    )
    proc = push(proxy.host, rebuilt, check=False)
    assert proc.returncode == 1
    assert f"/v2/wsx/{NAME}/manifests/{V1}: HTTP 500" in proc.stderr
    assert "(tags moved before it were put back)" in proc.stderr, proc.stderr
    assert {a: manifest(registry.host, f"{V1}-{a}")[1] for a in before} == before
    # A tag that did not exist is deleted again; distribution 2.8 cannot delete a tag, so the
    # error names each one left behind.
    proxy.rule = lambda method, path, n, length: (
        "500" if method == "PUT" and path.endswith(f"/manifests/{V2}") else None
    )
    proc = push(proxy.host, signed_images[V2], check=False)
    assert proc.returncode == 1
    assert (
        f"could not put back wsx/{NAME}:{V2}-arm64, wsx/{NAME}:{V2}-x86-64"
        in proc.stderr.replace(
            f"wsx/{NAME}:{V2}-x86-64, wsx/{NAME}:{V2}-arm64",
            f"wsx/{NAME}:{V2}-arm64, wsx/{NAME}:{V2}-x86-64",
        )
    ), proc.stderr


@pytest.mark.gotool
def test_sbom_and_provenance_are_referrers_oras_discovers(
    tmp_path: Path, registry: Registry, signed_images: dict[str, Path]
) -> None:
    """Each image manifest has its SBOM and its signed provenance attached as referrers: the
    real oras CLI lists them (through the referrers tag schema this registry needs) and pulls
    them back byte-identical."""
    oras = str(oras_binary())
    push(registry.host, signed_images[V2])
    image = f"{NAME}-{V2}-x86-64.raw"
    _, subject = manifest(registry.host, f"{V2}-x86-64")
    proc = subprocess.run(
        [
            oras,
            "discover",
            "--plain-http",
            "--distribution-spec",
            "v1.1-referrers-tag",
            "--format",
            "json",
            f"{registry.host}/wsx/{NAME}@{subject}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    referrers = found.get("referrers", found.get("manifests", []))
    by_type = {r["artifactType"]: r for r in referrers}
    assert set(by_type) == {
        SIGNATURE_TYPE,
        "application/spdx+json",
        "application/vnd.dsse.envelope.v1+json",
    }, referrers
    tree = subprocess.run(
        [
            oras,
            "discover",
            "--plain-http",
            "--distribution-spec",
            "v1.1-referrers-tag",
            f"{registry.host}/wsx/{NAME}@{subject}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    print(f"\n--- oras discover {NAME}:{V2}-x86-64:\n{tree}")
    stem = image.removesuffix(".raw")
    for kind, file in (
        ("application/spdx+json", f"{stem}.spdx.json"),
        ("application/vnd.dsse.envelope.v1+json", f"{stem}.intoto.jsonl"),
    ):
        out = tmp_path / kind.replace("/", "_")
        subprocess.run(
            [
                oras,
                "pull",
                "--plain-http",
                "-o",
                str(out),
                f"{registry.host}/wsx/{NAME}@{by_type[kind]['digest']}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert (out / file).read_bytes() == (signed_images[V2] / file).read_bytes(), file

"""Every function of the Dagger module (.dagger/) executed on a real Dagger engine, driven
through the dagger-io client exactly as `dagger call` drives it: the module class is
instantiated inside a connection and its functions are awaited or exported.

The engine comes from `_EXPERIMENTAL_DAGGER_RUNNER_HOST` (.ci/run starts the shared engine
tool) or, on a runner with Docker, from dagger-io itself. Without one these tests fail: a
skip would hide what they prove. Containers use `DAGGER_ENGINE_BASE_IMAGE` when it is set
(docker.io may be out of reach); the upstream mirror and an OCI registry run as Dagger
services bound into the module's containers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import dagger
import pytest
from conftest import run_cli, wasmtime_recipe
from dagger import dag
from support.mirror import Mirror
from support.payloads import WASMTIME_VERSION
from support.recipes import tiny_tarball
from support.registry_images import NAME, V2, write_recipe
from support.vm_payloads import VM_CACHE
from wasm_sysexts import main as module

from pipeline.core.artifacts import read_sums
from pipeline.core.debroot import debian_root, run_in_root

pytestmark = pytest.mark.dagger
ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = os.environ.get("DAGGER_ENGINE_BASE_IMAGE") or module.BASE_IMAGE
MIRROR = "http://mirror:8000"
T = TypeVar("T")


def run(body: Callable[[], Awaitable[T]], log: Path | None = None) -> T:
    """`body()` inside one engine connection; the engine's progress output goes to `log`."""
    async def main() -> T:
        with open(log or os.devnull, "w") as out:
            async with dagger.connection(dagger.Config(log_output=out, timeout=None)):
                return await body()

    return anyio.run(main)


def mirror_service(root: Path) -> dagger.Service:
    """The test mirror's files, served over HTTP by a container (the engine cannot reach the
    host's 127.0.0.1)."""
    return (dag.container().from_(BASE_IMAGE)
            .with_directory("/srv", dag.host().directory(str(root)))
            .with_workdir("/srv").with_exposed_port(8000)
            .as_service(args=["python3", "-m", "http.server", "8000", "--bind", "0.0.0.0"]))


def registry_service() -> dagger.Service:
    """Debian's docker-registry (distribution 2.8), as the OCI tests use on the host."""
    config = ("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/registry\n"
              "http:\n  addr: 0.0.0.0:5000\n")  # no auth (Debian's default config has some)
    return (dag.container().from_(BASE_IMAGE)
            .with_exec(["sh", "-c", "apt-get update -q && apt-get install -y -q "
                        "--no-install-recommends docker-registry"])
            .with_new_file("/etc/wsx-registry.yml", config)
            .with_exposed_port(5000)
            .as_service(args=["docker-registry", "serve", "/etc/wsx-registry.yml"]))


def module_instance(mirror: Mirror | None = None,
                    registry: dagger.Service | None = None) -> module.WasmSysexts:
    source = dag.host().directory(str(ROOT), include=module.SOURCE_INCLUDE,
                                  exclude=["**/__pycache__"])
    return module.WasmSysexts(source=source, base_image=BASE_IMAGE,
                              mirror_service=mirror_service(mirror.root) if mirror else None,
                              registry_service=registry)


def host_dir(path: Path) -> dagger.Directory:
    return dag.host().directory(str(path))


@pytest.fixture(scope="module")
def dagger_recipes(tmp_path_factory: pytest.TempPathFactory, mirror: Mirror) -> Path:
    """wasmtime (both arches), wsxhello (both arches) and tiny (x86-64 only), pinned."""
    directory = tmp_path_factory.mktemp("dagger-recipes")
    (directory / "wasmtime.yaml").write_text(wasmtime_recipe(mirror))
    write_recipe(mirror, directory)
    url = "https://example.org/tiny/v1.0/tiny.tar.gz"
    mirror.put(url, tiny_tarball())
    (directory / "tiny.yaml").write_text(f"""\
name: tiny
summary: an x86-64 only test payload
homepage: https://example.org/tiny
license: MIT
version: "1.0"
versions:
  "1.0":
    x86-64: {{url: "{url}", sha256: "{hashlib.sha256(tiny_tarball()).hexdigest()}"}}
    arm64: {{unavailable: "test recipe: x86-64 only"}}
install:
  - {{from: "tiny/bin/tiny", to: /usr/bin/tiny, mode: "0755"}}
smoke:
  - "tiny"
""")
    return directory


def cli_in_trixie(args: list[str], binds: dict[Path, str]) -> None:
    """The CLI run from this checkout in a Debian trixie root: the userland (mksquashfs,
    zstd, cmake and gcc for source builds) the module's trixie containers have."""
    root = debian_root(VM_CACHE, "trixie", [
        "python3", "python3-yaml", "python3-requests", "python3-cryptography",
        "python3-anyio", "python3-urllib3", "squashfs-tools", "erofs-utils", "zstd",
        "ca-certificates", "cmake", "make", "gcc", "g++", "git"])
    run_in_root(root, ["python3", "-m", "pipeline", *args], {ROOT: "/src", **binds},
                env={"PYTHONPATH": "/src"}, what="wasm-sysexts in trixie")


def test_dagger_build_is_byte_identical_to_the_cli(dagger_recipes: Path, mirror: Mirror,
                                                   tmp_path: Path) -> None:
    image = f"wasmtime-{WASMTIME_VERSION}-x86-64.raw"

    async def body() -> tuple[str, dict[str, Any]]:
        obj = module_instance(mirror)
        file = await obj.build("wasmtime", WASMTIME_VERSION, host_dir(dagger_recipes), "x86-64",
                               mirror=MIRROR)
        await file.export(str(tmp_path / "dagger.raw"))
        meta = await obj._build("wasmtime", host_dir(dagger_recipes).file("wasmtime.yaml"),
                                ["--version", WASMTIME_VERSION, "--arch", "x86-64"], MIRROR)
        sbom = await meta.file(f"/out/{image.replace('.raw', '.spdx.json')}").contents()
        return sbom, json.loads(await meta.file(f"/out/{image}.json").contents())

    dagger_sbom, dagger_meta = run(body)
    for made in ("cli", "dl"):
        (tmp_path / made).mkdir()
    cli_in_trixie(["build", "wasmtime", "--recipes", "/recipes", "--mirror", mirror.url,
                   "--cache", "/dl", "--out", "/out", "--arch", "x86-64"],
                  {dagger_recipes: "/recipes", tmp_path / "cli": "/out", tmp_path / "dl": "/dl"})
    cli_meta = json.loads((tmp_path / "cli" / f"{image}.json").read_text())
    assert dagger_meta["tools"] == cli_meta["tools"], "compare only builds with one toolchain"
    dagger_sha = hashlib.sha256((tmp_path / "dagger.raw").read_bytes()).hexdigest()
    assert dagger_sha == cli_meta["image"]["sha256"] == dagger_meta["image"]["sha256"]
    # The SBOM too: same files, inputs and tools, whoever ran the build.
    assert dagger_sbom == (tmp_path / "cli" / image.replace(".raw", ".spdx.json")).read_text()
    print(f"\n--- {image}: Dagger build sha256 {dagger_sha} == the CLI's in trixie; "
          "SBOMs byte-identical")


def test_dagger_build_all_fans_out_per_recipe_and_arch(dagger_recipes: Path, mirror: Mirror,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "all"
    async def build_all(recipes: Path) -> None:
        built = await module_instance(mirror).build_all(host_dir(recipes), mirror=MIRROR)
        await built.export(str(out))

    run(lambda: build_all(dagger_recipes))
    images = sorted(p.name for p in out.glob("*.raw"))
    assert images == sorted([f"wasmtime-{WASMTIME_VERSION}-x86-64.raw",
                             f"wasmtime-{WASMTIME_VERSION}-arm64.raw",
                             f"{NAME}-{V2}-x86-64.raw", f"{NAME}-{V2}-arm64.raw",
                             "tiny-1.0-x86-64.raw"])
    sboms = [i.replace(".raw", ".spdx.json") for i in images]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*images, *(f"{i}.json" for i in images), *sboms, "SHA256SUMS"])
    sums = read_sums(out / "SHA256SUMS")
    assert sums == {i: hashlib.sha256((out / i).read_bytes()).hexdigest()
                    for i in [*images, *sboms]}
    # The provenance sign makes from this metadata will name the Dagger module as the builder.
    builder = json.loads((out / f"{images[0]}.json").read_text())["builder"]
    assert builder["id"] == "https://wasm-sysexts.dev/builder/dagger"
    assert builder["dagger_engine"].startswith("v0.21.") and builder["base_image"] == BASE_IMAGE

    broken = tmp_path / "broken-recipes"
    shutil.copytree(dagger_recipes, broken)
    text = (broken / "tiny.yaml").read_text().replace("tiny/v1.0/tiny.tar.gz", "gone.tar.gz")
    sha = hashlib.sha256(tiny_tarball()).hexdigest()
    (broken / "tiny.yaml").write_text(text.replace(sha, "1" * 64))  # not in the cache volume
    with pytest.raises(RuntimeError) as info:  # the function's error, after every build ran
        run(lambda: build_all(broken))
    assert "1 of 5 builds failed: tiny x86-64:" in str(info.value)
    assert "gone.tar.gz: HTTP 404" in str(info.value)


def test_dagger_sign_verify_and_publish(dagger_recipes: Path, mirror: Mirror,
                                        tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    run_cli("keys", "generate", "--out", keys, check=True)
    secrets = [ln for name in ("gpg-signing.key", "verity.key")
               for ln in (keys / name).read_text().splitlines()
               if len(ln) >= 40 and not ln.startswith("-----")]
    log = tmp_path / "engine.log"

    async def body() -> tuple[str, str]:
        registry = registry_service()
        obj = module_instance(mirror, registry)
        images = await obj.build_all(host_dir(dagger_recipes), arch=["x86-64"], mirror=MIRROR)
        gpg_key = dag.set_secret("gpg", (keys / "gpg-signing.key").read_text())
        signed = obj.sign(images, gpg_key,
                          dag.set_secret("verity", (keys / "verity.key").read_text()),
                          host_dir(keys).file("verity.crt"))
        await signed.export(str(tmp_path / "signed"))
        report = await obj.verify(signed, host_dir(keys).file("import-pubring.gpg"),
                                  host_dir(keys).file("verity.crt"))
        # Each extension's SHA256SUMS is a new manifest: publish signs it with the key.
        await obj.publish_static(signed, "https://updates.example/sysexts", gpg_key=gpg_key,
                                 keyring=host_dir(keys).file("import-pubring.gpg")
                                 ).export(str(tmp_path / "site"))
        pushed = await obj.publish_oci(signed, "registry:5000/wsx", insecure=True)
        tags = await (dag.container().from_(BASE_IMAGE)
                      .with_service_binding("registry", registry)
                      .with_exec(["python3", "-c", "import urllib.request; print(urllib.request"
                                  f".urlopen('http://registry:5000/v2/wsx/{NAME}/tags/list')"
                                  ".read().decode())"]).stdout())
        # A failing sign (the verity key does not match this certificate): what the engine
        # reports back holds the CLI's error, and no key material.
        other = obj._builder(*module.SIGN_PACKAGES).with_exec(
            ["wasm-sysexts", "keys", "generate", "--out", "/k"])
        try:
            await obj.sign(images, gpg_key, dag.set_secret("v2", (keys / "verity.key")
                                                           .read_text()),
                           other.file("/k/verity.crt")).sync()
        except dagger.ExecError as err:
            failure = f"{err}\n{err.stdout}\n{err.stderr}"
        else:
            raise AssertionError("sign with a mismatched verity certificate succeeded")
        return report, pushed + tags + failure

    report, pushed = run(body, log)
    assert "--verity-key /run/secrets/verity-key: does not match --verity-cert" in pushed
    # SHA256SUMS.gpg, then per image: the DDI, its SBOM and its signed provenance.
    assert report.strip().endswith("all 10 checks OK"), report
    assert "DDI x86-64" in report and "verity signature by CN=wasm-sysexts" in report
    assert report.count("SLSA provenance signed by") == 3
    assert "builder https://wasm-sysexts.dev/builder/dagger" in report
    assert run_cli("verify", tmp_path / "signed", "--keyring", keys / "import-pubring.gpg",
                   "--verity-cert", keys / "verity.crt").returncode == 0
    index = json.loads((tmp_path / "site" / "index.json").read_text())
    assert sorted(index["extensions"]) == ["tiny", "wasmtime", NAME]
    assert (tmp_path / "site" / "sysupdate.d" / f"{NAME}.transfer").is_file()
    assert f"registry:5000/wsx/{NAME}:{V2}-x86-64@sha256:" in pushed
    assert '"tags":' in pushed and f"{V2}-x86-64" in pushed
    engine_output = log.read_text(errors="replace")  # the engine's progress, as dagger shows it
    for line in secrets:
        assert line not in engine_output and line not in report + pushed


def test_dagger_smoke_test_boots_the_reference_vm(dagger_recipes: Path, mirror: Mirror,
                                                  tmp_path: Path) -> None:
    async def body() -> str:
        obj = module_instance(mirror)
        images = await obj.build_all(host_dir(dagger_recipes), arch=["x86-64"], mirror=MIRROR)
        report = await obj.smoke_test(images, host_dir(dagger_recipes), os="reference")
        return await report.contents()

    report = json.loads(run(body))
    assert report["passed"] is True, json.dumps(report, indent=2)[:3000]
    assert [b["arch"] for b in report["boots"]] == ["x86-64"]
    names = {i["name"]: i for i in report["images"]}
    assert names["wasmtime"]["steps"][0]["output"].startswith("wasmtime ")
    assert f"{NAME} {V2}" in names[NAME]["steps"][0]["output"]


def test_dagger_source_build_matches_the_cli(mirror: Mirror, tmp_path: Path) -> None:
    """A CMake source build (WAMR) in the module's toolchain container gives the bytes the
    CLI gives with the same toolchain."""
    from support.sources import serve_sources, wamr_source_recipe

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "wamr.yaml").write_text(wamr_source_recipe(serve_sources(mirror)))
    image = "wamr-2.4.5-x86-64.raw"

    async def body() -> dict[str, Any]:
        obj = module_instance(mirror)
        file = await obj.build("wamr", "2.4.5", host_dir(recipes), "x86-64", mirror=MIRROR,
                               build_from="source")
        await file.export(str(tmp_path / "dagger.raw"))
        ctr = await obj._build("wamr", host_dir(recipes).file("wamr.yaml"),
                               ["--version", "2.4.5", "--arch", "x86-64", "--format",
                                "squashfs", "--from", "source"], MIRROR, from_source=True)
        meta: dict[str, Any] = json.loads(await ctr.file(f"/out/{image}.json").contents())
        return meta

    dagger_meta = run(body)
    for made in ("cli", "dl"):
        (tmp_path / made).mkdir()
    cli_in_trixie(["build", "wamr", "--from", "source", "--recipes", "/recipes", "--mirror",
                   mirror.url, "--cache", "/dl", "--out", "/out", "--arch", "x86-64"],
                  {recipes: "/recipes", tmp_path / "cli": "/out", tmp_path / "dl": "/dl"})
    cli_meta = json.loads((tmp_path / "cli" / f"{image}.json").read_text())
    assert dagger_meta["tools"] == cli_meta["tools"], "compare only builds with one toolchain"
    assert "cmake" in dagger_meta["tools"] and dagger_meta["source"]["kind"] == "cmake"
    assert hashlib.sha256((tmp_path / "dagger.raw").read_bytes()).hexdigest() == \
        cli_meta["image"]["sha256"] == dagger_meta["image"]["sha256"]

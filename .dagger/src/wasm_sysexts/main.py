"""The Dagger module: a thin typed shell that runs the `wasm-sysexts` CLI in a pinned container.

No pipeline logic lives here. Each function starts from `_builder()` (the base image + the
Debian tools a step needs + the CLI installed from this repository), adds its inputs, runs one
CLI command and returns what it wrote, so calls chain (`build-all` -> `sign` -> `verify` ->
`smoke-test` -> `publish-*`). `build_all` runs one container per (recipe, arch), each cached
on that recipe alone, concurrently, and merges them into one Directory.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import anyio
import dagger
from dagger import DefaultPath, Doc, Ignore, ReturnType, dag, function, object_type

# python:3.13-slim-trixie (Python 3.13 on Debian 13), pinned by digest so a release builds in
# the same userland every time; bump deliberately. Air-gapped users and the tests pass their
# own (`--base-image`): docker.io may be out of reach.
BASE_IMAGE = ("docker.io/library/python:3.13-slim-trixie@sha256:"
              "9d2e5553305c7c7b0097999bb17187c69b921ccd6bc9d40e4bb5ebe652c00285")
# Debian packages of every step (the tools the CLI runs); steps add their own.
BUILDER_PACKAGES = ["squashfs-tools", "erofs-utils", "zstd", "ca-certificates", "util-linux"]
SMOKE_PACKAGES = ["qemu-system-x86", "qemu-system-arm", "qemu-efi-aarch64", "qemu-utils",
                  "mmdebstrap", "e2fsprogs", "ovmf", "gnupg", "qemu-user-static",
                  "binfmt-support",
                  # crictl and the reference VM's containerd, built for shim images' CRI pods
                  "golang-go"]
# Source builds (docs/recipes.md): Debian's toolchains, so the Debian build image pins them.
SOURCE_PACKAGES = ["golang-go", "cargo", "rustc", "cmake", "make", "gcc", "g++",
                   "gcc-aarch64-linux-gnu", "g++-aarch64-linux-gnu", "libc6-dev-arm64-cross",
                   "pkg-config", "protobuf-compiler", "libseccomp-dev", "git"]
# Signing: gpg, openssl for PKCS#7 checks, systemd-repart (257 in trixie) for verity DDIs.
SIGN_PACKAGES = ["gnupg", "openssl", "systemd-repart", "libcryptsetup12"]
# Publishing: gpg verifies the input's signature and re-signs merged manifests.
PUBLISH_PACKAGES = ["gnupg"]
# The repository files the CLI is installed from (the `source` directory, filtered).
SOURCE_INCLUDE = ["pyproject.toml", "README.md", "pipeline/**", "sysexts/**", "keys/**"]
SOURCE_IGNORE = ["**", *(f"!{p}" for p in SOURCE_INCLUDE), "**/__pycache__"]
SITE = "/site/tree"  # publish static's --dest inside the container
SECRETS = "/run/secrets"  # secrets are mounted as files here, never put in env vars or args
DOWNLOAD_CACHE = "wasm-sysexts-downloads"
TOOLCHAIN_CACHE = "wasm-sysexts-toolchains"  # Go module/build caches, cargo registry
VM_CACHE = "wasm-sysexts-vm"
OUT = "/out"
ARCHES = ["x86-64", "arm64"]
DAGGER_BUILDER = "https://wasm-sysexts.dev/builder/dagger"  # provenance's builder.id


def _pass_file(ctr: dagger.Container, cmd: list[str], flag: str, path: str,
               value: dagger.Secret | dagger.File | None) -> tuple[dagger.Container, list[str]]:
    """Mount `value` at `path` (a Secret as a secret file, never an env var or argument) and
    hand `flag path` to the CLI; nothing when `value` is None."""
    if value is None:
        return ctr, cmd
    if isinstance(value, dagger.Secret):
        return ctr.with_mounted_secret(path, value), [*cmd, flag, path]
    return ctr.with_file(path, value), [*cmd, flag, path]


@object_type
class WasmSysexts:
    """Build, sign, test and publish WebAssembly runtimes as systemd-sysext images."""

    source: Annotated[
        dagger.Directory,
        Doc("this repository (the pipeline package, recipes and public keys)"),
        DefaultPath("/"),
        Ignore(SOURCE_IGNORE),
    ]
    base_image: Annotated[str, Doc("container image with Debian trixie and python3 (digest "
                                   "pinned); point it at your own registry when air-gapped")
                          ] = BASE_IMAGE
    mirror_service: Annotated[dagger.Service | None,
                              Doc("an upstream mirror run as a service, reachable from every "
                                  "step as http://mirror:<port> (pass that as mirror)")] = None
    registry_service: Annotated[dagger.Service | None,
                                Doc("an OCI registry run as a service, reachable as "
                                    "registry:<port> (e.g. repository registry:5000/ns)")
                                ] = None

    def _builder(self, *packages: str) -> dagger.Container:
        """The build container with the pipeline installed and the download cache."""
        return (
            dag.container()
            .from_(self.base_image)
            .with_env_variable("DEBIAN_FRONTEND", "noninteractive")
            .with_exec(["apt-get", "update", "-q"])
            .with_exec(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                        *BUILDER_PACKAGES, *packages])
            .with_directory("/src", self.source)
            .with_exec(["python3", "-m", "pip", "install", "--no-cache-dir",
                        "--root-user-action=ignore", "--break-system-packages", "/src"])
            .with_mounted_cache("/cache", dag.cache_volume(DOWNLOAD_CACHE))
            .with_env_variable("WASM_SYSEXTS_CACHE", "/cache")
            .with_workdir("/work")
            .with_(self._services)
        )

    def _services(self, ctr: dagger.Container) -> dagger.Container:
        if self.mirror_service is not None:
            ctr = ctr.with_service_binding("mirror", self.mirror_service)
        if self.registry_service is not None:
            ctr = ctr.with_service_binding("registry", self.registry_service)
        return ctr

    async def _engine_version(self) -> str:
        """The running engine's version, asked once per module instance."""
        if not getattr(self, "_engine", ""):
            self._engine = await dag.version()
        return str(self._engine)

    async def _build(self, name: str, recipe: dagger.File, args: list[str], mirror: str,
                     expect: ReturnType = ReturnType.SUCCESS,
                     from_source: bool = False) -> dagger.Container:
        """One image build. Only this recipe's file is mounted: changing another recipe does
        not invalidate this build's cache. A source build gets the toolchains and a cache
        volume for their module, crate and build caches. The build's provenance names this
        module as the builder, with the engine's version and the base image."""
        cmd = ["wasm-sysexts", "build", name, *args, "--recipes", "/recipes", "--out", OUT]
        if mirror:
            cmd += ["--mirror", mirror]
        ctr = (self._builder(*(SOURCE_PACKAGES if from_source else ()))
               .with_env_variable("WASM_SYSEXTS_BUILDER_ID", DAGGER_BUILDER)
               .with_env_variable("WASM_SYSEXTS_DAGGER_ENGINE", await self._engine_version())
               .with_env_variable("WASM_SYSEXTS_BASE_IMAGE", self.base_image))
        if from_source:
            ctr = ctr.with_mounted_cache("/cache/toolchains", dag.cache_volume(TOOLCHAIN_CACHE))
        return ctr.with_file(f"/recipes/{name}.yaml", recipe).with_exec(
            [*cmd, "--json"], expect=expect)

    async def _recipes(self, recipes: dagger.Directory) -> list[dict[str, Any]]:
        """`wasm-sysexts list --json` of `recipes`: names, arches, where each builds from."""
        listing = await (self._builder().with_directory("/recipes", recipes)
                         .with_exec(["wasm-sysexts", "list", "--json", "--recipes", "/recipes"])
                         .stdout())
        rows: list[dict[str, Any]] = json.loads(listing)
        return rows

    @function
    async def build(
        self,
        runtime: Annotated[str, Doc("recipe name, e.g. wasmtime")],
        version: Annotated[str, Doc("version to build; must be listed in the recipe")],
        recipes: Annotated[dagger.Directory, Doc("recipes directory"), DefaultPath("sysexts")],
        arch: Annotated[str, Doc("x86-64 or arm64")] = "x86-64",
        format: Annotated[str, Doc("squashfs or erofs")] = "squashfs",
        mirror: Annotated[str, Doc("fetch https://HOST/PATH from MIRROR/HOST/PATH")] = "",
        build_from: Annotated[str, Doc("release or source (default: the recipe's)")] = "",
    ) -> dagger.File:
        """Build one runtime's sysext image."""
        args = ["--version", version, "--arch", arch, "--format", format]
        if build_from:
            args += ["--from", build_from]
        else:
            rows = {r["name"]: r for r in await self._recipes(recipes)}
            build_from = str(rows.get(runtime, {}).get("from", "release"))
        ctr = await self._build(runtime, recipes.file(f"{runtime}.yaml"), args, mirror,
                                from_source=build_from == "source")
        return ctr.file(f"{OUT}/{runtime}-{version}-{arch}.raw")

    @function
    async def build_all(
        self,
        recipes: Annotated[dagger.Directory, Doc("recipes directory"), DefaultPath("sysexts")],
        arch: Annotated[list[str] | None, Doc("target arches (default: x86-64 and arm64)")] = None,
        format: Annotated[str, Doc("squashfs or erofs")] = "squashfs",
        mirror: Annotated[str, Doc("fetch https://HOST/PATH from MIRROR/HOST/PATH")] = "",
    ) -> dagger.Directory:
        """Build every recipe's image, one container per (recipe, arch), run concurrently and
        cached independently: the .raw images, their .json metadata and one SHA256SUMS.
        Fails, naming each image, when any build failed (after all of them ran)."""
        rows = {row["name"]: row for row in await self._recipes(recipes)}
        jobs = [(name, a) for name, row in rows.items() for a in (arch or ARCHES)
                if row["arches"].get(a) == "available"]
        results: dict[tuple[str, str], tuple[dagger.Container, int, str]] = {}

        async def one(name: str, a: str) -> None:
            ctr = await self._build(name, recipes.file(f"{name}.yaml"),
                                    ["--arch", a, "--format", format], mirror, ReturnType.ANY,
                                    from_source=rows[name]["from"] == "source")
            results[(name, a)] = (ctr, await ctr.exit_code(), await ctr.stdout())

        async with anyio.create_task_group() as group:
            for name, a in jobs:
                group.start_soon(one, name, a)
        merged, sums, failed = dag.directory(), [], []
        for (name, a), (ctr, code, stdout) in sorted(results.items()):
            if code != 0:
                errors = [r.get("error") for r in _json_rows(stdout)] or ["see the build log"]
                failed.append(f"{name} {a}: {'; '.join(str(e) for e in errors)}")
                continue
            out = ctr.directory(OUT)
            merged = merged.with_directory(".", out, exclude=["SHA256SUMS", ".lock", ".~wsx-*"])
            sums.append(await out.file("SHA256SUMS").contents())
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(jobs)} builds failed: " +
                               " | ".join(failed))
        # Each build listed its one image; SHA256SUMS lists them all, sorted by file name.
        lines = sorted({ln for text in sums for ln in text.splitlines() if ln},
                       key=lambda ln: ln.split("  ", 1)[1])
        return merged.with_new_file("SHA256SUMS", "".join(f"{ln}\n" for ln in lines))

    @function
    def sign(
        self,
        images: Annotated[dagger.Directory, Doc("directory of built *.raw images")],
        gpg_key: Annotated[dagger.Secret, Doc("OpenPGP secret key (env://NAME, file://PATH)")],
        verity_key: Annotated[dagger.Secret | None,
                              Doc("PEM RSA key: turn images into verity-signed DDIs")] = None,
        verity_cert: Annotated[dagger.File | None, Doc("PEM certificate of verity_key")] = None,
    ) -> dagger.Directory:
        """A new directory: the images (verity-signed DDIs with a verity key), their metadata,
        SHA256SUMS and SHA256SUMS.gpg."""
        ctr = self._builder(*SIGN_PACKAGES).with_directory("/in", images)
        ctr, cmd = _pass_file(ctr, ["wasm-sysexts", "sign", "/in", "--out", OUT, "--cache",
                                    "/cache"], "--gpg-key", f"{SECRETS}/gpg-key", gpg_key)
        ctr, cmd = _pass_file(ctr, cmd, "--verity-key", f"{SECRETS}/verity-key", verity_key)
        ctr, cmd = _pass_file(ctr, cmd, "--verity-cert", "/keys/verity.crt", verity_cert)
        # systemd-repart runs in a Debian root entered with unshare when the image's is older.
        return ctr.with_exec(cmd, insecure_root_capabilities=True).directory(OUT)

    def _verifier(self, images: dagger.Directory, keyring: dagger.File,
                  verity_cert: dagger.File | None) -> dagger.Container:
        ctr, cmd = _pass_file(self._builder(*SIGN_PACKAGES).with_directory(OUT, images),
                              ["wasm-sysexts", "verify", OUT], "--keyring",
                              "/keys/import-pubring.gpg", keyring)
        ctr, cmd = _pass_file(ctr, cmd, "--verity-cert", "/keys/verity.crt", verity_cert)
        return ctr.with_exec(cmd)

    @function
    async def verify(
        self,
        images: Annotated[dagger.Directory, Doc("signed images with SHA256SUMS(.gpg)")],
        keyring: Annotated[dagger.File, Doc("OpenPGP public keyring (import-pubring.gpg)")],
        verity_cert: Annotated[dagger.File | None,
                               Doc("certificate every image's verity signature must match")
                               ] = None,
    ) -> str:
        """Check signature, hashes and verity signatures; fails on any FAILED file."""
        return await self._verifier(images, keyring, verity_cert).stdout()

    @function
    async def smoke_test(
        self,
        images: Annotated[dagger.Directory, Doc("images of one or both arches")],
        recipes: Annotated[dagger.Directory, Doc("recipes directory"), DefaultPath("sysexts")],
        os: Annotated[str, Doc("flatcar or reference (a Debian trixie VM)")] = "flatcar",
        channel: Annotated[str, Doc("Flatcar channel: stable, beta, alpha or lts")] = "stable",
        arch: Annotated[str, Doc("boot only this arch's images (default: each arch present)")
                        ] = "",
        mirror: Annotated[str, Doc("fetch https://HOST/PATH from MIRROR/HOST/PATH")] = "",
    ) -> dagger.File:
        """Boot a VM per arch with its images, merge them and run each recipe's smoke
        commands. Returns the JSON report; fails with the readable report when an image
        failed."""
        cmd = ["wasm-sysexts", "smoke-test", "/images", "--os", os, "--channel", channel,
               "--recipes", "/recipes", "--cache", "/vm-cache", "--report", "/report.json"]
        if arch:
            cmd += ["--arch", arch]
        if mirror:
            cmd += ["--mirror", mirror]
        # QEMU, mmdebstrap and unshare need root capabilities in the container.
        ctr = (self._builder(*SMOKE_PACKAGES)
               .with_mounted_cache("/vm-cache", dag.cache_volume(VM_CACHE))
               .with_directory("/images", images).with_directory("/recipes", recipes)
               .with_exec(cmd, insecure_root_capabilities=True, expect=ReturnType.ANY))
        if await ctr.exit_code() != 0:  # the readable report, or why there is none
            raise RuntimeError(f"smoke test failed:\n{await ctr.stdout() or await ctr.stderr()}")
        return ctr.file("/report.json")

    def _publish_static(self, images: dagger.Directory, base_url: str,
                        existing: dagger.Directory | None, gpg_key: dagger.Secret | None,
                        keyring: dagger.File | None) -> dagger.Container:
        ctr = self._builder(*PUBLISH_PACKAGES).with_directory("/images", images)
        cmd = ["wasm-sysexts", "publish", "static", "/images", "--dest", SITE, "--base-url",
               base_url]
        if existing is not None:
            # A plain directory: publish swaps it for its generation symlink atomically.
            ctr = ctr.with_directory(SITE, existing)
        ctr, cmd = _pass_file(ctr, cmd, "--gpg-key", f"{SECRETS}/gpg-key", gpg_key)
        ctr, cmd = _pass_file(ctr, cmd, "--keyring", "/keys/import-pubring.gpg", keyring)
        # SITE is a symlink to the new generation; hand back plain files to upload.
        return ctr.with_exec(cmd).with_exec(["cp", "-a", f"{SITE}/.", OUT])

    @function(cache="never")  # type: ignore[call-overload, untyped-decorator]  # dagger-io 0.21 overloads omit cache=
    def publish_static(
        self,
        images: Annotated[dagger.Directory, Doc("signed images: *.raw, SHA256SUMS(.gpg)")],
        base_url: Annotated[str, Doc("URL the returned tree will be served at")],
        existing: Annotated[dagger.Directory | None,
                            Doc("the tree currently served, to merge into")] = None,
        gpg_key: Annotated[dagger.Secret | None,
                           Doc("OpenPGP secret key re-signing merged SHA256SUMS")] = None,
        keyring: Annotated[dagger.File | None,
                           Doc("public keyring verifying the input (default: gpg_key's)")
                           ] = None,
    ) -> dagger.Directory:
        """Merge signed images into a static systemd-sysupdate server tree (docs/publishing.md)."""
        return self._publish_static(images, base_url, existing, gpg_key, keyring).directory(OUT)

    def _publish_oci(self, images: dagger.Directory, repository: str, username: str,
                     password: dagger.Secret | None, tag_latest: bool,
                     insecure: bool) -> dagger.Container:
        ctr = self._builder(*PUBLISH_PACKAGES).with_directory("/images", images)
        cmd = ["wasm-sysexts", "publish", "oci", "/images", "--repository", repository]
        if username:
            cmd += ["--username", username]
        ctr, cmd = _pass_file(ctr, cmd, "--password-file", f"{SECRETS}/registry-password",
                              password)
        if tag_latest:
            cmd.append("--tag-latest")
        if insecure:
            cmd.append("--insecure")
        return ctr.with_exec(cmd)

    @function(cache="never")  # type: ignore[call-overload, untyped-decorator]  # dagger-io 0.21 overloads omit cache=
    async def publish_oci(
        self,
        images: Annotated[dagger.Directory, Doc("signed images: *.raw, SHA256SUMS(.gpg)")],
        repository: Annotated[str, Doc("REGISTRY/NAMESPACE; images go to .../<name>")],
        username: Annotated[str, Doc("registry user (empty: anonymous)")] = "",
        password: Annotated[dagger.Secret | None, Doc("registry password or token")] = None,
        tag_latest: Annotated[bool, Doc("also move the tag latest")] = False,
        insecure: Annotated[bool, Doc("allow plain HTTP (a test registry)")] = False,
    ) -> str:
        """Push every image as an OCI artifact with its signature (docs/oci.md); returns the
        pushed references with their digests."""
        return await self._publish_oci(images, repository, username, password, tag_latest,
                                       insecure).stdout()


def _json_rows(text: str) -> list[dict[str, object]]:
    try:
        rows = json.loads(text)
    except ValueError:
        return []
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []

"""The Dagger module: a thin typed shell that runs the `wasm-sysexts` CLI in a pinned container.

No pipeline logic lives here. Each function starts from `_builder()` (Debian trixie + the tools +
this package), adds its inputs, runs one CLI command and returns the files it wrote.
"""

from __future__ import annotations

from typing import Annotated

import dagger
from dagger import DefaultPath, Doc, Ignore, dag, function, object_type

# python:3.13-slim-trixie (Python 3.13.15 on Debian 13.6), pinned by digest so a release
# builds in the same userland every time; bump deliberately.
BUILDER_IMAGE = ("docker.io/library/python:3.13-slim-trixie@sha256:"
                 "9d2e5553305c7c7b0097999bb17187c69b921ccd6bc9d40e4bb5ebe652c00285")
# Debian packages the CLI runs inside the container; steps add their own.
BUILDER_PACKAGES = ["squashfs-tools", "erofs-utils", "zstd", "ca-certificates"]
SMOKE_PACKAGES = ["qemu-system-x86", "qemu-utils", "mmdebstrap", "e2fsprogs", "ovmf", "gpg"]
# Signing: gpg, openssl for PKCS#7 checks, systemd-repart (257 in trixie) for verity DDIs.
SIGN_PACKAGES = ["gnupg", "openssl", "systemd-repart", "libcryptsetup12"]
# Publishing: gpg verifies the input's signature and re-signs merged manifests.
PUBLISH_PACKAGES = ["gnupg"]
SITE = "/site/tree"  # publish static's --dest inside the container
SECRETS = "/run/secrets"  # secrets are mounted as files here, never put in env vars or args
SOURCE_IGNORE = ["**", "!pyproject.toml", "!README.md", "!pipeline/**", "!sysexts/**",
                 "!keys/**", "**/__pycache__"]
DOWNLOAD_CACHE = "wasm-sysexts-downloads"
OUT = "/out"


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
        DefaultPath("."),
        Ignore(SOURCE_IGNORE),
    ]

    def _builder(self, *packages: str) -> dagger.Container:
        """The pinned build container with the pipeline installed and the download cache."""
        return (
            dag.container()
            .from_(BUILDER_IMAGE)
            .with_env_variable("DEBIAN_FRONTEND", "noninteractive")
            .with_exec(["apt-get", "update", "-q"])
            .with_exec(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                        *BUILDER_PACKAGES, *packages])
            .with_directory("/src", self.source)
            .with_exec(["pip", "install", "--no-cache-dir", "--root-user-action=ignore", "/src"])
            .with_mounted_cache("/cache", dag.cache_volume(DOWNLOAD_CACHE))
            .with_env_variable("WASM_SYSEXTS_CACHE", "/cache")
            .with_workdir("/work")
        )

    def _build(self, args: list[str], recipes: dagger.Directory, mirror: str) -> dagger.Container:
        cmd = ["wasm-sysexts", *args, "--recipes", "/recipes", "--out", OUT]
        if mirror:
            cmd += ["--mirror", mirror]
        return self._builder().with_directory("/recipes", recipes).with_exec(cmd)

    @function
    def build(
        self,
        runtime: Annotated[str, Doc("recipe name, e.g. wasmtime")],
        version: Annotated[str, Doc("version to build; must be listed in the recipe")],
        recipes: Annotated[dagger.Directory, Doc("recipes directory"), DefaultPath("sysexts")],
        arch: Annotated[str, Doc("x86-64 or arm64")] = "x86-64",
        format: Annotated[str, Doc("squashfs or erofs")] = "squashfs",
        mirror: Annotated[str, Doc("fetch https://HOST/PATH from MIRROR/HOST/PATH")] = "",
    ) -> dagger.File:
        """Build one runtime's sysext image."""
        ctr = self._build(["build", runtime, "--version", version, "--arch", arch,
                           "--format", format], recipes, mirror)
        return ctr.file(f"{OUT}/{runtime}-{version}-{arch}.raw")

    @function
    def build_all(
        self,
        recipes: Annotated[dagger.Directory, Doc("recipes directory"), DefaultPath("sysexts")],
        arch: Annotated[list[str] | None, Doc("target arches (default: x86-64 and arm64)")] = None,
        format: Annotated[str, Doc("squashfs or erofs")] = "squashfs",
        jobs: Annotated[int, Doc("images built at once")] = 2,
        mirror: Annotated[str, Doc("fetch https://HOST/PATH from MIRROR/HOST/PATH")] = "",
    ) -> dagger.Directory:
        """Build every recipe's image: the .raw images, their .json metadata and SHA256SUMS."""
        args = ["build-all", "--format", format, "--jobs", str(jobs)]
        for a in arch or ["x86-64", "arm64"]:
            args += ["--arch", a]
        return self._build(args, recipes, mirror).directory(OUT)

    def _smoke(self, images: dagger.Directory, recipes: dagger.Directory, os: str,
               channel: str) -> dagger.Container:
        # QEMU (and mmdebstrap for the reference VM) need root capabilities in the container.
        return (
            self._builder(*SMOKE_PACKAGES)
            .with_directory("/images", images)
            .with_directory("/recipes", recipes)
            .with_exec(["wasm-sysexts", "smoke-test", "/images", "--os", os, "--channel",
                        channel, "--recipes", "/recipes", "--cache", "/cache"],
                       insecure_root_capabilities=True)
        )

    @function
    async def smoke_test(
        self,
        images: Annotated[dagger.Directory, Doc("built images with their .json metadata")],
        recipes: Annotated[dagger.Directory, Doc("recipes directory"), DefaultPath("sysexts")],
        os: Annotated[str, Doc("flatcar or reference (a Debian trixie VM)")] = "flatcar",
        channel: Annotated[str, Doc("Flatcar channel: stable, beta, alpha or lts")] = "stable",
    ) -> str:
        """Boot one VM with every image, merge them and run each recipe's smoke commands."""
        return await self._smoke(images, recipes, os, channel).stdout()

    def _signer(self, images: dagger.Directory) -> dagger.Container:
        return self._builder(*SIGN_PACKAGES).with_directory(OUT, images)

    @function
    def sign(
        self,
        images: Annotated[dagger.Directory, Doc("directory of built *.raw images")],
        gpg_key: Annotated[dagger.Secret, Doc("OpenPGP secret key (env://NAME, file://PATH)")],
        verity_key: Annotated[dagger.Secret | None,
                              Doc("PEM RSA key: turn images into verity-signed DDIs")] = None,
        verity_cert: Annotated[dagger.File | None, Doc("PEM certificate of verity_key")] = None,
    ) -> dagger.Directory:
        """Write SHA256SUMS and SHA256SUMS.gpg; with a verity key, make signed DDIs first."""
        ctr, cmd = _pass_file(self._signer(images), ["wasm-sysexts", "sign", OUT], "--gpg-key",
                              f"{SECRETS}/gpg-key", gpg_key)
        ctr, cmd = _pass_file(ctr, cmd, "--verity-key", f"{SECRETS}/verity-key", verity_key)
        ctr, cmd = _pass_file(ctr, cmd, "--verity-cert", "/keys/verity.crt", verity_cert)
        return ctr.with_exec(cmd).directory(OUT)

    def _verifier(self, images: dagger.Directory, keyring: dagger.File,
                  verity_cert: dagger.File | None) -> dagger.Container:
        ctr, cmd = _pass_file(self._signer(images), ["wasm-sysexts", "verify", OUT],
                              "--keyring", "/keys/import-pubring.gpg", keyring)
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

    @function(cache="never")
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
                     password: dagger.Secret | None, tag_latest: bool) -> dagger.Container:
        ctr = self._builder(*PUBLISH_PACKAGES).with_directory("/images", images)
        cmd = ["wasm-sysexts", "publish", "oci", "/images", "--repository", repository]
        if username:
            cmd += ["--username", username]
        ctr, cmd = _pass_file(ctr, cmd, "--password-file", f"{SECRETS}/registry-password",
                              password)
        if tag_latest:
            cmd.append("--tag-latest")
        return ctr.with_exec(cmd)

    @function(cache="never")
    async def publish_oci(
        self,
        images: Annotated[dagger.Directory, Doc("signed images: *.raw, SHA256SUMS(.gpg)")],
        repository: Annotated[str, Doc("REGISTRY/NAMESPACE; images go to .../<name>")],
        username: Annotated[str, Doc("registry user (empty: anonymous)")] = "",
        password: Annotated[dagger.Secret | None, Doc("registry password or token")] = None,
        tag_latest: Annotated[bool, Doc("also move the tag latest")] = False,
    ) -> str:
        """Push every image as an OCI artifact with its signature (docs/oci.md); returns the
        pushed references with their digests."""
        return await self._publish_oci(images, repository, username, password,
                                       tag_latest).stdout()

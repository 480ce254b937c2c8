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
SECRETS = "/run/secrets"  # secrets are mounted as files here, never put in env vars or args
SOURCE_IGNORE = ["**", "!pyproject.toml", "!README.md", "!pipeline/**", "!sysexts/**",
                 "!keys/**", "**/__pycache__"]
DOWNLOAD_CACHE = "wasm-sysexts-downloads"
OUT = "/out"


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
        ctr = self._signer(images).with_mounted_secret(f"{SECRETS}/gpg-key", gpg_key)
        cmd = ["wasm-sysexts", "sign", OUT, "--gpg-key", f"{SECRETS}/gpg-key"]
        if verity_key is not None:
            ctr = ctr.with_mounted_secret(f"{SECRETS}/verity-key", verity_key)
            cmd += ["--verity-key", f"{SECRETS}/verity-key"]
        if verity_cert is not None:
            ctr = ctr.with_file("/keys/verity.crt", verity_cert)
            cmd += ["--verity-cert", "/keys/verity.crt"]
        return ctr.with_exec(cmd).directory(OUT)

    def _verifier(self, images: dagger.Directory, keyring: dagger.File,
                  verity_cert: dagger.File | None) -> dagger.Container:
        ctr = self._signer(images).with_file("/keys/import-pubring.gpg", keyring)
        cmd = ["wasm-sysexts", "verify", OUT, "--keyring", "/keys/import-pubring.gpg"]
        if verity_cert is not None:
            ctr = ctr.with_file("/keys/verity.crt", verity_cert)
            cmd += ["--verity-cert", "/keys/verity.crt"]
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

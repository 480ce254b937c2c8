"""The Dagger module: a thin typed shell that runs the `wasm-sysexts` CLI in a pinned container.

No pipeline logic lives here. Every function starts from `base()` (the base image, the Debian
tools the step needs, the CLI installed from this repository), adds its inputs, runs one CLI
command and returns what it wrote, so calls chain (`build-all` -> `sign` -> `verify` ->
`smoke-test` -> `publish-*`).

Caching, in layers: base image -> apt packages (apt lists and archives on locked cache volumes)
-> the CLI's Python dependencies (pip cache volume) -> the CLI, installed from a filter holding
no recipe and no key. A build mounts only its own recipe file, so editing `sysexts/X.yaml`
re-runs only X's builds; editing `pipeline/` re-runs all. Downloads go through a cache volume
and are verified by their pins, so a build's result depends on its recipe alone.

A mirror service (`--mirror-service tcp://...`) gets a new identity in every session, and a
container it is bound into is never answered from the cache. So builds never bind it: a build
runs `--offline` from the download cache volume, and only when an input is missing there does
a fetch container, the one place the mirror is bound, download it before the build runs again.
A rerun with nothing changed executes nothing, mirror or not.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import anyio
import dagger
from dagger import (
    CacheSharingMode,
    DefaultPath,
    Doc,
    Ignore,
    ReturnType,
    dag,
    field,
    function,
    object_type,
)

# The SDK's own way to fail a function with a message and no Python traceback.
from dagger.mod._exceptions import FunctionError

# python:3.13-slim-trixie (Python 3.13 on Debian 13), pinned by digest so a release builds in
# the same userland every time; bump deliberately. Air-gapped users and the tests pass their
# own (`--base-image` or `--base-container`): docker.io may be out of reach.
BASE_IMAGE = (
    "docker.io/library/python:3.13-slim-trixie@sha256:"
    "9d2e5553305c7c7b0097999bb17187c69b921ccd6bc9d40e4bb5ebe652c00285"
)
# Debian packages of every step (the tools the CLI runs); steps add their own.
BUILDER_PACKAGES = ["squashfs-tools", "erofs-utils", "zstd", "ca-certificates", "util-linux"]
SMOKE_PACKAGES = [
    "qemu-system-x86",
    "qemu-system-arm",
    "qemu-efi-aarch64",
    "qemu-utils",
    "mmdebstrap",
    "e2fsprogs",
    "ovmf",
    "gnupg",
    "qemu-user-static",
    "binfmt-support",
    # crictl and the reference VM's containerd, built for shim images' CRI pods
    "golang-go",
]
# Source builds (docs/recipes.md): Debian's toolchains, so the Debian build image pins them;
# Rust comes from rustup instead (below): trixie's rustc 1.85 is older than crates need.
SOURCE_PACKAGES = [
    "golang-go",
    "curl",
    "cmake",
    "make",
    "gcc",
    "g++",
    "gcc-aarch64-linux-gnu",
    "g++-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
    "pkg-config",
    "protobuf-compiler",
    "libseccomp-dev",
    "git",
]
# Rust for source builds, pinned: rustup-init by version and sha256 (static.rust-lang.org's
# .sha256 files), then toolchain 1.95.0 with the arm64 target. It meets every recipe's
# rust-version (wasmi_cli 2.0.0: 1.86); a rust-toolchain.toml (runwasi's 1.85.0) is followed.
RUSTUP_VERSION = "1.29.0"
RUSTUP_SHA256 = {
    "x86_64": "4acc9acc76d5079515b46346a485974457b5a79893cfb01112423c89aeb5aa10",
    "aarch64": "9732d6c5e2a098d3521fca8145d826ae0aaa067ef2385ead08e6feac88fa5792",
}
RUST_TOOLCHAIN = "1.95.0"
RUST_HOME = "/opt/rust"
INSTALL_RUST = (
    "set -e; a=$(uname -m); case $a in "
    + " ".join(f"{arch}) sum={digest};;" for arch, digest in RUSTUP_SHA256.items())
    + f' *) echo "no rustup-init pinned for $a" >&2; exit 1;; esac; '
    "curl -fsSL --retry 3 -o /tmp/rustup-init https://static.rust-lang.org/rustup/archive/"
    f"{RUSTUP_VERSION}/$a-unknown-linux-gnu/rustup-init; "
    'echo "$sum  /tmp/rustup-init" | sha256sum -c -; chmod +x /tmp/rustup-init; '
    f"/tmp/rustup-init -y -q --no-modify-path --profile minimal --default-toolchain "
    f"{RUST_TOOLCHAIN} --target aarch64-unknown-linux-gnu,x86_64-unknown-linux-gnu; "
    "rm /tmp/rustup-init"
)
# Signing: gpg, openssl for PKCS#7 checks, systemd-repart (257 in trixie) for verity DDIs.
SIGN_PACKAGES = ["gnupg", "openssl", "systemd-repart", "libcryptsetup12"]
# Publishing: gpg verifies the input's signature and re-signs merged manifests; openssl checks
# every image's verity signature against the certificates hosts will trust.
PUBLISH_PACKAGES = ["gnupg", "openssl"]
# A trust canary is a verity DDI made at publish time (squashfs, then systemd-repart).
CANARY_PACKAGES = [*SIGN_PACKAGES, "squashfs-tools"]
# What the CLI is installed from: the package and its metadata. The recipe and key packages
# are there as empty markers only, so editing a recipe or a key changes no installed layer.
CLI_SOURCE = [
    "pyproject.toml",
    "README.md",
    "pipeline/**",
    "sysexts/__init__.py",
    "keys/__init__.py",
    "advisories/__init__.py",
]
SOURCE_IGNORE = ["**", *(f"!{p}" for p in CLI_SOURCE), "**/__pycache__"]
# The CLI's Python dependencies, installed from pyproject.toml alone before the package itself.
INSTALL_DEPENDENCIES = (
    "import subprocess, sys, tomllib\n"
    "deps = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']\n"
    "subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--root-user-action=ignore',"
    " '--break-system-packages', *deps], check=True)\n"
)
SITE = "/site/tree"  # publish static's --dest inside the container
SECRETS = "/run/secrets"  # secrets are mounted as files here, never put in env vars or args
DOWNLOAD_CACHE = "wasm-sysexts-downloads"
TOOLCHAIN_CACHE = "wasm-sysexts-toolchains"  # Go module/build caches, cargo registry
VM_CACHE = "wasm-sysexts-vm"
APT_CACHE = "wasm-sysexts-apt"
PIP_CACHE = "wasm-sysexts-pip"
OUT = "/out"
ADVISORIES = "/advisories"  # the project's advisory feed, mounted for build and audit
BUILT = "/work/built"  # a build's --out; `merge` copies the artifacts from it to OUT
ARCHES = ["x86-64", "arm64"]
DAGGER_BUILDER = "https://wasm-sysexts.dev/builder/dagger"  # provenance's builder.id
CLI_ERROR = "wasm-sysexts: error: "


def _pass_file(
    ctr: dagger.Container,
    cmd: list[str],
    flag: str,
    path: str,
    value: dagger.Secret | dagger.File | None,
) -> tuple[dagger.Container, list[str]]:
    """Mount `value` at `path` (a Secret as a secret file, never an env var or argument) and
    hand `flag path` to the CLI; nothing when `value` is None."""
    if value is None:
        return ctr, cmd
    if isinstance(value, dagger.Secret):
        return ctr.with_mounted_secret(path, value), [*cmd, flag, path]
    return ctr.with_file(path, value), [*cmd, flag, path]


def _json_rows(text: str) -> list[dict[str, Any]]:
    try:
        rows = json.loads(text)
    except ValueError:
        return []
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def _cli_lines(output: str) -> str:
    """The CLI's `wasm-sysexts: error:` lines in `output`, else its last line."""
    lines = [ln.removeprefix(CLI_ERROR) for ln in output.splitlines() if ln.startswith(CLI_ERROR)]
    rest = [ln for ln in output.splitlines() if ln.strip()]
    return "\n".join(lines or rest[-1:] or ["no output"])


def _headline(err: dagger.ExecError) -> str:
    """The CLI's own error lines of a failed command: each failed image's error from its JSON
    result, else the `wasm-sysexts: error:` lines."""
    failed = [
        f"{r.get('name')} {r.get('version')} {r.get('arch')}: {r.get('error')}"
        for r in _json_rows(err.stdout)
        if r.get("status") == "failed"
    ]
    return "\n".join(failed) if failed else _cli_lines(err.stderr or err.stdout)


def _audit_failures(report: str, stderr: str) -> str:
    """The failing findings of `audit --json`, one line each, else the CLI's error lines."""
    try:
        data = json.loads(report)
    except json.JSONDecodeError:
        return _cli_lines(stderr)
    lines = [
        f"{f['image']}: {f['id']} ({f['severity']}) in {f['package']}"
        for f in data.get("findings", [])
        if f.get("fails")
    ]
    lines += [f"{w['where']}: waiver expired on {w['expires']}" for w in data["expired_waivers"]]
    return "\n".join(lines or [_cli_lines(stderr)])


async def _run(ctr: dagger.Container, what: str) -> dagger.Container:
    """`ctr` evaluated; a failed command fails the function with the CLI's error lines."""
    try:
        return await ctr.sync()
    except dagger.ExecError as err:
        raise FunctionError(f"{what} failed: {_headline(err)}") from None


@object_type
class SmokeTest:
    """The outcome of a smoke test: its JSON report, whether every image passed, the exit
    code and the readable report."""

    report: Annotated[dagger.File, Doc("the JSON report (written even when no VM booted)")] = (
        field()
    )
    passed: Annotated[bool, Doc("every image merged and every smoke command passed")] = field()
    exit_code: Annotated[int, Doc("the smoke-test command's exit code")] = field()
    summary: Annotated[str, Doc("the readable report, or why the test could not run")] = field()


@object_type
class WasmSysexts:
    """Build, sign, test and publish WebAssembly runtimes as systemd-sysext images."""

    source: Annotated[
        dagger.Directory,
        Doc("this repository; only the pipeline package and its metadata are used"),
        DefaultPath("/"),
        Ignore(SOURCE_IGNORE),
    ]
    base_image: Annotated[
        str,
        Doc(
            "container image with Debian trixie and python3 (digest "
            "pinned); point it at your own registry when air-gapped"
        ),
    ] = BASE_IMAGE
    base_container: Annotated[
        dagger.Container | None,
        Doc(
            "a prepared container used in place of base_image (your "
            "own apt mirror settings, packages installed in advance)"
        ),
    ] = None
    mirror_service: Annotated[
        dagger.Service | None,
        Doc(
            "an upstream mirror run as a service, reachable as "
            "http://mirror:<port> from the steps that download (pass "
            "that as mirror)"
        ),
    ] = None
    registry_service: Annotated[
        dagger.Service | None,
        Doc(
            "an OCI registry run as a service, reachable as "
            "registry:<port> (e.g. repository registry:5000/ns)"
        ),
    ] = None

    async def _start(self) -> dagger.Container:
        """The container every step starts from; a base image that cannot be pulled is named,
        with the arguments that replace it."""
        if self.base_container is not None:
            return self.base_container
        ctr = dag.container().from_(self.base_image)
        try:
            return await ctr.sync()
        except dagger.QueryError as err:
            reason = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown"
            raise FunctionError(
                f"base image {self.base_image} cannot be pulled ({reason}); pass --base-image "
                "with an image your engine can pull, or --base-container"
            ) from None

    async def _base(self, *packages: str) -> dagger.Container:
        apt = [
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            *BUILDER_PACKAGES,
            *packages,
        ]
        return (
            (await self._start())
            .with_env_variable("DEBIAN_FRONTEND", "noninteractive")
            # The CLI's downloads (requests) trust the system store, as curl and cargo do: the
            # CAs an operator's engine installs into every container are there, not in certifi.
            .with_env_variable("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
            # Debian's container images delete downloaded packages; keep them in the volume.
            .with_exec(["rm", "-f", "/etc/apt/apt.conf.d/docker-clean"])
            .with_mounted_cache(
                "/var/cache/apt",
                dag.cache_volume(f"{APT_CACHE}-archives"),
                sharing=CacheSharingMode.LOCKED,
            )
            .with_mounted_cache(
                "/var/lib/apt/lists",
                dag.cache_volume(f"{APT_CACHE}-lists"),
                sharing=CacheSharingMode.LOCKED,
            )
            .with_exec(["sh", "-c", f"apt-get update -q && {' '.join(apt)}"])
            .without_mount("/var/cache/apt")
            .without_mount("/var/lib/apt/lists")
            .with_mounted_cache("/root/.cache/pip", dag.cache_volume(PIP_CACHE))
            .with_file("/src/pyproject.toml", self.source.file("pyproject.toml"))
            .with_exec(["python3", "-c", INSTALL_DEPENDENCIES])
            .with_directory("/src", self.source)
            .with_exec(
                [
                    "python3",
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--no-deps",
                    "--root-user-action=ignore",
                    "--break-system-packages",
                    "/src",
                ]
            )
            .without_mount("/root/.cache/pip")
            .with_mounted_cache("/cache", dag.cache_volume(DOWNLOAD_CACHE))
            .with_env_variable("WASM_SYSEXTS_CACHE", "/cache")
            .with_workdir("/work")
        )

    @function
    async def base(
        self,
        packages: Annotated[
            list[str] | None, Doc("more Debian packages, e.g. those of a step to debug")
        ] = None,
    ) -> dagger.Container:
        """The container every function runs the CLI in, ready for `terminal`.

        The base image with the build tools, the CLI's dependencies and the CLI installed; a
        step that failed can be retried here by hand (`dagger call base terminal`)."""
        return await self._base(*(packages or []))

    async def _recipes(self, recipes: dagger.Directory) -> dict[str, dict[str, Any]]:
        """`wasm-sysexts list --json` of `recipes`, by name: arches, default version, from."""
        listing = await (
            await _run(
                (await self._base())
                .with_directory("/recipes", recipes)
                .with_exec(["wasm-sysexts", "list", "--json", "--recipes", "/recipes"]),
                "list",
            )
        ).stdout()
        return {str(row["name"]): row for row in _json_rows(listing)}

    async def _engine_version(self) -> str:
        """The running engine's version, asked once per module instance."""
        if not getattr(self, "_engine", ""):
            self._engine = await dag.version()
        return str(self._engine)

    async def _build_one(
        self,
        name: str,
        recipe: dagger.File,
        args: list[str],
        fmt: str,
        mirror: str,
        from_source: bool,
        advisories: dagger.Directory | None,
    ) -> tuple[dagger.Directory | None, str]:
        """One image build: its artifacts, or (None, the CLI's error line). Only this recipe's
        file is mounted. A source build gets the toolchains and a cache volume for their
        module, crate and build caches. With a mirror service the build runs offline and an
        input missing from the download cache is fetched by `_fetch` first."""
        base = await self._base(*(SOURCE_PACKAGES if from_source else ()))
        ctr = (
            base.with_env_variable("WASM_SYSEXTS_BUILDER_ID", DAGGER_BUILDER)
            .with_env_variable("WASM_SYSEXTS_DAGGER_ENGINE", await self._engine_version())
            .with_env_variable("WASM_SYSEXTS_BASE_IMAGE", self.base_image)
            .with_file(f"/recipes/{name}.yaml", recipe)
        )
        if from_source:
            ctr = (
                ctr.with_env_variable("RUSTUP_HOME", f"{RUST_HOME}/rustup")
                .with_env_variable("CARGO_HOME", f"{RUST_HOME}/cargo")
                .with_exec(["sh", "-c", INSTALL_RUST])
                .with_env_variable("PATH", f"{RUST_HOME}/cargo/bin:${{PATH}}", expand=True)
                .with_mounted_cache("/cache/toolchains", dag.cache_volume(TOOLCHAIN_CACHE))
            )
        routed = [*args, "--recipes", "/recipes", *(["--mirror", mirror] if mirror else [])]
        if advisories is not None:  # `dagger call` passes the repository's advisories/
            ctr = ctr.with_directory(ADVISORIES, advisories)
            routed += ["--advisories", ADVISORIES]
        service = self.mirror_service
        offline = ["--offline"] if service is not None else []
        build = ctr.with_exec(
            [
                "wasm-sysexts",
                "build",
                name,
                *routed,
                "--format",
                fmt,
                *offline,
                "--out",
                BUILT,
                "--json",
            ]
        )
        try:
            built = await build.sync()
        except dagger.ExecError as err:
            # Not answered from the cache, and an input is missing: fetch it, build again.
            if service is None or not any(r.get("not_cached") for r in _json_rows(err.stdout)):
                return None, _headline(err)
            fetch = ctr.with_service_binding("mirror", service).with_exec(
                ["wasm-sysexts", "fetch", name, *routed]
            )
            try:
                await fetch.sync()
                built = await build.sync()
            except dagger.ExecError as again:
                return None, _headline(again)
        merged = built.with_exec(["wasm-sysexts", "merge", BUILT, "--out", OUT])
        return merged.directory(OUT), ""

    @function
    async def build(
        self,
        runtime: Annotated[str, Doc("recipe name, e.g. wasmtime")],
        recipes: Annotated[dagger.Directory, Doc("recipes directory"), DefaultPath("sysexts")],
        version: Annotated[str, Doc("version to build (default: the recipe's)")] = "",
        arch: Annotated[str, Doc("x86-64 or arm64")] = "x86-64",
        format: Annotated[str, Doc("squashfs or erofs")] = "squashfs",
        mirror: Annotated[str, Doc("fetch https://HOST/PATH from MIRROR/HOST/PATH")] = "",
        build_from: Annotated[str, Doc("release or source (default: the recipe's)")] = "",
        accept_advisory: Annotated[
            list[str] | None, Doc("critical advisories (ids) to build in spite of")
        ] = None,
        advisories: Annotated[
            dagger.Directory | None,
            Doc("the advisory feed: OSV records and waivers.yaml"),
            DefaultPath("advisories"),
        ] = None,
    ) -> dagger.Directory:
        """Build one runtime's sysext image, with its metadata, SBOM and SHA256SUMS.

        Returns the directory `wasm-sysexts build` writes, for `export` or `sign`."""
        rows = await self._recipes(recipes)
        if runtime not in rows:
            raise FunctionError(
                f"unknown runtime {runtime!r}; the recipes are: {', '.join(sorted(rows))}"
            )
        args = ["--arch", arch, *(["--version", version] if version else [])]
        args += ["--from", build_from] if build_from else []
        args += [a for i in accept_advisory or [] for a in ("--accept-advisory", i)]
        origin = build_from or str(rows[runtime].get("from", "release"))
        out, error = await self._build_one(
            runtime,
            recipes.file(f"{runtime}.yaml"),
            args,
            format,
            mirror,
            origin == "source",
            advisories,
        )
        if out is None:
            raise FunctionError(f"build of {runtime} failed: {error}")
        return out

    @function
    async def build_all(
        self,
        recipes: Annotated[dagger.Directory, Doc("recipes directory"), DefaultPath("sysexts")],
        arch: Annotated[list[str] | None, Doc("target arches (default: x86-64 and arm64)")] = None,
        format: Annotated[str, Doc("squashfs or erofs")] = "squashfs",
        mirror: Annotated[str, Doc("fetch https://HOST/PATH from MIRROR/HOST/PATH")] = "",
        keep_going: Annotated[
            bool, Doc("return the images that built when others failed (the failures are printed)")
        ] = False,
        advisories: Annotated[
            dagger.Directory | None,
            Doc("the advisory feed: OSV records and waivers.yaml"),
            DefaultPath("advisories"),
        ] = None,
    ) -> dagger.Directory:
        """Build every recipe's image for each arch, concurrently, into one directory.

        One container per (recipe, arch), each cached on its own recipe; the images, their
        metadata and SBOMs and one SHA256SUMS, merged by `wasm-sysexts merge`. A failed build
        fails the call after all ran, one line per image, unless keep_going is set."""
        rows = await self._recipes(recipes)
        jobs = [
            (name, a)
            for name, row in rows.items()
            for a in (arch or ARCHES)
            if row["arches"].get(a) == "available"
        ]
        results: dict[tuple[str, str], tuple[dagger.Directory | None, str]] = {}

        async def one(name: str, a: str) -> None:
            results[(name, a)] = await self._build_one(
                name,
                recipes.file(f"{name}.yaml"),
                ["--arch", a],
                format,
                mirror,
                rows[name]["from"] == "source",
                advisories,
            )

        async with anyio.create_task_group() as group:
            for name, a in jobs:
                group.start_soon(one, name, a)
        failed = [
            f"{name} {a}: {error}" for (name, a), (_, error) in sorted(results.items()) if error
        ]
        if failed and not keep_going:
            raise FunctionError(
                f"{len(failed)} of {len(jobs)} builds failed:\n" + "\n".join(failed)
            )
        for line in failed:  # keep_going: shown in the call's output, the rest is returned
            print(f"FAILED {line}", file=sys.stderr)
        built = [out for _, (out, _) in sorted(results.items()) if out is not None]
        if not built:
            return dag.directory()
        ctr = await self._base()
        for i, out in enumerate(built):
            ctr = ctr.with_directory(f"/in/{i}", out)
        merge = ["wasm-sysexts", "merge", *(f"/in/{i}" for i in range(len(built))), "--out", OUT]
        return (await _run(ctr.with_exec(merge), "merge")).directory(OUT)

    @function(cache="never")  # type: ignore[call-overload, untyped-decorator]  # dagger-io 0.21 overloads omit cache=
    async def audit(
        self,
        images: Annotated[dagger.Directory, Doc("built images with their SBOMs")],
        db: Annotated[
            dagger.Directory | None,
            Doc("an OSV export: records (*.json) or osv.dev's all.zip files"),
        ] = None,
        online: Annotated[bool, Doc("also ask osv.dev (the release gate)")] = False,
        fail_on: Annotated[str, Doc("lowest failing severity: low, medium, high, critical")] = (
            "medium"
        ),
        advisories: Annotated[
            dagger.Directory | None,
            Doc("the advisory feed: OSV records and waivers.yaml"),
            DefaultPath("advisories"),
        ] = None,
    ) -> dagger.File:
        """Match every image's SBOM against OSV advisories; returns the JSON report.

        The call fails, naming each unwaived finding and each expired waiver, when the audit
        does. Never cached: advisories are published every day."""
        ctr = (await self._base()).with_directory("/in", images)
        cmd = ["wasm-sysexts", "audit", "/in", "--fail-on", fail_on]
        if advisories is not None:  # `dagger call` passes the repository's advisories/
            ctr, cmd = (
                ctr.with_directory(ADVISORIES, advisories),
                [*cmd, "--advisories", ADVISORIES],
            )
        if db is not None:
            ctr, cmd = ctr.with_directory("/db", db), [*cmd, "--db", "/db"]
        cmd += ["--online"] if online else []
        ctr = ctr.with_exec([*cmd, "--json"], redirect_stdout="/audit.json", expect=ReturnType.ANY)
        if await ctr.exit_code() != 0:
            report = await ctr.file("/audit.json").contents()
            raise FunctionError("audit failed:\n" + _audit_failures(report, await ctr.stderr()))
        return ctr.file("/audit.json")

    @function
    async def sign(
        self,
        images: Annotated[dagger.Directory, Doc("directory of built *.raw images")],
        gpg_key: Annotated[dagger.Secret, Doc("OpenPGP secret key (env://NAME, file://PATH)")],
        verity_key: Annotated[
            dagger.Secret | None, Doc("PEM RSA key: turn images into verity-signed DDIs")
        ] = None,
        verity_cert: Annotated[dagger.File | None, Doc("PEM certificate of verity_key")] = None,
    ) -> dagger.Directory:
        """Sign images into a new directory: DDIs, metadata, provenance, SHA256SUMS(.gpg).

        With a verity key each image becomes a verity-signed DDI; SHA256SUMS is signed with the
        OpenPGP key, and each image gets a signed SLSA provenance statement."""
        ctr = (await self._base(*SIGN_PACKAGES)).with_directory("/in", images)
        ctr, cmd = _pass_file(
            ctr,
            ["wasm-sysexts", "sign", "/in", "--out", OUT, "--cache", "/cache"],
            "--gpg-key",
            f"{SECRETS}/gpg-key",
            gpg_key,
        )
        ctr, cmd = _pass_file(ctr, cmd, "--verity-key", f"{SECRETS}/verity-key", verity_key)
        ctr, cmd = _pass_file(ctr, cmd, "--verity-cert", "/keys/verity.crt", verity_cert)
        # systemd-repart runs in a Debian root entered with unshare when the image's is older.
        return (await _run(ctr.with_exec(cmd, insecure_root_capabilities=True), "sign")).directory(
            OUT
        )

    @function
    async def verify(
        self,
        images: Annotated[dagger.Directory, Doc("signed images with SHA256SUMS(.gpg)")],
        keyring: Annotated[dagger.File, Doc("OpenPGP public keyring (import-pubring.gpg)")],
        verity_cert: Annotated[
            dagger.File | None, Doc("certificate every image's verity signature must match")
        ] = None,
    ) -> dagger.File:
        """Check the signature, every hash and every verity signature; returns the report.

        The call fails, naming each failed file, when any check fails."""
        ctr, cmd = _pass_file(
            (await self._base(*SIGN_PACKAGES)).with_directory("/in", images),
            ["wasm-sysexts", "verify", "/in"],
            "--keyring",
            "/keys/import-pubring.gpg",
            keyring,
        )
        ctr, cmd = _pass_file(ctr, cmd, "--verity-cert", "/keys/verity.crt", verity_cert)
        ctr = ctr.with_exec(cmd, redirect_stdout="/report.txt", expect=ReturnType.ANY)
        if await ctr.exit_code() != 0:
            report = await ctr.file("/report.txt").contents()
            failed = [ln for ln in report.splitlines() if "FAILED" in ln]
            raise FunctionError(
                "verify failed:\n" + "\n".join(failed or [_cli_lines(await ctr.stderr())])
            )
        return ctr.file("/report.txt")

    @function
    async def smoke_test(
        self,
        images: Annotated[dagger.Directory, Doc("images of one or both arches")],
        recipes: Annotated[dagger.Directory, Doc("recipes directory"), DefaultPath("sysexts")],
        flatcar_keyring: Annotated[
            dagger.File,
            Doc("the key Flatcar signs its releases with"),
            DefaultPath("keys/flatcar-image-signing.asc"),
        ],
        os: Annotated[str, Doc("flatcar or reference (a Debian trixie VM)")] = "flatcar",
        channel: Annotated[str, Doc("Flatcar channel: stable, beta, alpha or lts")] = "stable",
        arch: Annotated[str, Doc("boot only this arch's images (default: each arch present)")] = "",
        mirror: Annotated[str, Doc("fetch https://HOST/PATH from MIRROR/HOST/PATH")] = "",
    ) -> SmokeTest:
        """Boot a VM per arch with the images and run each recipe's smoke commands.

        Returns the JSON report, whether it passed and the readable report; the report is kept
        when a boot fails (check `passed`, or `.passed` in the report)."""
        cmd = [
            "wasm-sysexts",
            "smoke-test",
            "/images",
            "--os",
            os,
            "--channel",
            channel,
            "--recipes",
            "/recipes",
            "--cache",
            "/vm-cache",
            "--report",
            "/report.json",
            "--flatcar-keyring",
            "/keys/flatcar-image-signing.asc",
        ]
        cmd += ["--arch", arch] if arch else []
        cmd += ["--mirror", mirror] if mirror else []
        ctr = (
            (await self._base(*SMOKE_PACKAGES))
            .with_mounted_cache("/vm-cache", dag.cache_volume(VM_CACHE))
            .with_file("/keys/flatcar-image-signing.asc", flatcar_keyring)
            .with_directory("/images", images)
            .with_directory("/recipes", recipes)
        )
        if mirror and self.mirror_service is not None:
            ctr = ctr.with_service_binding("mirror", self.mirror_service)
        # QEMU, mmdebstrap and unshare need root capabilities in the container.
        ctr = ctr.with_exec(cmd, insecure_root_capabilities=True, expect=ReturnType.ANY)
        code = await ctr.exit_code()
        summary = await ctr.stdout() or _cli_lines(await ctr.stderr())
        # As keywords unpacked: mypy does not see `field()` attributes as __init__ arguments.
        result: dict[str, Any] = {
            "report": ctr.file("/report.json"),
            "passed": code == 0,
            "exit_code": code,
            "summary": summary,
        }
        return SmokeTest(**result)

    @function(cache="never")  # type: ignore[call-overload, untyped-decorator]  # dagger-io 0.21 overloads omit cache=
    async def publish_static(
        self,
        images: Annotated[dagger.Directory, Doc("signed images: *.raw, SHA256SUMS(.gpg)")],
        base_url: Annotated[str, Doc("URL the returned tree will be served at")],
        existing: Annotated[
            dagger.Directory | None, Doc("the tree currently served, to merge into")
        ] = None,
        gpg_key: Annotated[
            dagger.Secret | None, Doc("OpenPGP secret key re-signing merged SHA256SUMS")
        ] = None,
        keyring: Annotated[
            dagger.File | None, Doc("public keyring verifying the input (default: gpg_key's)")
        ] = None,
        verity_cert: Annotated[
            dagger.File | None,
            Doc("PEM certificate every image must be a DDI signed by (hosts trust it)"),
        ] = None,
        allow_unsigned: Annotated[
            bool, Doc("publish images without verity signatures; hosts then verify none")
        ] = False,
        trust_canary: Annotated[
            bool, Doc("add an image signed by a throwaway key that every host must refuse")
        ] = False,
    ) -> dagger.Directory:
        """Merge signed images into a static systemd-sysupdate server tree to upload.

        Its Butane configs make hosts merge only images signed by verity_cert, so every image
        must be; allow_unsigned publishes without that promise. See docs/publishing.md;
        `export` leaves the top directory mode 0700 (chmod it 0755 before serving it)."""
        packages = CANARY_PACKAGES if trust_canary else PUBLISH_PACKAGES
        ctr = (await self._base(*packages)).with_directory("/images", images)
        cmd = [
            "wasm-sysexts",
            "publish",
            "static",
            "/images",
            "--dest",
            SITE,
            "--base-url",
            base_url,
        ]
        if existing is not None:
            # A plain directory: publish swaps it for its generation symlink atomically.
            ctr = ctr.with_directory(SITE, existing)
        ctr, cmd = _pass_file(ctr, cmd, "--gpg-key", f"{SECRETS}/gpg-key", gpg_key)
        ctr, cmd = _pass_file(ctr, cmd, "--keyring", "/keys/import-pubring.gpg", keyring)
        ctr, cmd = _pass_file(ctr, cmd, "--verity-cert", "/keys/verity.crt", verity_cert)
        cmd += ["--allow-unsigned"] if allow_unsigned else []
        cmd += ["--trust-canary"] if trust_canary else []
        # SITE is a symlink to the new generation; hand back plain files to upload.
        run = ctr.with_exec(cmd, insecure_root_capabilities=trust_canary)  # repart, as in sign
        ctr = await _run(run, "publish static")
        return ctr.with_exec(["cp", "-a", f"{SITE}/.", OUT]).directory(OUT)

    @function(cache="never")  # type: ignore[call-overload, untyped-decorator]  # dagger-io 0.21 overloads omit cache=
    async def publish_oci(
        self,
        images: Annotated[dagger.Directory, Doc("signed images: *.raw, SHA256SUMS(.gpg)")],
        repository: Annotated[str, Doc("REGISTRY/NAMESPACE; images go to .../<name>")],
        username: Annotated[str, Doc("registry user (empty: anonymous)")] = "",
        password: Annotated[dagger.Secret | None, Doc("registry password or token")] = None,
        tag_latest: Annotated[bool, Doc("also move the tag latest")] = False,
        insecure: Annotated[bool, Doc("allow plain HTTP (a test registry)")] = False,
    ) -> dagger.File:
        """Push every image as an OCI artifact with its signature; returns the pushed references.

        A JSON list of {reference, digest} (docs/oci.md)."""
        ctr = (await self._base(*PUBLISH_PACKAGES)).with_directory("/images", images)
        if self.registry_service is not None:
            ctr = ctr.with_service_binding("registry", self.registry_service)
        cmd = ["wasm-sysexts", "publish", "oci", "/images", "--repository", repository, "--json"]
        cmd += ["--username", username] if username else []
        ctr, cmd = _pass_file(ctr, cmd, "--password-file", f"{SECRETS}/registry-password", password)
        cmd += ["--tag-latest"] if tag_latest else []
        cmd += ["--insecure"] if insecure else []
        ctr = await _run(ctr.with_exec(cmd, redirect_stdout="/pushed.json"), "publish oci")
        return ctr.file("/pushed.json")

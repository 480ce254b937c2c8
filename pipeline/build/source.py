"""Building a recipe's payload from pinned source: Go modules, cargo, CMake and make.

Inputs are pinned before anything runs: a Go module by its h1: hash (checked on the downloaded
zip, the same hash go.sum and the checksum database hold), an archive by its sha256 or by the
git tree id of what it unpacks to, a git checkout by its commit id, a Cargo.lock by its
sha256 (after any declared `prepare` steps). Dependencies a build fetches itself come only
through those locks: Go with `-mod=readonly` against go.sum, cargo with `--locked`.

Builds are hermetic enough to be reproducible: a clean environment (LC_ALL=C, TZ=UTC,
SOURCE_DATE_EPOCH, a private HOME), the work directory mapped to /build in every embedded path
(`-ffile-prefix-map`, `--remap-path-prefix`, `-trimpath`), and the toolchain versions recorded
in the image metadata and its build key. arm64 is cross-built on x86-64: Go natively, cargo
with the aarch64 target and Debian's aarch64-linux-gnu-gcc as linker, CMake with a toolchain
file for the same compilers.

The compile step runs third-party code (a crate's build.rs, a Makefile, CMake scripts), so on
the CLI it runs in private mount and network namespaces (`sandbox()`): dependencies are fetched
first (`go list -deps`, `cargo fetch --locked`), then the build runs with no network at all,
so it can neither fetch what the locks do not pin nor send anything anywhere. `prepare` steps
are the recipe's own (reviewed in this repository) and keep the network (`cargo update
--precise`). Where namespaces are not permitted (a container without CAP_SYS_ADMIN) the build
runs without them, said once: there the container is the isolation (docs/sources.md).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.build import crates
from pipeline.build.extract import MAX_MEMBER_BYTES, MAX_MEMBERS, MAX_TOTAL_BYTES
from pipeline.build.fetch import Fetcher, mirror_url
from pipeline.core import log, run
from pipeline.core.errors import PipelineError
from pipeline.core.fs import sha256_file, write_atomic
from pipeline.core.log import redact
from pipeline.core.osv import version_key
from pipeline.core.vocab import Arch
from pipeline.recipe.model import (
    Fetched,
    GitPin,
    Recipe,
    Source,
    SourceKind,
    SourcePin,
    source_pinned,
)

_log = log.get("source")
GO_PROXY = "https://proxy.golang.org"
# The cross compilers of each arch (Debian's gcc-<triplet> packages); native builds use cc.
CROSS_CC = {Arch.ARM64: "aarch64-linux-gnu-gcc"}
CROSS_CXX = {Arch.ARM64: "aarch64-linux-gnu-g++"}


@dataclass(frozen=True)
class _Job:
    """One build: where it happens and how its templates expand."""

    recipe: Recipe
    version: str
    source: Source
    pin: SourcePin
    directory: Path  # the tree to build in
    work: Path
    log: Path  # the compile's full output (kept beside the image when it fails)
    arch: Arch
    env: dict[str, str]
    expand: Callable[[str], str]


@dataclass(frozen=True)
class SourceBuild:
    outputs: Path  # a directory holding each output under its name
    record: dict[str, object]  # what was built from, for the metadata


def toolchain(
    kind: SourceKind, arch: Arch, tree: Path | None = None, env: tuple[tuple[str, str], ...] = ()
) -> dict[str, str]:
    """The versions of the tools a `kind` build for `arch` uses (metadata, build key); in
    `tree`, as the build sees them there (rustup follows a rust-toolchain.toml)."""
    return dict(_toolchain(kind, arch, tree, env))


@functools.cache
def _toolchain(
    kind: SourceKind, arch: Arch, tree: Path | None, env: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, str], ...]:
    def first_line(args: list[str]) -> str:
        out = run.run(
            args, cwd=tree, env=dict(env) if env else None, what=f"{args[0]} --version"
        ).stdout
        lines = out.decode(errors="replace").strip().splitlines()
        return lines[0] if lines else f"{args[0]} (no version)"

    tools: dict[str, str] = {}
    if kind is SourceKind.GO:
        tools["go"] = first_line(["go", "version"])
    if kind is SourceKind.CARGO:
        tools["rustc"] = first_line(["rustc", "--version"])
        tools["cargo"] = first_line(["cargo", "--version"])
    if kind is SourceKind.CMAKE:
        tools["cmake"] = first_line(["cmake", "--version"])
    if kind in (SourceKind.CMAKE, SourceKind.MAKE, SourceKind.CARGO):
        cc = _cc(arch)
        tools[cc] = first_line([cc, "--version"])
    if kind is SourceKind.MAKE:
        tools["make"] = first_line(["make", "--version"])
    return tuple(sorted(tools.items()))


def _cc(arch: Arch) -> str:
    return "cc" if arch is Arch.host() else CROSS_CC.get(arch, f"{arch.facts.gnu}-gcc")


def _cxx(arch: Arch) -> str:
    return "c++" if arch is Arch.host() else CROSS_CXX.get(arch, f"{arch.facts.gnu}-g++")


# ---------------------------------------------------------------- pins


def go_module_escape(path: str) -> str:
    """The Go proxy's case encoding: an upper-case letter becomes '!' + its lower case."""
    return "".join(f"!{c.lower()}" if c.isupper() else c for c in path)


def go_zip_url(module: str, version: str) -> str:
    return f"{GO_PROXY}/{go_module_escape(module)}/@v/{go_module_escape(version)}.zip"


def go_h1(zip_path: Path, limit: int = MAX_TOTAL_BYTES, label: str = "") -> str:
    """The module zip's h1: hash (golang.org/x/mod/sumdb/dirhash.HashZip), read in chunks
    after the zip's declared sizes pass the unpack limits (a small zip can declare a member of
    gigabytes: nothing is held in memory whole)."""
    label = label or zip_path.name
    try:
        with zipfile.ZipFile(zip_path) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_MEMBERS:
                raise PipelineError(f"{label}: more than {MAX_MEMBERS} members")
            total = 0
            for info in infos:
                total += info.file_size
                if info.file_size > min(limit, MAX_MEMBER_BYTES) or total > limit:
                    raise PipelineError(
                        f"{label}: member {info.filename!r} of {info.file_size} bytes is past "
                        f"the unpack limits ({min(limit, MAX_MEMBER_BYTES)} per member, "
                        f"{limit} in all)"
                    )
            lines = []
            for info in sorted(infos, key=lambda i: i.filename):
                digest = hashlib.sha256()
                with archive.open(info) as member:
                    while chunk := member.read(1 << 20):
                        digest.update(chunk)
                lines.append(f"{digest.hexdigest()}  {info.filename}\n")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
        raise PipelineError(f"{label}: not a valid module zip ({err})") from None
    summary = hashlib.sha256("".join(lines).encode()).digest()
    return "h1:" + base64.b64encode(summary).decode()


def git_tree_id(root: Path) -> str:
    """The git tree object id of the directory `root` (what `git write-tree` would give for
    it): a content pin of a source tree, whoever packed the archive."""
    entries = []
    for entry in os.scandir(root):
        path = Path(entry.path)
        if entry.is_symlink():
            mode, oid = b"120000", _git_object(b"blob", os.readlink(path).encode())
        elif entry.is_dir():
            with os.scandir(path) as children:
                if next(children, None) is None:
                    continue  # git has no empty directories
            mode, oid = b"40000", bytes.fromhex(git_tree_id(path))
        else:
            mode = b"100755" if os.stat(path).st_mode & 0o100 else b"100644"
            oid = _git_object(b"blob", path.read_bytes())
        # Trees sort by name, a directory as if its name ended with '/'.
        key = entry.name.encode() + (b"/" if mode == b"40000" else b"")
        entries.append((key, mode + b" " + entry.name.encode() + b"\0" + oid))
    body = b"".join(e for _, e in sorted(entries))
    return _git_object(b"tree", body).hex()


def _git_object(kind: bytes, data: bytes) -> bytes:
    return hashlib.sha1(kind + b" %d\0" % len(data) + data, usedforsecurity=False).digest()


def _alias(fetcher: Fetcher, pin: str) -> Path:
    """Where the sha256 of the file a content pin (h1:, tree) verified is remembered, so the
    next build finds it in the cache without downloading."""
    return fetcher.cache_dir / "alias" / hashlib.sha256(pin.encode()).hexdigest()


def _fetch_by_content(fetcher: Fetcher, url: str, pin: str, check: Callable[[Path], None]) -> Path:
    """Download `url` (or take it from the cache) and check it with `check(path)`, which
    raises unless the content matches `pin`."""
    alias = _alias(fetcher, pin)
    known = alias.read_text().strip() if alias.is_file() else None
    path = fetcher.fetch(url, known) if known else fetcher.fetch(url, None)
    if known is None:
        check(path)
        alias.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(alias, sha256_file(path) + "\n")
    return path


# ---------------------------------------------------------------- trees


def _tree(
    fetcher: Fetcher, item: Fetched, recipe: Recipe, version: str, arch: Arch, where: str
) -> Path:
    """The unpacked source of `item`: its single top-level directory, if it has one."""
    from pipeline.build.orchestrate import unpacked

    url = recipe.expand(item.url, version, arch)
    if item.sha256:
        path = fetcher.fetch(url, item.sha256)
        root = unpacked(fetcher, path, item.sha256, url)
        return top_dir(root)
    assert item.tree is not None

    def check(path: Path) -> None:
        tree = top_dir(unpacked(fetcher, path, sha256_file(path), url))
        actual = git_tree_id(tree)
        if actual != item.tree:
            raise PipelineError(
                f"{redact(url)}: unpacks to git tree {actual}, but {where}.tree pins {item.tree}"
            )

    path = _fetch_by_content(fetcher, url, f"tree:{item.tree}", check)
    return top_dir(unpacked(fetcher, path, sha256_file(path), url))


def top_dir(root: Path) -> Path:
    """An unpacked archive's single top-level directory, if it has one (a tag archive's
    `<repo>-<tag>/`, a .crate's `<name>-<version>/`)."""
    entries = list(root.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else root


def _go_module(fetcher: Fetcher, source: Source, pin: SourcePin, version: str) -> Path:
    from pipeline.build.orchestrate import unpacked

    assert pin.h1 is not None
    go_version = f"v{version}"
    url = go_zip_url(source.module, go_version)

    def check(path: Path) -> None:
        actual = go_h1(path, fetcher.max_unpack, redact(url))
        if actual != pin.h1:
            raise PipelineError(
                f"{redact(url)}: module hash {actual} does not match the pinned {pin.h1}"
            )

    path = _fetch_by_content(fetcher, url, pin.h1, check)
    root = unpacked(fetcher, path, sha256_file(path), url)
    return root / f"{source.module}@{go_version}"


def _git(fetcher: Fetcher, url: str, commit: str, dest: Path, env: dict[str, str]) -> None:
    remote = mirror_url(url, fetcher.mirror)
    git = ["git", "-C", str(dest)]
    dest.mkdir(parents=True)
    run.run([*git, "init", "-q"], env=env)
    run.run(
        [*git, "fetch", "-q", "--depth", "1", remote, commit],
        env=env,
        what=f"git fetch {redact(remote)} {commit}",
    )
    run.run([*git, "checkout", "-q", "--detach", "FETCH_HEAD"], env=env)
    head = run.run([*git, "rev-parse", "HEAD"], env=env).stdout.decode().strip()
    if head != commit:
        raise PipelineError(f"{redact(remote)}: fetched {head}, not the pinned commit {commit}")
    shutil.rmtree(dest / ".git")  # what is built is the tree; .git would leak into builds


# ---------------------------------------------------------------- build


def fetch_source(
    recipe: Recipe, version: str, arch: Arch, fetcher: Fetcher
) -> tuple[Path | None, dict[str, Path]]:
    """Download, verify and unpack the pinned source of a source build and its pinned
    inputs: the source tree (None for a git pin, which the build clones) and each archive
    input's tree by name."""
    source = recipe.source
    assert source is not None
    pin = recipe.source_pin(version)
    where = f"source.versions.{version}"
    if not source_pinned(pin, source) and source.kind is not SourceKind.CARGO:
        raise PipelineError(
            f"{recipe.path}: {where}: not pinned; run 'wasm-sysexts lock "
            f"{recipe.name} --version {version} --from source'"
        )
    main = None
    if source.kind is SourceKind.GO:
        main = _go_module(fetcher, source, pin, version)
    elif pin.git is None:
        assert pin.archive is not None
        main = _tree(fetcher, pin.archive, recipe, version, arch, f"{where}.archive")
    trees = {
        name: _tree(fetcher, item, recipe, version, arch, f"{where}.inputs.{name}")
        for name, item in pin.inputs
        if not isinstance(item, GitPin)
    }
    return main, trees


@dataclass(frozen=True)
class _Prepared:
    src: Path  # the source tree, prepared
    directory: Path  # where in it the build runs
    env: dict[str, str]
    expand: Callable[[str], str]


def _prepare(
    recipe: Recipe, version: str, arch: Arch, fetcher: Fetcher, work: Path, epoch: int
) -> _Prepared:
    """The pinned source of `version` in `work/src`, its inputs beside it, its declared
    prepare steps run: what a build (or `lock`, for the Cargo.lock it pins) starts from."""
    source = recipe.source
    assert source is not None
    pin = recipe.source_pin(version)
    env = _environment(work, arch, epoch, fetcher)
    src = work / "src"
    main, trees = fetch_source(recipe, version, arch, fetcher)
    if main is not None:
        shutil.copytree(main, src, symlinks=True)
    else:
        assert pin.git is not None
        _git(fetcher, pin.git.url, pin.git.commit, src, env)
    inputs = {}
    for name, item in pin.inputs:
        if isinstance(item, GitPin):
            _git(fetcher, item.url, item.commit, work / "inputs" / name, env)
            inputs[name] = str(work / "inputs" / name)
        else:
            inputs[name] = str(trees[name])
    values = {"triple": _triple(source.kind, arch), **inputs}

    def expand(text: str) -> str:
        return recipe.expand(text, version, arch, **values)

    directory = src / expand(source.directory)
    if not directory.resolve().is_relative_to(src.resolve()) or not directory.is_dir():
        raise PipelineError(
            f"{recipe.path}: source.directory {expand(source.directory)!r} is not a directory "
            "of the source tree"
        )
    for i, step in enumerate(source.prepare):
        _log.info(f"prepare: {expand(step)}")
        run.run(
            ["sh", "-ec", expand(step)],
            cwd=src,
            env=env,
            what=f"{recipe.path}: source.prepare[{i}]",
        )
    return _Prepared(src, directory, env, expand)


def cargo_lock_sha256(recipe: Recipe, version: str, fetcher: Fetcher) -> str:
    """The sha256 of the Cargo.lock a build of `version` would use (after prepare)."""
    assert recipe.source is not None
    with tempfile.TemporaryDirectory(prefix="wsx-lock-") as scratch:
        work = Path(scratch)
        prepared = _prepare(recipe, version, recipe.source.arches[0], fetcher, work, 0)
        return sha256_file(cargo_lock(recipe, prepared.directory, work))


def build_from_source(
    recipe: Recipe,
    version: str,
    arch: Arch,
    fetcher: Fetcher,
    work: Path,
    epoch: int,
    log: Path,
) -> SourceBuild:
    """Build `recipe`'s outputs for `version` and `arch` in the empty directory `work`; the
    compile's output goes to `log`."""
    source = recipe.source
    assert source is not None
    pin = recipe.source_pin(version)
    prepared = _prepare(recipe, version, arch, fetcher, work, epoch)
    src, directory, env, expand = prepared.src, prepared.directory, prepared.env, prepared.expand
    out = work / "out"
    out.mkdir()
    record: dict[str, object] = {
        "kind": str(source.kind),
        **_pin_record(pin, recipe, version, arch),
    }
    if source.kind is SourceKind.GO:  # what the SBOM and provenance name as the source
        record.update(module=source.module, version=version)
    builder = {
        SourceKind.GO: _go,
        SourceKind.CARGO: _cargo,
        SourceKind.CMAKE: _cmake,
        SourceKind.MAKE: _make,
    }[source.kind]
    built = builder(_Job(recipe, version, source, pin, directory, work, log, arch, env, expand))
    for name, path in built.items():
        if not path.is_file():
            raise PipelineError(
                f"{recipe.path}: source.outputs.{name}: the build made no {path.relative_to(work)}"
            )
        if path.parent != out:
            shutil.copyfile(path, out / name)
            os.chmod(out / name, path.stat().st_mode & 0o777)
    record["toolchain"] = toolchain(source.kind, arch, directory, tuple(sorted(env.items())))
    if source.kind is SourceKind.CARGO:
        record["crates"] = _locked_crates(directory, src, source.package or source.crate)
    if source.kind is SourceKind.GO:
        record["modules"] = _go_modules(list(built.values()), env)
    return SourceBuild(out, record)


def _locked_crates(directory: Path, top: Path, package: str) -> list[list[str]]:
    """Every crates.io crate `package` really depends on, [name, version] sorted, per the
    Cargo.lock that governed the build (the nearest one up to the source root): what the
    SBOM lists and advisories are matched against. A workspace lock lists every member's
    dependencies, so the graph is walked from `package`."""
    for candidate in (directory, *directory.parents):
        lock = candidate / "Cargo.lock"
        if lock.is_file():
            try:
                entries = tomllib.loads(lock.read_text(encoding="utf-8")).get("package", [])
            except (UnicodeDecodeError, tomllib.TOMLDecodeError):
                return []
            return _reachable(entries, package)
        if candidate == top:
            break
    return []


def _go_modules(binaries: list[Path], env: dict[str, str]) -> list[list[str]]:
    """The modules the Go binaries were linked from, [path, version] sorted, as their build
    info records them (`go version -m`): the SBOM's Go dependency graph."""
    found: set[tuple[str, str]] = set()
    for binary in binaries:
        info = run.run(["go", "version", "-m", str(binary)], env=env, what="go version -m")
        for line in info.stdout.decode(errors="replace").splitlines():
            fields = line.split("\t")
            if len(fields) >= 4 and fields[1] == "dep":
                found.add((fields[2], fields[3]))
    return [list(m) for m in sorted(found)]


def _reachable(entries: list[dict[str, object]], package: str) -> list[list[str]]:
    by_name: dict[str, list[dict[str, object]]] = {}
    for entry in entries:
        by_name.setdefault(str(entry.get("name")), []).append(entry)
    found: set[tuple[str, str]] = set()
    seen: set[tuple[str, str]] = set()
    todo = [(package, "")]
    while todo:
        name, version = todo.pop()
        for entry in by_name.get(name, []):
            key = (name, str(entry.get("version", "")))
            if (version and key[1] != version) or key in seen:
                continue
            seen.add(key)
            if str(entry.get("source", "")).startswith("registry+"):
                found.add(key)
            deps = entry.get("dependencies")
            for dep in deps if isinstance(deps, list) else []:  # "name" or "name version (src)"
                parts = str(dep).split()
                todo.append((parts[0], parts[1] if len(parts) > 1 else ""))
    return [list(k) for k in sorted(found)]


def _pin_record(pin: SourcePin, recipe: Recipe, version: str, arch: Arch) -> dict[str, object]:
    record: dict[str, object] = {k: v for k, v in asdict(pin).items() if v not in (None, (), [])}
    if pin.archive is not None:
        record["archive"] = {
            **asdict(pin.archive),
            "url": recipe.expand(pin.archive.url, version, arch),
        }
    if pin.inputs:
        record["inputs"] = {
            n: {**asdict(f), "url": recipe.expand(f.url, version, arch)} for n, f in pin.inputs
        }
    return record


def _triple(kind: SourceKind, arch: Arch) -> str:
    return arch.facts.rust if kind is SourceKind.CARGO else arch.facts.gnu


def _environment(work: Path, arch: Arch, epoch: int, fetcher: Fetcher) -> dict[str, str]:
    """A clean environment: only what the toolchains need, every path a build embeds under
    `work` mapped to /build."""
    home = work / "home"
    go_telemetry_off(home)
    cache = fetcher.cache_dir / "toolchains"
    prefix = f"-ffile-prefix-map={work}=/build"
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TMPDIR": str(home),  # the build's scratch files stay in its work directory
        "LC_ALL": "C",
        "TZ": "UTC",
        "SOURCE_DATE_EPOCH": str(epoch),
        "CFLAGS": prefix,
        "CXXFLAGS": prefix,
        "GOCACHE": str(cache / "go-build"),
        "GOMODCACHE": str(cache / "go-mod"),
        "GOPROXY": os.environ.get("GOPROXY", GO_PROXY),
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-trimpath -buildvcs=false -mod=readonly",
        "CGO_ENABLED": "0",
        "GOOS": "linux",
        "GOARCH": arch.goarch,
        "GOENV": "off",
        "CARGO_HOME": str(cache / "cargo"),
        "CARGO_INCREMENTAL": "0",
        "CARGO_NET_GIT_FETCH_WITH_CLI": "true",
        # rustup finds its toolchains under the real HOME unless told otherwise.
        "RUSTUP_HOME": os.environ.get("RUSTUP_HOME", str(Path.home() / ".rustup")),
        **{k: v for k, v in os.environ.items() if k == "SSL_CERT_FILE"},
    }


@functools.cache
def sandbox() -> tuple[str, ...]:
    """The command prefix that runs a compile step in private mount and network namespaces:
    directly as root, else in a user namespace mapped to the caller; empty (and said once)
    where the platform permits neither."""
    unshare = shutil.which("unshare")
    namespaces = ["--mount", "--net", "--propagation", "private"]
    tries: list[list[str]] = [[]] if os.geteuid() == 0 else []
    tries.append(["--user", "--map-root-user"])
    for extra in tries if unshare else []:
        prefix = (str(unshare), *extra, *namespaces, "--")
        if subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode == 0:
            return prefix
    _log.warning(
        "source builds run without private mount and network namespaces here (unshare is "
        "missing or not permitted): a build script can reach the network"
    )
    return ()


def _go(job: _Job) -> dict[str, Path]:
    _no_local_replace(job)
    built = {}
    ldflags = job.expand(job.source.ldflags)
    tags = [f"-tags={','.join(job.source.tags)}"] if job.source.tags else []
    packages = list(job.source.packages.values())
    # Every module the packages need, fetched (and checked against go.sum) before the build,
    # which then runs offline.
    run.run(
        ["go", "list", "-deps", *tags, "-f", "{{.ImportPath}}", *packages],
        cwd=job.directory,
        env=job.env,
        what=f"go list -deps ({job.arch})",
    )
    offline = {**job.env, "GOPROXY": "off"}
    for name, package in job.source.packages.items():
        target = job.work / "out" / name
        run.logged(
            [
                *sandbox(),
                "go",
                "build",
                "-o",
                str(target),
                f"-ldflags={ldflags} -buildid=",
                *tags,
                package,
            ],
            cwd=job.directory,
            env=offline,
            what=f"go build {package} ({job.arch})",
            log_file=job.log,
        )
        built[name] = target
    return built


def go_telemetry_off(home: Path) -> None:
    """Make `home` (a private HOME) one where `go` keeps no telemetry: otherwise every go
    command starts a detached child that writes $HOME/.config/go/telemetry after go exited,
    outliving the CLI and recreating files in a work directory already removed. The mode
    file is the switch; GOTELEMETRY in the environment is not."""
    mode = home / ".config" / "go" / "telemetry" / "mode"
    mode.parent.mkdir(parents=True)
    mode.write_text("off\n")


def _no_local_replace(job: _Job) -> None:
    """Refuse a go.mod `replace` that points at a directory: it would compile code from
    outside the pinned module in (`go install mod@version` refuses it for that reason)."""
    proc = run.run(
        ["go", "mod", "edit", "-json"],
        cwd=job.directory,
        env=job.env,
        what=f"go mod edit -json ({job.recipe.path})",
    )
    for replace in json.loads(proc.stdout).get("Replace") or []:
        new = replace.get("New", {})
        if not new.get("Version"):  # a path, not a module version
            raise PipelineError(
                f"{job.recipe.path}: source: go.mod replaces {replace['Old']['Path']} with the "
                f"directory {new.get('Path')!r}; a pinned module must not build code from "
                "outside itself"
            )


def cargo_lock(recipe: Recipe, directory: Path, work: Path) -> Path:
    """The Cargo.lock a cargo build of `directory` uses; a crate must carry its own."""
    lock = directory / "Cargo.lock"
    if not lock.is_file():
        what = "the crate" if recipe.source and recipe.source.crate else "the source"
        raise PipelineError(
            f"{recipe.path}: source: {lock.relative_to(work)} missing; {what} must carry "
            "the Cargo.lock it is built --locked with"
        )
    return lock


def _crate_outputs(job: _Job) -> dict[str, str]:
    """A crate's outputs: the recipe's, each a binary the manifest declares, else them all;
    and the crate's minimum Rust checked against the toolchain's."""
    built = crates.binaries(job.directory)
    wanted = job.source.outputs or {b: b for b in built}
    for name, binary in wanted.items():
        if binary not in built:
            raise PipelineError(
                f"{job.recipe.path}: source.outputs.{name}: crate {job.source.crate} builds "
                f"no binary {binary!r} (it builds: {', '.join(built) or 'none'})"
            )
    needed = crates.rust_version(job.directory)
    rustc = toolchain(SourceKind.CARGO, job.arch, job.directory, tuple(sorted(job.env.items())))
    have = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", rustc["rustc"])
    if needed and have and version_key(have.group(0)) < version_key(needed):
        raise PipelineError(
            f"{job.recipe.path}: source: crate {job.source.crate} needs Rust >= {needed} "
            f"(its rust-version), but the toolchain is {rustc['rustc']}: install a newer "
            "one with rustup (docs/maintainers.md), or build in the module's container"
        )
    return wanted


def _rust_target(job: _Job, triple: str) -> None:
    """A cross build needs the target's standard library (rustup installs it per toolchain)."""
    sysroot = (
        run.run(["rustc", "--print", "sysroot"], cwd=job.directory, env=job.env, what="rustc")
        .stdout.decode()
        .strip()
    )
    if not (Path(sysroot) / "lib" / "rustlib" / triple / "lib").is_dir():
        raise PipelineError(
            f"{job.recipe.path}: source: the Rust standard library for {triple} is not "
            f"installed in {sysroot}: run 'rustup target add {triple}' (docs/maintainers.md)"
        )


def _cargo(job: _Job) -> dict[str, Path]:
    lock = cargo_lock(job.recipe, job.directory, job.work)
    actual = sha256_file(lock)
    if actual != job.pin.lock_sha256:
        raise PipelineError(
            f"{job.recipe.path}: source.versions.{job.version}.lock_sha256: the Cargo.lock "
            f"to build with ({lock.relative_to(job.work)}) has sha256 {actual}, but the "
            f"recipe pins {job.pin.lock_sha256}; review it (`wasm-sysexts lock "
            f"{job.recipe.name} --version {job.version} --from source` writes the pin)"
        )
    outputs = _crate_outputs(job) if job.source.crate else job.source.outputs
    triple = job.arch.facts.rust
    if job.arch is not Arch.host():
        _rust_target(job, triple)
    env = {
        **job.env,
        "CARGO_TARGET_DIR": str(job.work / "target"),
        "RUSTFLAGS": f"--remap-path-prefix={job.work}=/build "
        f"--remap-path-prefix={job.env['CARGO_HOME']}=/cargo",
    }
    if job.arch is not Arch.host():
        env[f"CARGO_TARGET_{triple.upper().replace('-', '_')}_LINKER"] = _cc(job.arch)
        env[f"CC_{triple.replace('-', '_')}"] = _cc(job.arch)
        env[f"CXX_{triple.replace('-', '_')}"] = _cxx(job.arch)
    run.run(
        ["cargo", "fetch", "--locked", "--target", triple],
        cwd=job.directory,
        env=env,
        what=f"cargo fetch ({job.arch})",
    )
    args = [*sandbox(), "cargo", "build", "--release", "--locked", "--offline", "--target", triple]
    if job.source.package:
        args += ["-p", job.expand(job.source.package)]
    if job.source.features:
        args += ["--features", ",".join(job.source.features)]
    run.logged(args, cwd=job.directory, env=env, what=f"cargo build ({job.arch})", log_file=job.log)
    return {name: job.work / "target" / triple / "release" / path for name, path in outputs.items()}


def _cmake(job: _Job) -> dict[str, Path]:
    build = job.work / "build"
    args = [
        "cmake",
        "-S",
        str(job.directory),
        "-B",
        str(build),
        "-G",
        "Unix Makefiles",
        *(job.expand(a) for a in job.source.configure),
    ]
    if job.arch is not Arch.host():
        toolchain_file = job.work / "toolchain.cmake"
        toolchain_file.write_text(
            f"set(CMAKE_SYSTEM_NAME Linux)\nset(CMAKE_SYSTEM_PROCESSOR {job.arch.uname})\n"
            f"set(CMAKE_C_COMPILER {_cc(job.arch)})\nset(CMAKE_CXX_COMPILER {_cxx(job.arch)})\n"
            f"set(CMAKE_ASM_COMPILER {_cc(job.arch)})\n"
            "set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)\n"
        )
        args.append(f"-DCMAKE_TOOLCHAIN_FILE={toolchain_file}")
    run.run([*sandbox(), *args], env=job.env, what=f"cmake configure ({job.arch})")
    target = ["--target", job.expand(job.source.target)] if job.source.target else []
    run.logged(
        [*sandbox(), "cmake", "--build", str(build), *target, "-j", str(os.cpu_count() or 2)],
        env=job.env,
        what=f"cmake build ({job.arch})",
        log_file=job.log,
    )
    return {name: build / path for name, path in job.source.outputs.items()}


def _make(job: _Job) -> dict[str, Path]:
    args = [
        "make",
        "-C",
        str(job.directory),
        f"-j{os.cpu_count() or 2}",
        f"CC={_cc(job.arch)}",
        f"CXX={_cxx(job.arch)}",
        *(job.expand(a) for a in job.source.configure),
    ]
    if job.source.target:
        args.append(job.expand(job.source.target))
    run.logged([*sandbox(), *args], env=job.env, what=f"make ({job.arch})", log_file=job.log)
    return {name: job.directory / path for name, path in job.source.outputs.items()}

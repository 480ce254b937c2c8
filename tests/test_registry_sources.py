"""Registry sources the way a maintainer uses them: `new --crate` writes a pinned recipe from
crates.io, `lock --from source` pins a crate and its Cargo.lock, and builds run with the
default (relative) `--out` and a relative `--cache`, for both arches; a Go module the same way.
The smallest real inputs that exercise each kind: crates.io's `rust-hello-world` 0.1.1 (no
dependencies, a published Cargo.lock) and the wazero module; synthetic crates on the test
mirror for the bad inputs."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from support import prefetch
from support.cache import VM_CACHE
from support.cli import run_cli
from support.mirror import Mirror
from support.payloads import tar_bytes
from support.sources import WAZERO_VERSION, serve_sources, wazero_source_recipe

from pipeline.build.crates import index_url

pytestmark = pytest.mark.source

CRATE, CRATE_VERSION = "rust-hello-world", "0.1.1"
CRATE_SHA256 = "8e9ce6e237883ba3e16fb430b73755f8d7d6432005bd2d9814a8f23396c678d1"  # the index's
CRATE_LOCK = "ddd98a3c28ca5df4646b17639a0a3616fd8f8bdb20d0a093a579fff7b28fab18"


def test_registry_crate_from_new_to_build_with_default_paths(tmp_path: Path) -> None:
    """From nothing to images for both arches, every path relative to where the user is."""
    new = run_cli(
        "new",
        "hello",
        "--crate",
        f"{CRATE}@{CRATE_VERSION}",
        "--recipes",
        "recipes",
        "--cache",
        "cache",
        cwd=tmp_path,
    )
    assert new.returncode == 0, new.stderr
    recipe = (tmp_path / "recipes" / "hello.yaml").read_text()
    pins = f'"{CRATE_VERSION}": {{sha256: "{CRATE_SHA256}", lock_sha256: "{CRATE_LOCK}"}}'
    assert pins in recipe
    assert "package: pkg:cargo/rust-hello-world@{version}" in recipe
    assert "to: /usr/bin/rust-hello-world" in recipe and "license: MIT" in recipe
    check = run_cli("list", "--check", "--recipes", "recipes", cwd=tmp_path)
    assert check.returncode == 0, check.stderr

    # lock --from source writes the same two pins into a recipe that has none.
    (tmp_path / "recipes" / "hello.yaml").write_text(
        recipe.replace(f'"{CRATE_SHA256}"', "null").replace(f'"{CRATE_LOCK}"', "null")
    )
    lock = run_cli(
        "lock",
        "hello",
        "--from",
        "source",
        "--recipes",
        "recipes",
        "--cache",
        "cache",
        cwd=tmp_path,
    )
    assert lock.returncode == 0, lock.stderr
    assert f"{CRATE}-{CRATE_VERSION}.crate: {CRATE_SHA256} (matches the crates.io index)" in (
        lock.stdout
    )
    assert f"Cargo.lock: {CRATE_LOCK}" in lock.stdout
    assert (tmp_path / "recipes" / "hello.yaml").read_text() == recipe

    build = run_cli(
        "build",
        "hello",
        "--recipes",
        "recipes",
        "--cache",
        "cache",
        "--arch",
        "x86-64",
        "--arch",
        "arm64",
        "--json",
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr
    assert [r["status"] for r in json.loads(build.stdout)] == ["built", "built"]
    out = tmp_path / "out"  # the default --out, where the user ran it
    for arch, machine in (("x86-64", "x86-64"), ("arm64", "arm64")):
        meta = json.loads((out / f"hello-{CRATE_VERSION}-{arch}.raw.json").read_text())
        assert [e["machine"] for e in meta["elf"]] == [machine]
        assert meta["source"]["lock_sha256"] == CRATE_LOCK
    sbom = json.loads((out / f"hello-{CRATE_VERSION}-x86-64.spdx.json").read_text())
    purls = [r["referenceLocator"] for p in sbom["packages"] for r in p.get("externalRefs", [])]
    assert f"pkg:cargo/{CRATE}@{CRATE_VERSION}" in purls
    tree = tmp_path / "tree"
    subprocess.run(
        ["unsquashfs", "-q", "-d", str(tree), str(out / f"hello-{CRATE_VERSION}-x86-64.raw")],
        check=True,
    )
    ran = subprocess.run([tree / "usr/bin/rust-hello-world"], capture_output=True, text=True)
    assert ran.stdout.splitlines()[-1] == "Hello World"

    # `try`: the smoke commands against each image in seconds, the arm64 one through qemu-user,
    # in the reference VM's roots (the VM tests' cache; made here if they are not yet).
    prefetch.wait()
    for arch in ("x86-64", "arm64"):
        image = f"hello-{CRATE_VERSION}-{arch}.raw"
        tried = run_cli(
            "try", f"out/{image}", "--recipes", "recipes", "--cache", VM_CACHE, cwd=tmp_path
        )
        assert tried.returncode == 0, tried.stdout + tried.stderr
        lines = tried.stdout.splitlines()  # the crate prints a greeting, then Hello World
        assert lines[0] == f"PASS  {image}: rust-hello-world --version"
        assert lines[-1] == "      Hello World"
    path = tmp_path / "recipes" / "hello.yaml"
    path.write_text(path.read_text().replace("smoke: [", 'smoke: ["test -x /usr/bin/nope", '))
    failed = run_cli(
        "try",
        f"out/hello-{CRATE_VERSION}-x86-64.raw",
        "--recipes",
        "recipes",
        "--cache",
        VM_CACHE,
        cwd=tmp_path,
    )
    assert failed.returncode == 1
    assert (
        failed.stdout.splitlines()[0]
        == f"FAIL  hello-{CRATE_VERSION}-x86-64.raw: test -x /usr/bin/nope"
    )


def test_registry_go_module_with_default_paths(mirror: Mirror, tmp_path: Path) -> None:
    pins = serve_sources(mirror)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "wazero.yaml").write_text(wazero_source_recipe(pins["wazero-h1"]))
    build = run_cli(
        "build",
        "wazero",
        "--recipes",
        "recipes",
        "--cache",
        "cache",
        "--mirror",
        mirror.url,
        "--arch",
        "x86-64",
        "--json",
        cwd=tmp_path,
        timeout=1800,
    )
    assert build.returncode == 0, build.stderr
    meta = json.loads((tmp_path / "out" / f"wazero-{WAZERO_VERSION}-x86-64.raw.json").read_text())
    assert meta["source"]["h1"] == pins["wazero-h1"]

    wrong = wazero_source_recipe("h1:" + "A" * 43 + "=")
    (tmp_path / "recipes" / "wazero.yaml").write_text(wrong)
    bad = run_cli(
        "build",
        "wazero",
        "--recipes",
        "recipes",
        "--cache",
        "fresh",
        "--mirror",
        mirror.url,
        "--arch",
        "x86-64",
        cwd=tmp_path,
    )
    assert bad.returncode == 1
    assert f"module hash {pins['wazero-h1']} does not match the pinned h1:AAAA" in bad.stderr


def _crate(mirror: Mirror, name: str, files: dict[str, str], cksum: str | None = None) -> str:
    """A synthetic crate 1.0.0 on the mirror, with its index record; returns its sha256."""
    data = tar_bytes({f"{name}-1.0.0/{k}": v.encode() for k, v in files.items()}, "gz")
    digest = hashlib.sha256(data).hexdigest()
    mirror.put(f"https://static.crates.io/crates/{name}/{name}-1.0.0.crate", data)
    record = {"name": name, "vers": "1.0.0", "deps": [], "cksum": cksum or digest, "yanked": False}
    mirror.put(index_url(name), (json.dumps(record) + "\n").encode())
    return digest


def _recipe(directory: Path, name: str, pin: str, extra: str = "") -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(f"""\
name: {name}
summary: a synthetic crate
homepage: https://example.org/{name}
license: MIT
package: "pkg:cargo/{name}@{{version}}"
version: "1.0.0"
source:
  kind: cargo
  crate: {name}
{extra}  versions:
    "1.0.0": {pin}
install:
  - {{from: "{name}", to: /usr/bin/{name}, mode: "0755"}}
""")
    return path


def _pinned_crate(
    mirror: Mirror, recipes: Path, name: str, more: str = "", extra: str = "", **files: str
) -> None:
    """A synthetic crate that builds (`more` adds to its manifest, `files` to its tree), on
    the mirror, and its recipe pinned to it (`extra` adds to its source: section)."""
    lock = LOCK.format(name=name)
    tree = {"Cargo.toml": MANIFEST.format(name=name, more=more), "src/main.rs": MAIN}
    sha = _crate(mirror, name, {**tree, "Cargo.lock": lock, **files})
    pin = f'{{sha256: "{sha}", lock_sha256: "{hashlib.sha256(lock.encode()).hexdigest()}"}}'
    _recipe(recipes, name, pin, extra)


MANIFEST = '[package]\nname = "{name}"\nversion = "1.0.0"\nedition = "2021"\n{more}'
LOCK = '# generated\nversion = 3\n\n[[package]]\nname = "{name}"\nversion = "1.0.0"\n'
MAIN = 'fn main() { println!("hi"); }\n'


def test_registry_bad_inputs_are_one_line_naming_the_field(mirror: Mirror, tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    recipes.mkdir()

    def fails(*args: str) -> str:
        proc = run_cli(
            *args,
            "--recipes",
            recipes,
            "--mirror",
            mirror.url,
            "--cache",
            tmp_path / "cache",
            cwd=tmp_path,
        )
        assert proc.returncode == 1, proc.stdout
        errors = [ln for ln in proc.stderr.splitlines() if "error:" in ln or "FAILED" in ln]
        assert len(errors) == 1, proc.stderr
        return errors[0]

    files = {
        "Cargo.toml": MANIFEST.format(name="wsxa", more=""),
        "src/main.rs": MAIN,
        "Cargo.lock": LOCK.format(name="wsxa"),
    }
    digest = _crate(mirror, "wsxa", files, cksum="0" * 64)
    path = _recipe(recipes, "wsxa", "{sha256: null, lock_sha256: null}")
    before = path.read_text()
    assert fails("lock", "wsxa", "--from", "source") == (
        f"wasm-sysexts: error: {path}: source.versions.1.0.0.sha256: "
        f"https://static.crates.io/crates/wsxa/wsxa-1.0.0.crate has sha256 {digest}, but the "
        f"crates.io index records {'0' * 64}"
    )
    assert path.read_text() == before  # nothing written

    _crate(
        mirror, "wsxb", {"Cargo.toml": MANIFEST.format(name="wsxb", more=""), "src/main.rs": MAIN}
    )
    _recipe(recipes, "wsxb", "{sha256: null, lock_sha256: null}")
    assert fails("lock", "wsxb", "--from", "source") == (
        f"wasm-sysexts: error: {recipes / 'wsxb.yaml'}: source: src/Cargo.lock missing; the "
        "crate must carry the Cargo.lock it is built --locked with"
    )

    _pinned_crate(mirror, recipes, "wsxc", more='rust-version = "9.0"\n')
    error = fails("build", "wsxc", "--arch", "x86-64")
    assert error.endswith(
        f"{recipes / 'wsxc.yaml'}: source: crate wsxc needs Rust >= 9.0 (its rust-version), "
        f"but the toolchain is {error.split('the toolchain is ')[1].split(':')[0]}: install a "
        "newer one with rustup (docs/maintainers.md), or build in the module's container"
    )

    _pinned_crate(mirror, recipes, "wsxd", extra="  outputs: {nope: nope}\n")
    assert fails("build", "wsxd", "--arch", "x86-64").endswith(
        f"{recipes / 'wsxd.yaml'}: source.outputs.nope: crate wsxd builds no binary 'nope' "
        "(it builds: wsxd)"
    )


def test_registry_long_failing_build_is_followed_and_kept(mirror: Mirror, tmp_path: Path) -> None:
    """A compile that takes over 30 s, then fails: progress lines while it runs, its full log
    kept beside the output with its path in the error, and with --keep-work its work tree."""
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    build_rs = (
        "fn main() { std::thread::sleep(std::time::Duration::from_secs(35));"
        ' panic!("wsx: this build script fails on purpose"); }\n'
    )
    _pinned_crate(mirror, recipes, "wsxslow", more='build = "build.rs"\n', **{"build.rs": build_rs})
    proc = run_cli(
        "build",
        "wsxslow",
        "--recipes",
        recipes,
        "--mirror",
        mirror.url,
        "--cache",
        "cache",
        "--arch",
        "x86-64",
        "--keep-work",
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert "cargo build (x86-64): still running, 30 s" in proc.stderr
    log = tmp_path / "out" / "wsxslow-1.0.0-x86-64.raw.build.log"
    [error] = [ln for ln in proc.stderr.splitlines() if "FAILED" in ln]
    assert error.endswith(f"(full log: {log})")
    text = log.read_text()
    assert text.startswith("+ ") and "wsx: this build script fails on purpose" in text
    work = tmp_path / "out" / "wsxslow-1.0.0-x86-64.raw.work"
    assert (work / "source" / "src" / "build.rs").is_file()
    assert not list((tmp_path / "out").glob("*.raw"))  # no image, only what explains why

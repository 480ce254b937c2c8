"""build-all, lock and new through the CLI, against the local mirror."""

from __future__ import annotations

import json
from pathlib import Path

from support.cli import run_cli
from support.mirror import Mirror
from support.recipes import pinned_tiny, serve, tiny_tarball, write_recipe

from pipeline.core.vocab import Arch
from pipeline.recipe import load


def test_build_all_builds_the_rest_when_one_fails(mirror: Mirror, tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    pinned_tiny(mirror, recipes, "alpha")
    pinned_tiny(mirror, recipes, "beta")
    write_recipe(
        recipes,
        "broken",
        '    x86-64: {url: "https://example.org/nowhere.tar.gz", '
        f'sha256: "{"3" * 64}"}}\n'
        '    arm64: {unavailable: "no upstream arm64 build"}\n',
    )
    base: list[str | Path] = [
        "--recipes",
        recipes,
        "--mirror",
        mirror.url,
        "--cache",
        tmp_path / "cache",
        "--out",
        tmp_path / "out",
        "--jobs",
        "3",
    ]
    proc = run_cli("build-all", *base, "--arch", "x86-64", "--arch", "arm64", "--json")
    assert proc.returncode == 1
    results = {(r["name"], r["arch"]): r for r in json.loads(proc.stdout)}
    assert results[("alpha", "x86-64")]["status"] == "built"
    assert results[("beta", "x86-64")]["status"] == "built"
    assert results[("broken", "x86-64")]["status"] == "failed"
    assert "HTTP 404" in results[("broken", "x86-64")]["error"]
    assert results[("broken", "arm64")]["status"] == "skipped"
    # alpha and beta have no arm64 entry at all: that is an error in the recipe, not a skip.
    assert results[("alpha", "arm64")]["status"] == "failed"
    assert "no entry for arch 'arm64'" in results[("alpha", "arm64")]["error"]
    sums = (tmp_path / "out" / "SHA256SUMS").read_text().splitlines()
    assert [line.split()[1] for line in sums] == [
        f"{name}-1.0-x86-64{suffix}"
        for name in ("alpha", "beta")
        for suffix in (".raw", ".spdx.json")
    ]

    table = run_cli("build-all", *base, "--arch", "x86-64")
    assert table.returncode == 1
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["IMAGE", "STATUS", "SIZE", "SHA256", "TIME", "DETAIL"]
    status = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert status == {
        "alpha-1.0-x86-64.raw": "unchanged",
        "beta-1.0-x86-64.raw": "unchanged",
        "broken-1.0-x86-64.raw": "failed",
    }
    assert "[alpha 1.0 x86-64] unchanged" in table.stderr


def test_lock_pins_inputs_checked_against_upstream_checksums(
    mirror: Mirror, tmp_path: Path
) -> None:
    base = "https://example.org/locky/v1.0"
    x86 = serve(mirror, f"{base}/locky-x86_64.tar.gz", tiny_tarball())
    arm = serve(mirror, f"{base}/locky-aarch64.tar.gz", tiny_tarball() + b"\0" * 512)
    mirror.put(
        f"{base}/checksums.txt",
        f"{x86}  locky-x86_64.tar.gz\n{arm} *locky-aarch64.tar.gz\n".encode(),
    )
    path = write_recipe(
        tmp_path,
        "locky",
        f'    x86-64: {{url: "{base}/locky-{{uarch}}.tar.gz", sha256: null}}  # keep me\n'
        f'    arm64: {{url: "{base}/locky-{{uarch}}.tar.gz",\n'
        f"             sha256: null}}\n",
        extra=f'checksums: "{base}/checksums.txt"\n',
    )
    proc = run_cli(
        "lock",
        "locky",
        "--recipes",
        tmp_path,
        "--mirror",
        mirror.url,
        "--cache",
        tmp_path / "cache",
    )
    # Both arches share one URL template: the pin line for it is ambiguous, so nothing changes.
    assert proc.returncode == 1 and "cannot find one line with url" in proc.stderr
    assert "sha256: null}  # keep me" in path.read_text()

    write_recipe(
        tmp_path,
        "locky",
        f'    x86-64: {{url: "{base}/locky-x86_64.tar.gz", sha256: null}}  # keep me\n'
        f'    arm64: {{url: "{base}/locky-aarch64.tar.gz", sha256: null}}\n',
        extra=f'checksums: "{base}/checksums.txt"\n',
    )
    proc = run_cli(
        "lock",
        "locky",
        "--recipes",
        tmp_path,
        "--mirror",
        mirror.url,
        "--cache",
        tmp_path / "cache",
        check=True,
    )
    assert f"locky: locky-x86_64.tar.gz: {x86} (matches upstream checksums)" in proc.stdout
    text = path.read_text()
    assert f'sha256: "{x86}"}}  # keep me' in text and "# test recipe locky" in text
    recipe = load(path)
    assert [i.sha256 for i in recipe.inputs("1.0", Arch.ARM64)] == [arm]
    build = run_cli(
        "build",
        "locky",
        "--recipes",
        tmp_path,
        "--mirror",
        mirror.url,
        "--cache",
        tmp_path / "cache",
        "--out",
        tmp_path / "out",
        "--arch",
        "x86-64",
    )
    assert build.returncode == 0, build.stderr


def test_lock_refuses_a_download_that_upstream_checksums_disown(
    mirror: Mirror, tmp_path: Path
) -> None:
    base = "https://example.org/liar/v1.0"
    serve(mirror, f"{base}/liar.tar.gz", tiny_tarball())
    mirror.put(f"{base}/SHA256SUMS", f"{'4' * 64}  liar.tar.gz\n".encode())
    path = write_recipe(
        tmp_path,
        "liar",
        f'    x86-64: {{url: "{base}/liar.tar.gz", sha256: null}}\n',
        extra=f'checksums: "{base}/SHA256SUMS"\n',
    )
    before = path.read_text()
    proc = run_cli(
        "lock", "liar", "--recipes", tmp_path, "--mirror", mirror.url, "--cache", tmp_path / "cache"
    )
    assert proc.returncode == 1
    assert f"does not match {'4' * 64} in" in proc.stderr and "liar/v1.0/SHA256SUMS" in proc.stderr
    assert path.read_text() == before


def test_new_scaffolds_a_recipe_that_validates(tmp_path: Path) -> None:
    proc = run_cli("new", "my-runtime", "--recipes", tmp_path, check=True)
    assert "wasm-sysexts lock my-runtime" in proc.stdout
    recipe = load(tmp_path / "my-runtime.yaml")
    assert recipe.name == "my-runtime" and recipe.inputs("0.0.0", Arch.X86_64)[0].sha256 is None
    again = run_cli("new", "my-runtime", "--recipes", tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr
    bad = run_cli("new", "Bad Name", "--recipes", tmp_path)
    assert bad.returncode == 1 and "must match" in bad.stderr


def test_new_skeleton_placeholders_fail_list_check_until_filled(tmp_path: Path) -> None:
    """A skeleton loads, but CI's `list --check` names each field `new` left a placeholder in;
    an invalid SPDX license fails as the recipe loads."""
    run_cli("new", "my-runtime", "--recipes", tmp_path, check=True)
    proc = run_cli("list", "--check", "--recipes", tmp_path)
    assert proc.returncode == 1
    path = tmp_path / "my-runtime.yaml"
    for field, marker in (
        ("summary", "TODO"),
        ("homepage", "TODO"),
        ("license", "TODO"),
        ("package", "OWNER/REPO"),
        ("versions", "OWNER/REPO"),
    ):
        assert f"{path}: {field}: still the placeholder `new` wrote ({marker})" in proc.stderr
    path.write_text(path.read_text().replace("LicenseRef-TODO", "Apache 2"))
    bad = run_cli("list", "--check", "--recipes", tmp_path)
    assert bad.returncode == 1 and f"{path}: license: " in bad.stderr

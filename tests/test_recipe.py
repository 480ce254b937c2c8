"""Recipe validation reports every problem as `FILE: field: message`; the repository's own
recipes all validate and expand to real release URLs for both arches."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support.cli import run_cli
from support.recipes import write_recipe

from pipeline.core.vocab import Arch
from pipeline.recipe import RecipeError, default_recipes_dir, load, load_all
from pipeline.recipe.model import BuildFrom

BAD = """\
name: Not_Valid
summary: ""
homepage: https://example.org
license: MIT
version: 1.10
colour: blue
versions:
  "1.0":
    x86-64: {url: "http://insecure.example.org/a.tar.gz", sha256: "ABC"}
    sparc: {url: "https://example.org/b.tar.gz", sha256: null}
    arm64: {url: "https://example.org/{nope}.tar.gz", sha256: null}
install:
  - {from: "../escape", to: /usr/bin/x}
  - {from: "bin/x", to: /etc/x, mode: "4755"}
  - {from: "bin/y", to: /usr/bin/y, mode: 755}
files:
  - {path: /usr/lib/x, content: 3}
os: {id: flatcar}
smoke: "not a list"
"""


def test_every_problem_is_reported_with_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BAD)
    with pytest.raises(RecipeError) as info:
        load(path)
    problems = info.value.problems
    expected = [
        "colour: unknown field",
        "name: 'Not_Valid' must match",
        "summary: must be a non-empty string",
        "version: must be a quoted string",
        "versions.1.0.x86-64.url: must be an https:// URL",
        "versions.1.0.sparc: unknown arch",
        "versions.1.0.arm64.url: unknown placeholder {nope}",
        "install[0].from: must be a relative archive member path",
        "install[1].to: must be an absolute path under /usr/ or /opt/",
        "install[1].mode: setuid, setgid and sticky bits are not allowed",
        'install[2].mode: must be an octal string such as "0755"',
        "files[0].content: must be a string",
        "smoke: must be a list",
        "os: a specific os.id needs sysext_level or version_id",
    ]
    for fragment in expected:
        assert any(p.startswith(f"{path}: ") and fragment in p for p in problems), (
            fragment,
            problems,
        )
    assert all(re.match(rf"^{re.escape(str(path))}: [^:]+: ", p) for p in problems), problems


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("name: x\nversions: {\n")
    with pytest.raises(RecipeError, match=rf"^{re.escape(str(path))}: line \d+: invalid YAML"):
        load(path)


def test_cli_lists_all_problems_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text(BAD)
    proc = run_cli("list", "--recipes", tmp_path)
    assert proc.returncode == 1
    # One line per problem load() finds, in its order, each with the CLI's error prefix.
    with pytest.raises(RecipeError) as info:
        load(tmp_path / "broken.yaml")
    assert proc.stderr.splitlines() == [
        f"wasm-sysexts: error: {problem}" for problem in info.value.problems
    ]


def test_repository_recipes_validate_and_expand_for_both_arches() -> None:
    recipes = load_all(default_recipes_dir())
    names = {r.name for r in recipes}
    assert {
        "wasmtime",
        "wasmedge",
        "wasmer",
        "spin",
        "wasmcloud",
        "wamr",
        "wazero",
        "containerd-shim-wasmtime",
        "containerd-shim-wasmedge",
        "containerd-shim-wasmer",
        "containerd-shim-wamr",
        "containerd-shim-spin",
    } <= names
    for recipe in recipes:
        assert recipe.smoke, recipe.name
        for version, arches in recipe.versions.items():
            assert set(arches) == set(Arch), (recipe.name, version)
            for arch in Arch:
                if recipe.unavailable(version, arch, BuildFrom.RELEASE):
                    continue
                for item in recipe.inputs(version, arch):
                    url = recipe.expand(item.url, version, arch)
                    assert url.startswith("https://") and "{" not in url, url
                for entry in recipe.install:
                    assert "{" not in recipe.expand(entry.src, version, arch)
    wamr = next(r for r in recipes if r.name == "wamr")
    # No upstream aarch64 iwasm: the release arch is unavailable, the default source build is not.
    assert wamr.unavailable(wamr.version, Arch.ARM64, BuildFrom.RELEASE)
    assert wamr.unavailable(wamr.version, Arch.ARM64) is None
    # The default version of most runtimes must be buildable: pinned for every arch.
    buildable = [r.name for r in recipes if r.pinned(r.version)]
    assert {"wasmtime", "wasmedge", "wasmer", "spin", "wasmcloud", "wamr", "wazero"} <= set(
        buildable
    )


def test_list_json_describes_every_recipe() -> None:
    proc = run_cli("list", "--json", check=True)
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert rows["wasmtime"]["arches"] == {"arm64": "available", "x86-64": "available"}
    # WAMR builds from source by default, so its arm64 image is available too.
    assert rows["wamr"]["from"] == "source" and rows["wamr"]["source"] == "cmake"
    assert rows["wamr"]["arches"]["arm64"] == "available"
    assert rows["wasmtime"]["pinned"] is True
    assert set(rows["wasmtime"]) == {
        "name",
        "version",
        "summary",
        "license",
        "homepage",
        "packages",
        "versions",
        "arches",
        "pinned",
        "from",
        "source",
    }


def test_list_check_refuses_an_unpinned_default(tmp_path: Path) -> None:
    """CI runs `list --check`: the repository's defaults are all pinned; a null pin for an arch
    that is not marked unavailable fails it, naming the recipe and the field."""
    ok = run_cli("list", "--check")
    assert ok.returncode == 0 and "every default version pinned" in ok.stdout, ok.stderr
    pinned = f'    x86-64: {{url: "https://example.org/x86_64.tar.gz", sha256: "{"a" * 64}"}}\n'
    write_recipe(
        tmp_path,
        "halfpinned",
        pinned + '    arm64: {url: "https://example.org/h-aarch64.tar.gz", sha256: null}\n',
    )
    write_recipe(
        tmp_path, "honest", pinned + '    arm64: {unavailable: "upstream ships no arm64 build"}\n'
    )
    proc = run_cli("list", "--check", "--recipes", tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"{tmp_path / 'halfpinned.yaml'}: versions.1.0.arm64: the default version has a null "
        "sha256 (pin it with lock, or mark the arch {unavailable: why})"
    ]
    assert "2 recipe(s): 1 unpinned default input(s)" in proc.stdout

"""The Dagger module (.dagger/), checked offline: it imports, its functions register with the
documented names and types, whole-sentence descriptions and a CLI source without recipes or
keys. tests/test_dagger.py runs every function on a real engine."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tomllib
import typing
from pathlib import Path

import dagger
from dagger import Ignore
from support.daggerq import functions
from wasm_sysexts import main as module

ROOT = Path(__file__).resolve().parent.parent


def test_typedefs_register_until_the_engine_is_needed() -> None:
    # In a fresh interpreter: a connection another test opened in this one would be reused.
    code = ("import sys; sys.path[:0] = ['tests', '.dagger/src']\n"
            "from support.daggerq import register_typedefs\n"
            "print(type(register_typedefs()).__name__)")
    env = {k: v for k, v in os.environ.items() if "DAGGER" not in k}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.stdout.strip() == "ClientConnectionError", proc.stdout + proc.stderr


def test_module_is_its_own_project_the_sdk_runtime_can_install() -> None:
    """dagger.json points at .dagger, whose pyproject takes dagger-io from the vendored ./sdk
    (version 0.0.0) without a version pin; the CLI package does not depend on dagger-io."""
    import json

    config = json.loads((ROOT / "dagger.json").read_text())
    assert config["source"] == ".dagger" and config["sdk"] == {"source": "python"}
    project = tomllib.loads((ROOT / ".dagger/pyproject.toml").read_text())
    assert project["project"]["name"] == "wasm-sysexts"
    assert "dagger-io" in project["project"]["dependencies"]  # no ==X: sdk is 0.0.0
    assert project["tool"]["uv"]["sources"]["dagger-io"] == {"path": "sdk", "editable": True}
    assert 'name = "dagger-io"' in (ROOT / ".dagger/uv.lock").read_text()
    cli = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert not [d for d in cli["project"]["dependencies"] if d.startswith("dagger")]
    # The runtime imports <package>:<MainObject> from the dagger.json name.
    assert module.WasmSysexts.__name__ == "WasmSysexts"


def test_functions_have_documented_signatures() -> None:
    funcs = {k: v for k, v in functions().items() if k}  # "" is the constructor
    assert set(funcs) == {"base", "build", "build_all", "sign", "verify", "smoke_test",
                          "publish_static", "publish_oci"}
    constructor = [f.name for f in dataclasses.fields(module.WasmSysexts)]
    assert constructor == ["source", "base_image", "base_container", "mirror_service",
                           "registry_service"]
    assert funcs["base"].return_type is dagger.Container
    build = funcs["build"]
    assert build.return_type is dagger.Directory  # the image, its metadata, SBOM, SHA256SUMS
    assert list(build.parameters) == ["runtime", "recipes", "version", "arch", "format",
                                      "mirror", "build_from"]
    assert build.parameters["recipes"].default_path == "sysexts"
    assert build.parameters["version"].default_value == '""'  # the recipe's version
    assert build.parameters["arch"].default_value == '"x86-64"'
    assert funcs["build_all"].return_type is dagger.Directory
    assert funcs["build_all"].parameters["arch"].is_nullable
    assert funcs["build_all"].parameters["keep_going"].default_value == "false"
    sign = funcs["sign"]
    assert sign.return_type is dagger.Directory
    assert list(sign.parameters) == ["images", "gpg_key", "verity_key", "verity_cert"]
    assert sign.parameters["gpg_key"].resolved_type is dagger.Secret
    assert not sign.parameters["gpg_key"].is_nullable
    assert funcs["verify"].return_type is dagger.File  # the report; the call fails on FAILED
    smoke = funcs["smoke_test"]
    assert smoke.return_type is module.SmokeTest
    assert smoke.parameters["os"].default_value == '"flatcar"'
    assert smoke.parameters["flatcar_keyring"].default_path == \
        "keys/flatcar-image-signing.asc"
    static, oci = funcs["publish_static"], funcs["publish_oci"]
    assert static.cache_policy == "never" and oci.cache_policy == "never"
    assert static.return_type is dagger.Directory and oci.return_type is dagger.File
    assert oci.parameters["password"].is_nullable  # anonymous pushes to open registries


def test_every_description_is_a_whole_first_sentence() -> None:
    """`dagger functions` shows each function's first docstring line: a whole sentence."""
    for name in functions():
        if not name:
            continue
        doc = getattr(module.WasmSysexts, name).__doc__ or ""
        first = doc.strip().splitlines()[0]
        assert first.endswith(".") and first[0].isupper(), (name, first)


def test_module_installs_the_cli_from_no_recipe_and_no_key() -> None:
    """The source filter the CLI is installed from holds the package, never a recipe or a
    key, so editing either changes no layer under the builds."""
    hints = typing.get_type_hints(module.WasmSysexts, include_extras=True)
    ignore = next(m for m in hints["source"].__metadata__ if isinstance(m, Ignore))
    kept = [p.removeprefix("!") for p in ignore.patterns if p.startswith("!")]
    assert kept == module.CLI_SOURCE
    assert not [p for p in kept if p.endswith((".yaml", "/**")) and
                p.startswith(("sysexts", "keys"))]
    assert "pipeline/**" in kept and "pyproject.toml" in kept

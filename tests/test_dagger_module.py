"""The Dagger module (.dagger/), checked offline: it imports, its functions register with the
documented names and types, whole-sentence descriptions and a CLI source without recipes or
keys. tests/test_dagger.py runs every function on a real engine."""

from __future__ import annotations

import dataclasses
import inspect
import os
import subprocess
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any, cast

import dagger
from dagger import DefaultPath, Ignore
from wasm_sysexts import main as module

ROOT = Path(__file__).resolve().parent.parent


def test_typedefs_register_until_the_engine_is_needed() -> None:
    # In a fresh interpreter: a connection another test opened in this one would be reused.
    code = (
        "import sys; sys.path[:0] = ['tests', '.dagger/src']\n"
        "from support.daggerq import register_typedefs\n"
        "print(type(register_typedefs()).__name__)"
    )
    env = {k: v for k, v in os.environ.items() if "DAGGER" not in k}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
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


def public_functions() -> dict[str, inspect.Signature]:
    """What `dagger functions` lists: the public methods (their parameters become the
    `dagger call` flags, kebab-cased)."""
    return {
        name: inspect.signature(value)
        for name, value in vars(module.WasmSysexts).items()
        if inspect.isfunction(value) and not name.startswith("_")
    }


def flags(name: str) -> dict[str, object]:
    """{parameter: default} of one function, `inspect.Parameter.empty` when required."""
    return {p: v.default for p, v in public_functions()[name].parameters.items() if p != "self"}


def meta(name: str, parameter: str) -> list[object]:
    hints = typing.get_type_hints(getattr(module.WasmSysexts, name), include_extras=True)
    return list(hints[parameter].__metadata__)


def returns(name: str) -> object:
    return typing.get_type_hints(getattr(module.WasmSysexts, name))["return"]


def test_functions_take_the_documented_flags() -> None:
    """The functions, flags and defaults docs/dagger.md and the release workflow use."""
    required = inspect.Parameter.empty
    assert set(public_functions()) == {
        "base",
        "build",
        "build_all",
        "audit",
        "sign",
        "verify",
        "smoke_test",
        "publish_static",
        "publish_oci",
    }
    # A dataclass made by @object_type, whose dataclass_transform mypy does not apply.
    constructor = [f.name for f in dataclasses.fields(cast(Any, module.WasmSysexts))]
    assert constructor == [
        "source",
        "base_image",
        "base_container",
        "mirror_service",
        "registry_service",
    ]
    assert returns("base") is dagger.Container
    # The image, its metadata, SBOM and SHA256SUMS; the version defaults to the recipe's.
    assert returns("build") is dagger.Directory
    assert flags("build") == {
        "runtime": required,
        "recipes": required,
        "version": "",
        "arch": "x86-64",
        "format": "squashfs",
        "mirror": "",
        "build_from": "",
        "accept_advisory": None,
        "advisories": None,
    }
    assert DefaultPath("sysexts") in meta("build", "recipes")
    assert returns("build_all") is dagger.Directory
    assert flags("build_all") == {
        "recipes": required,
        "arch": None,
        "format": "squashfs",
        "mirror": "",
        "keep_going": False,
        "advisories": None,
    }
    for name in ("build", "build_all", "audit"):
        assert DefaultPath("advisories") in meta(name, "advisories")
    assert returns("audit") is dagger.File  # the JSON report; the call fails on a finding
    assert flags("audit") == {
        "images": required,
        "db": None,
        "online": False,
        "fail_on": "medium",
        "advisories": None,
    }
    assert returns("sign") is dagger.Directory
    assert flags("sign") == {
        "images": required,
        "gpg_key": required,
        "verity_key": None,
        "verity_cert": None,
    }
    sign = typing.get_type_hints(module.WasmSysexts.sign)
    assert sign["gpg_key"] is dagger.Secret  # required, and never a plain string
    assert returns("verify") is dagger.File  # the report; the call fails on a FAILED line
    assert returns("smoke_test") is module.SmokeTest
    assert flags("smoke_test")["os"] == "flatcar"
    assert DefaultPath("keys/flatcar-image-signing.asc") in meta("smoke_test", "flatcar_keyring")
    assert returns("publish_static") is dagger.Directory
    assert returns("publish_oci") is dagger.File
    assert flags("publish_oci")["password"] is None  # anonymous pushes to open registries


def test_every_description_is_a_whole_first_sentence() -> None:
    """`dagger functions` shows each function's first docstring line: a whole sentence."""
    for name in public_functions():
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
    assert not [
        p for p in kept if p.endswith((".yaml", "/**")) and p.startswith(("sysexts", "keys"))
    ]
    assert "pipeline/**" in kept and "pyproject.toml" in kept

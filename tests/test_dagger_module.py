"""The Dagger module (.dagger/), checked offline: it imports, its functions register with the
documented names and types, and the container queries it builds keep secrets in mounted secret
files only. tests/test_dagger.py runs every function on a real engine."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import anyio
import dagger
from dagger import dag
from support.daggerq import execs, functions, instance, selections
from wasm_sysexts import main as module

ROOT = Path(__file__).resolve().parent.parent
GPG_PLAINTEXT = "-----BEGIN PGP PRIVATE KEY BLOCK----- not-a-real-gpg-key"
VERITY_PLAINTEXT = "-----BEGIN PRIVATE KEY----- not-a-real-verity-key"


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
    assert set(funcs) == {"build", "build_all", "sign", "verify", "smoke_test",
                          "publish_static", "publish_oci"}
    constructor = [f.name for f in dataclasses.fields(module.WasmSysexts)]
    assert constructor == ["source", "base_image", "mirror_service", "registry_service"]
    build = funcs["build"]
    assert build.return_type is dagger.File
    assert list(build.parameters) == ["runtime", "version", "recipes", "arch", "format", "mirror",
                                      "build_from"]
    assert build.parameters["recipes"].default_path == "sysexts"
    assert build.parameters["arch"].default_value == '"x86-64"'
    assert funcs["build_all"].return_type is dagger.Directory
    assert funcs["build_all"].parameters["arch"].is_nullable
    sign = funcs["sign"]
    assert sign.return_type is dagger.Directory
    assert list(sign.parameters) == ["images", "gpg_key", "verity_key", "verity_cert"]
    assert sign.parameters["gpg_key"].resolved_type is dagger.Secret
    assert not sign.parameters["gpg_key"].is_nullable
    assert funcs["verify"].return_type is str
    smoke = funcs["smoke_test"]
    assert smoke.return_type is dagger.File  # the JSON report, to export or read on
    assert smoke.parameters["os"].default_value == '"flatcar"'
    static, oci = funcs["publish_static"], funcs["publish_oci"]
    assert static.cache_policy == "never" and oci.cache_policy == "never"
    assert static.return_type is dagger.Directory and oci.return_type is str
    assert oci.parameters["password"].is_nullable  # anonymous pushes to open registries


def test_base_image_is_a_pinned_constructor_argument() -> None:
    assert "@sha256:" in module.BASE_IMAGE
    file = anyio.run(lambda: instance().build("wasmtime", "49.0.4", recipes=dag.directory(),
                                              arch="arm64", build_from="release"))
    assert selections(file)[1] == ("from", {"address": "example.org/base@sha256:" + "0" * 64})
    commands = execs(file)
    assert {"squashfs-tools", "erofs-utils"} <= set(commands[1])
    assert commands[-1][:2] == ["wasm-sysexts", "build"]
    # The provenance sign writes names this module, its engine and base image as the builder.
    env = {a["name"]: a["value"] for name, a in selections(file) if name == "withEnvVariable"}
    assert env["WASM_SYSEXTS_BUILDER_ID"] == "https://wasm-sysexts.dev/builder/dagger"
    assert env["WASM_SYSEXTS_DAGGER_ENGINE"] == "v0.21.8"
    assert env["WASM_SYSEXTS_BASE_IMAGE"] == "example.org/base@sha256:" + "0" * 64


def _strings(value: Any) -> list[str]:
    """Every string inside a selection argument (lists nest)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [s for item in value for s in _strings(item)]
    return []


def test_secrets_reach_containers_only_as_mounted_files() -> None:
    gpg, verity = dag.set_secret("gpg", GPG_PLAINTEXT), dag.set_secret("vk", VERITY_PLAINTEXT)
    password = dag.set_secret("pw", "registry-password")
    chains = [
        selections(instance().sign(dag.directory(), gpg, verity,
                                   dag.directory().file("verity.crt"))),
        selections(instance()._publish_static(dag.directory(), "https://u.example",
                                              dag.directory(), gpg, None)),
        selections(instance()._publish_oci(dag.directory(), "r.example/ns", "u", password,
                                           False, False)),
    ]
    mounted = {args["path"] for chain in chains for name, args in chain
               if name == "withMountedSecret"}
    assert mounted == {f"{module.SECRETS}/gpg-key", f"{module.SECRETS}/verity-key",
                       f"{module.SECRETS}/registry-password"}
    for chain in chains:
        assert not [name for name, _ in chain if name == "withSecretVariable"]
        for name, args in chain:
            if name in ("withExec", "withEnvVariable"):
                for value in args.values():
                    assert not isinstance(value, dagger.Secret)
                    for text in _strings(value):
                        assert GPG_PLAINTEXT not in text and VERITY_PLAINTEXT not in text
                        assert "registry-password" not in text.replace(
                            f"{module.SECRETS}/registry-password", "")

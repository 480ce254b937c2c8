"""The Dagger module, checked offline: it imports, its functions register with the documented
names and types, and each function builds the container query that runs the CLI."""

from __future__ import annotations

import dagger
from dagger import dag
from support.daggerq import execs, functions, instance, register_typedefs, selections

from pipeline import dagger_module


def test_typedefs_register_until_the_engine_is_needed() -> None:
    err = register_typedefs()
    assert isinstance(err, dagger.ClientConnectionError), repr(err)


def test_build_functions_have_documented_signatures() -> None:
    funcs = functions()
    build = funcs["build"]
    assert build.return_type is dagger.File
    params = build.parameters
    assert list(params) == ["runtime", "version", "recipes", "arch", "format", "mirror"]
    assert params["recipes"].resolved_type is dagger.Directory
    assert params["recipes"].default_path == "sysexts"
    assert params["arch"].default_value == '"x86-64"'
    assert params["format"].default_value == '"squashfs"'

    build_all = funcs["build_all"]
    assert build_all.return_type is dagger.Directory
    assert build_all.parameters["arch"].is_nullable
    assert build_all.parameters["jobs"].default_value == "2"


def test_build_runs_the_cli_in_the_pinned_builder() -> None:
    file = instance().build("wasmtime", "49.0.4", recipes=dag.directory(), arch="arm64",
                            format="erofs")
    chain = selections(file)
    assert chain[1] == ("from", {"address": dagger_module.BUILDER_IMAGE})
    assert "@sha256:" in dagger_module.BUILDER_IMAGE
    mounts = {args["path"] for name, args in chain if name == "withMountedCache"}
    assert mounts == {"/cache"}
    dirs = [args["path"] for name, args in chain if name == "withDirectory"]
    assert dirs == ["/src", "/recipes"]
    commands = execs(file)
    assert commands[1][:5] == ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
    assert {"squashfs-tools", "erofs-utils"} <= set(commands[1])
    assert commands[-1] == ["wasm-sysexts", "build", "wasmtime", "--version", "49.0.4",
                            "--arch", "arm64", "--format", "erofs", "--recipes", "/recipes",
                            "--out", "/out"]
    assert chain[-1] == ("file", {"path": "/out/wasmtime-49.0.4-arm64.raw"})


def test_build_all_returns_the_output_directory() -> None:
    out = instance().build_all(recipes=dag.directory(), mirror="http://127.0.0.1:8080")
    assert execs(out)[-1] == ["wasm-sysexts", "build-all", "--format", "squashfs", "--jobs", "2",
                              "--arch", "x86-64", "--arch", "arm64", "--recipes", "/recipes",
                              "--out", "/out", "--mirror", "http://127.0.0.1:8080"]
    assert selections(out)[-1] == ("directory", {"path": "/out"})


def test_smoke_test_boots_the_vm_with_root_capabilities() -> None:
    smoke = functions()["smoke_test"]
    assert smoke.return_type is str
    assert list(smoke.parameters) == ["images", "recipes", "os", "channel"]
    assert smoke.parameters["os"].default_value == '"flatcar"'
    assert smoke.parameters["channel"].default_value == '"stable"'
    ctr = instance()._smoke(dag.directory(), dag.directory(), "reference", "beta")
    chain = selections(ctr)
    last = chain[-1]
    assert last[0] == "withExec" and last[1]["insecureRootCapabilities"] is True
    assert last[1]["args"] == ["wasm-sysexts", "smoke-test", "/images", "--os", "reference",
                               "--channel", "beta", "--recipes", "/recipes", "--cache", "/cache"]
    assert {"qemu-system-x86", "ovmf", "mmdebstrap"} <= set(execs(ctr)[1])
    assert [a["path"] for n, a in chain if n == "withDirectory"] == ["/src", "/images",
                                                                     "/recipes"]

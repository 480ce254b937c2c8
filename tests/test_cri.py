"""Wasm pods through CRI, the way a Flatcar node runs them (`pytest -k cri`).

- The shim recipes' generated registration composes with Flatcar's containerd config: the real
  containerd (2.1.5, Flatcar stable's, built from the Go module proxy by the reference VM's
  containerd-flatcar recipe) loads Flatcar's root config, the drop-in's config and every shim's
  fragment, and keeps Flatcar's runc handler as it was.
- In the reference VM (Debian plus that containerd sysext), the repository's
  containerd-shim-wasmtime built from source merges, containerd restarts on the drop-in's
  config, and `crictl runp --runtime wasmtime` runs a pod whose container is the hello module;
  its greeting comes back through `crictl logs`. In the same boot a shim image whose handler
  fragment was removed fails with that reason; in another, a broken root config keeps
  containerd from starting, and the report says why.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.cache import VM_CACHE
from support.cli import run_cli
from support.mirror import Mirror
from support.payloads import HELLO_OUTPUT, tar_bytes
from support.sources import shim_image
from support.vm_payloads import TEST_HOST, pin

from pipeline.build.fetch import Fetcher
from pipeline.core.fs import sha256_file
from pipeline.core.resources import recipes_dir
from pipeline.core.vocab import Arch
from pipeline.recipe import containerd
from pipeline.recipe.load import load_all
from pipeline.smoke.cri import CONTAINERD, support_images

SHIM = "containerd-shim-wasmtime"


def unsquash(image: Path, dest: Path) -> Path:
    subprocess.run(
        ["unsquashfs", "-q", "-n", "-d", str(dest), str(image)], check=True, capture_output=True
    )
    return dest


def rewrite_image(image: Path, change: Callable[[Path], object]) -> None:
    """Unpack `image`, apply `change` to its tree, pack it again in place (metadata updated):
    a broken image as a faulty build or a bad hand edit would leave it."""
    tree = unsquash(image, image.with_suffix(".tree"))
    change(tree)
    packed = image.with_suffix(".new")
    subprocess.run(
        ["mksquashfs", str(tree), str(packed), "-noappend", "-all-root", "-quiet"], check=True
    )
    subprocess.run(["rm", "-rf", str(tree)], check=True)
    packed.replace(image)
    meta_path = Path(f"{image}.json")
    meta = json.loads(meta_path.read_text())
    meta["image"]["sha256"], meta["image"]["size"] = sha256_file(image), image.stat().st_size
    meta_path.write_text(json.dumps(meta))


# The shim is built from source (cargo); containerd and crictl from the Go module proxy;
# the CRI setup runs in the reference VM's Debian root.
pytestmark = [pytest.mark.source, pytest.mark.gotool, pytest.mark.debroot]


@pytest.fixture(scope="module")
def tools() -> dict[str, Path]:
    """The reference VM's containerd and crictl sysexts, built into the cache smoke runs use."""
    return support_images(Fetcher(VM_CACHE), Arch.X86_64, flatcar=False)


def test_cri_config_composes_with_flatcars_containerd(
    tools: dict[str, Path], tmp_path: Path
) -> None:
    root = unsquash(tools[CONTAINERD], tmp_path / "root")
    shims = [r for r in load_all(recipes_dir()) if r.containerd]
    assert {r.containerd.handler for r in shims if r.containerd} == {
        "wasmtime",
        "wasmedge",
        "wasmer",
        "spin",
        "wamr",
    }  # k3s's names, SpinKube's "spin"
    written: dict[str, str] = {}
    for recipe in shims:  # what merging every shim image at once puts under /usr
        for file in recipe.files:
            # Files several images ship must be identical, or the merge order would matter.
            assert written.setdefault(file.path, file.content) == file.content, file.path
            target = root / file.path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(file.content)
    assert containerd.DROPIN in written and containerd.ROOT_CONFIG in written
    # containerd is static (CGO off): it runs chrooted in the merged tree, reading the config
    # the drop-in points Flatcar's unit at.
    dropin = written[containerd.DROPIN]
    config = re.search(r"^Environment=CONTAINERD_CONFIG=(\S+)$", dropin, re.M)
    assert config, dropin
    proc = subprocess.run(
        ["chroot", str(root), "/usr/bin/containerd", "--config", config.group(1), "config", "dump"],
        capture_output=True,
        text=True,
        check=True,
    )
    dump = proc.stdout
    for recipe in shims:
        assert recipe.containerd is not None
        table = (
            f"[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes."
            f"{recipe.containerd.handler}]"
        )
        assert f"{table}\n          runtime_type = '{recipe.containerd.runtime_type}'" in dump
    # Flatcar's own settings survive: its runc handler with the systemd cgroup driver, its
    # state directory, SELinux labelling.
    runc = dump.split("runtimes.runc.options]", 1)[1].split("[", 1)[0]
    assert "SystemdCgroup = true" in runc
    assert "root = '/var/lib/containerd'" in dump and "enable_selinux = true" in dump


@pytest.fixture(scope="module")
def noreg_recipes(tmp_path_factory: pytest.TempPathFactory, mirror: Mirror) -> Path:
    """The repository's wasmtime shim recipe, plus test shims carrying the same binary under
    other handlers, to be broken after the build."""
    directory = tmp_path_factory.mktemp("cri-recipes")
    (directory / f"{SHIM}.yaml").write_text((recipes_dir() / f"{SHIM}.yaml").read_text())
    tree = unsquash(shim_image(mirror), directory / "shim")
    binary = tree / "usr/bin/containerd-shim-wasmtime-v1"
    for handler in ("wsxnoreg", "wsxbadcfg"):
        name = f"containerd-shim-{handler}-v1"
        url = f"{TEST_HOST}/{handler}-1.0.tar.gz"
        sha = pin(mirror, url, tar_bytes({name: (binary.read_bytes(), 0o755)}, compression="gz"))
        (directory / f"containerd-shim-{handler}.yaml").write_text(
            f"name: containerd-shim-{handler}\nsummary: test shim\n"
            f'homepage: https://wsx-test.example\nlicense: Apache-2.0\nversion: "1.0"\n'
            f'versions:\n  "1.0":\n    x86-64: {{url: "{url}", sha256: "{sha}"}}\n'
            f'install:\n  - {{from: "{name}", to: /usr/bin/{name}, mode: "0755"}}\n'
            f"containerd: {{handler: {handler}, runtime_type: io.containerd.{handler}.v1}}\n"
        )
    return directory


def smoke(images: Path, recipes: Path) -> tuple[int, dict[str, dict[str, Any]]]:
    proc = run_cli(
        "smoke-test",
        images,
        "--os",
        "reference",
        "--recipes",
        recipes,
        "--cache",
        VM_CACHE,
        "--arch",
        "x86-64",
        "--timeout",
        "900",
        "--json",
    )
    assert proc.stdout, proc.stderr
    report = json.loads(proc.stdout)
    return proc.returncode, {str(i["name"]): i for i in report["images"]}


@pytest.mark.vm
def test_cri_wasm_pod_runs_with_the_shims_handler(
    tools: dict[str, Path], mirror: Mirror, noreg_recipes: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    shim = shim_image(mirror)
    for path in (shim, Path(f"{shim}.json")):
        (out / path.name).write_bytes(path.read_bytes())
    run_cli(
        "build",
        "containerd-shim-wsxnoreg",
        "--recipes",
        noreg_recipes,
        "--mirror",
        mirror.url,
        "--cache",
        tmp_path / "dl",
        "--out",
        out,
        "--arch",
        "x86-64",
        "--quiet",
        check=True,
    )
    rewrite_image(
        out / "containerd-shim-wsxnoreg-1.0-x86-64.raw",
        lambda tree: (tree / containerd.FRAGMENTS.lstrip("/") / "wsxnoreg.toml").unlink(),
    )

    code, images = smoke(out, noreg_recipes)
    wasmtime = images[SHIM]
    steps = {
        s["command"].split()[2]: s
        for s in wasmtime["steps"]
        if s["command"].startswith("sh /run/wsx/cri.sh")
    }
    assert wasmtime["status"] == "passed", json.dumps(wasmtime, indent=2)
    assert "CONTAINERD_CONFIG=" + containerd.ROOT_CONFIG in steps["up"]["output"]
    assert "containerd github.com/containerd/containerd/v2 v2.1.5" in steps["up"]["output"]
    assert "wasmtime=io.containerd.wasmtime.v1" in steps["handler"]["output"]
    assert "runc SystemdCgroup: true" in steps["handler"]["output"]
    pod = steps["pod"]["output"]
    assert re.search(r"^pod [0-9a-f]{64} handler wasmtime$", pod, re.M), pod
    assert HELLO_OUTPUT in pod.split("crictl logs:", 1)[1]
    print(f"\n--- CRI pod step of {wasmtime['image']}:\n{pod}")

    noreg = images["containerd-shim-wsxnoreg"]
    assert code == 1 and noreg["status"] == "failed"
    failed = next(s for s in noreg["steps"] if s["status"] == "failed")
    assert failed["command"].endswith("handler wsxnoreg io.containerd.wsxnoreg.v1")
    assert (
        "handler wsxnoreg (io.containerd.wsxnoreg.v1) is not registered with containerd's "
        "CRI plugin" in failed["reason"]
    )


@pytest.mark.vm
def test_cri_broken_config_fails_with_containerds_reason(
    tools: dict[str, Path], mirror: Mirror, noreg_recipes: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run_cli(
        "build",
        "containerd-shim-wsxbadcfg",
        "--recipes",
        noreg_recipes,
        "--mirror",
        mirror.url,
        "--cache",
        tmp_path / "dl",
        "--out",
        out,
        "--arch",
        "x86-64",
        "--quiet",
        check=True,
    )
    rewrite_image(
        out / "containerd-shim-wsxbadcfg-1.0-x86-64.raw",
        lambda tree: (tree / containerd.ROOT_CONFIG.lstrip("/")).write_text(
            "version = 2\nimports = [\n"
        ),
    )
    code, images = smoke(out, noreg_recipes)
    image = images["containerd-shim-wsxbadcfg"]
    assert code == 1 and image["status"] == "failed"
    up = image["steps"][0]
    assert up["command"] == "sh /run/wsx/cri.sh up" and up["status"] == "failed"
    assert "containerd did not start: " in up["reason"], up
    # containerd's own words about the root config, not systemd's about the unit.
    assert "failed to unmarshal TOML at row 2" in up["reason"], up

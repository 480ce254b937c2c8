"""What a Kubernetes operator deploys: the RuntimeClasses in deploy/kubernetes/ match the
handlers the shim recipes register, and the node Butane config `publish static` writes for the
shims transpiles with the real Butane into an Ignition config ignition-validate accepts,
merging every shim, labelling the node and restarting containerd after an update."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from support.cli import run_cli
from support.gotools import butane_binary
from support.mirror import Mirror
from support.payloads import tar_bytes
from support.registry_images import sign_into
from support.vm_payloads import TEST_HOST, pin

from pipeline.core.resources import recipes_dir
from pipeline.publish.butane import KUBELET_DEFAULTS, NODE_LABEL, RESTART_CONTAINERD
from pipeline.recipe.load import load_all

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes" / "runtimeclasses.yaml"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def test_runtimeclasses_match_the_shim_recipes() -> None:
    classes = [d for d in yaml.safe_load_all(DEPLOY.read_text()) if d]
    handlers = {r.containerd.handler for r in load_all(recipes_dir()) if r.containerd}
    by_name = {}
    for doc in classes:
        assert doc["apiVersion"] == "node.k8s.io/v1" and doc["kind"] == "RuntimeClass", doc
        assert set(doc) == {"apiVersion", "kind", "metadata", "handler", "scheduling"}, doc
        name, handler = doc["metadata"]["name"], doc["handler"]
        assert DNS_LABEL.match(name) and DNS_LABEL.match(handler), doc
        assert doc["scheduling"] == {"nodeSelector": {NODE_LABEL.format(handler=handler): "true"}}
        by_name[name] = handler
    assert len(by_name) == len(classes), "RuntimeClass names are unique"
    assert set(by_name.values()) == handlers  # every shim has a class, no class lacks a shim
    assert by_name["wasmtime-spin-v2"] == "spin"  # the name SpinKube's spin-operator expects
    assert all(by_name[h] == h for h in handlers)  # and k3s's: class name = handler name


@pytest.mark.gotool
def test_node_butane_merges_the_shims_labels_the_node(
    tmp_path: Path, mirror: Mirror, publish_key: tuple[Path, Path]
) -> None:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    for handler in ("wsxa", "wsxb"):
        binary = f"containerd-shim-{handler}-v1"
        url = f"{TEST_HOST}/{handler}-shim-1.0.tar.gz"
        sha = pin(mirror, url, tar_bytes({binary: (b"#!/bin/sh\n", 0o755)}, compression="gz"))
        (recipes / f"containerd-shim-{handler}.yaml").write_text(
            f"name: containerd-shim-{handler}\nsummary: test shim\n"
            f'homepage: https://wsx-test.example\nlicense: Apache-2.0\nversion: "1.0"\n'
            f'versions:\n  "1.0":\n    x86-64: {{url: "{url}", sha256: "{sha}"}}\n'
            f'install:\n  - {{from: "{binary}", to: /usr/bin/{binary}}}\n'
            f"containerd: {{handler: {handler}, runtime_type: io.containerd.{handler}.v1}}\n"
        )
    out = tmp_path / "out"
    run_cli(
        "build",
        "containerd-shim-wsxa",
        "containerd-shim-wsxb",
        "--recipes",
        recipes,
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
    signed = sign_into(run_cli, out, tmp_path / "signed", publish_key[0])
    dest = tmp_path / "www"
    run_cli(
        "publish",
        "static",
        "--allow-unsigned",
        signed,
        "--dest",
        dest,
        "--gpg-key",
        publish_key[0],
        "--keyring",
        publish_key[1],
        "--base-url",
        "https://ext.example.org/sysexts",
        check=True,
    )
    index = json.loads((dest / "index.json").read_text())
    assert index["extensions"]["containerd-shim-wsxa"]["containerd"] == {
        "handler": "wsxa",
        "runtime_type": "io.containerd.wsxa.v1",
    }
    node = dest / index["kubernetes_node_butane"]

    proc = subprocess.run(
        [str(butane_binary()), "--strict", str(node)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    ignition = tmp_path / "node.ign"
    ignition.write_text(proc.stdout)
    check = subprocess.run(["ignition-validate", str(ignition)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    config = json.loads(proc.stdout)
    links = {link["path"]: link["target"] for link in config["storage"]["links"]}
    files = {f["path"]: f for f in config["storage"]["files"]}
    for handler in ("wsxa", "wsxb"):
        name = f"containerd-shim-{handler}"
        image = f"/opt/extensions/{name}/{name}-1.0-x86-64.raw"
        assert links[f"/etc/extensions/{name}.raw"] == image
        assert files[image]["contents"]["verification"]["hash"].startswith("sha256-")
        assert f"/etc/sysupdate.{name}.d/{name}.transfer" in files
    labels = files[KUBELET_DEFAULTS]["contents"]["source"]
    assert "wasm-sysexts.dev%2Fwsxa%3Dtrue%2Cwasm-sysexts.dev%2Fwsxb%3Dtrue" in labels, labels
    [sysupdate] = [
        u for u in config["systemd"]["units"] if u["name"] == "systemd-sysupdate.service"
    ]
    assert all(RESTART_CONTAINERD in d["contents"] for d in sysupdate["dropins"])

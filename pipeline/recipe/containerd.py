"""The files that register a shim recipe's CRI runtime handler (`containerd:`) with containerd,
the way Flatcar runs it.

Flatcar's containerd sysext starts `/usr/bin/containerd --config ${CONTAINERD_CONFIG}` with
`CONTAINERD_CONFIG=/usr/share/containerd/config.toml`, a read-only `version = 2` root config;
`/etc/containerd/config.toml` is never read. So every shim image ships the same three kinds of
file, and any number of them merged together compose:

- a containerd.service drop-in pointing CONTAINERD_CONFIG at our root config (named `05-` so an
  operator's own drop-in, `10-*.conf` or later, still wins);
- that root config, `version = 2`, importing Flatcar's config first and then every fragment;
- one fragment per handler under conf.d/, `version = 2` with the CRI plugin's v2 keys like the
  config it joins (containerd 2.1, Flatcar stable's, migrates each imported file by its own
  version; a version 3 fragment under a version 2 root is what breaks runc's SystemdCgroup).
"""

from __future__ import annotations

import json
import re

from pipeline.core.vocab import RUNTIME_TYPE_RE
from pipeline.recipe.model import ContainerdRuntime, ExtraFile

CONFIG_DIR = "/usr/share/wasm-sysexts/containerd"
ROOT_CONFIG = f"{CONFIG_DIR}/config.toml"
FRAGMENTS = f"{CONFIG_DIR}/conf.d"
FLATCAR_CONFIG = "/usr/share/containerd/config.toml"
DROPIN = "/usr/lib/systemd/system/containerd.service.d/05-wasm-sysexts.conf"
RUNTIMES = 'plugins."io.containerd.grpc.v1.cri".containerd.runtimes'
OPTION_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def shim_binary(runtime_type: str) -> str:
    """The binary containerd starts for `runtime_type` (io.containerd.wasmtime.v1 ->
    containerd-shim-wasmtime-v1), looked up in its PATH."""
    match = RUNTIME_TYPE_RE.match(runtime_type)
    assert match, runtime_type
    return f"containerd-shim-{match.group(1)}-{match.group(2)}"


def _toml(value: bool | int | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's


def files(runtime: ContainerdRuntime, recipe: str) -> tuple[ExtraFile, ...]:
    table = f"{RUNTIMES}.{runtime.handler}"
    fragment = [
        f'# Shipped by the {recipe} sysext: the CRI runtime handler "{runtime.handler}"',
        f"# (a RuntimeClass's handler) runs pods with {shim_binary(runtime.runtime_type)}.",
        f"# Imported by {ROOT_CONFIG}.",
        "version = 2",
        "",
        f"[{table}]",
        f"  runtime_type = {_toml(runtime.runtime_type)}",
    ]
    if runtime.options:
        fragment += [
            "",
            f"[{table}.options]",
            *(f"  {key} = {_toml(value)}" for key, value in runtime.options),
        ]
    root = [
        "# Shipped by every wasm-sysexts containerd shim image: containerd's config while one",
        f"# is merged (CONTAINERD_CONFIG, {DROPIN}). Flatcar's own config first,",
        "# then each merged shim's runtime handler.",
        "version = 2",
        f'imports = ["{FLATCAR_CONFIG}", "{FRAGMENTS}/*.toml"]',
    ]
    dropin = [
        "# Shipped by every wasm-sysexts containerd shim image: Flatcar's containerd.service",
        f"# reads --config ${{CONTAINERD_CONFIG}}; {ROOT_CONFIG} imports Flatcar's",
        "# config and every merged shim's handler. A drop-in of your own sorting later wins.",
        "[Service]",
        f"Environment=CONTAINERD_CONFIG={ROOT_CONFIG}",
    ]
    return (
        ExtraFile(f"{FRAGMENTS}/{runtime.handler}.toml", "\n".join(fragment) + "\n", 0o644),
        ExtraFile(ROOT_CONFIG, "\n".join(root) + "\n", 0o644),
        ExtraFile(DROPIN, "\n".join(dropin) + "\n", 0o644),
    )

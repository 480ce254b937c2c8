"""Real Go tools the tests run (Butane, the oras CLI), each built from its Go module once and
cached: `go install module@version` needs the proxy's version list, which is not served here,
so the module is downloaded (verified against the checksum database by `go mod download`) and
built in place."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from support.cache import CACHE, keep


def go_tool(module: str, version: str, package: str, binary: str, ldflags: str = "") -> Path:
    """`binary`, built from `package` (relative to the module root) of `module@version`."""
    go = shutil.which("go") or "/usr/local/go/bin/go"
    env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}

    def build(out: Path) -> None:
        info = json.loads(
            subprocess.run(
                [go, "mod", "download", "-json", f"{module}@{version}"],
                cwd="/",
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        subprocess.run(
            [go, "build", "-mod=readonly", "-o", str(out), "-ldflags", ldflags, package],
            cwd=info["Dir"],
            env=env,
            check=True,
        )

    return keep(CACHE / f"{binary}-{version}" / binary, build)


def butane_binary() -> Path:
    module, version = "github.com/coreos/butane", "v0.25.1"
    return go_tool(
        module, version, "./internal", "butane", f"-X {module}/internal/version.Raw={version}"
    )


def oras_binary() -> Path:
    module, version = "oras.land/oras", "v1.3.6"
    return go_tool(
        module,
        version,
        "./cmd/oras",
        "oras",
        f"-X {module}/internal/version.Version={version.lstrip('v')}",
    )


def actionlint_binary() -> Path:
    module, version = "github.com/rhysd/actionlint", "v1.7.12"
    return go_tool(
        module, version, "./cmd/actionlint", "actionlint", f"-X {module}.version={version}"
    )


def wazero_binary() -> Path:
    """The real wazero CLI (the VM smoke tests' second runtime); `wazero version` prints the
    module version, as in a release build."""
    module, version = "github.com/tetratelabs/wazero", "v1.9.0"
    return go_tool(
        module, version, "./cmd/wazero", "wazero", f"-X {module}/internal/version.version={version}"
    )

"""Real Go tools the tests run (Butane, the oras CLI), each built from its Go module once and
cached: `go install module@version` needs the proxy's version list, which is not served here,
so the module is downloaded (verified against the checksum database by `go mod download`) and
built in place."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from support.cache import CACHE, keep


def go_tool(
    module: str, version: str, package: str, binary: str, ldflags: str = "", cgo: bool = False
) -> Path:
    """`binary`, built from `package` (relative to the module root) of `module@version`."""
    go = shutil.which("go") or "/usr/local/go/bin/go"
    env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "1" if cgo else "0"}

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

    flags = hashlib.sha256(f"{package}\n{ldflags}\n{cgo}".encode()).hexdigest()[:8]
    return keep(CACHE / f"{binary}-{version}-{flags}" / binary, build)


def butane_binary() -> Path:
    module, version = "github.com/coreos/butane", "v0.25.1"
    return go_tool(
        module, version, "./internal", "butane", f"-X {module}/internal/version.Raw={version}"
    )


IGNITION_VERSION = "v2.24.0"  # what Flatcar stable 4593 ships (sys-apps/ignition-2.24.0-r1)


def ignition_binary() -> Path:
    """Flatcar's provisioning tool, built as Flatcar's ebuild builds it (cgo for libblkid, and
    no SELinux relabeling: Flatcar does not relabel)."""
    module = "github.com/coreos/ignition/v2"
    version = f"-X {module}/internal/version.Raw={IGNITION_VERSION}"
    return go_tool(
        module,
        IGNITION_VERSION,
        "./internal",
        "ignition",
        f"{version} -X {module}/internal/distro.selinuxRelabel=false",
        cgo=True,
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

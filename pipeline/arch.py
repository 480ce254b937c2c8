"""Architecture names: systemd's (used in image names and extension-release) and upstream's."""

import platform

# systemd's ARCHITECTURE= names -> the names upstream release assets use.
ARCHES: dict[str, dict[str, str]] = {
    "x86-64": {"uarch": "x86_64", "goarch": "amd64"},
    "arm64": {"uarch": "aarch64", "goarch": "arm64"},
}

_MACHINE_TO_ARCH = {"x86_64": "x86-64", "amd64": "x86-64", "aarch64": "arm64", "arm64": "arm64"}


def host_arch() -> str:
    """The systemd architecture name of the machine we run on (x86-64 if unknown)."""
    return _MACHINE_TO_ARCH.get(platform.machine().lower(), "x86-64")

"""Real payloads for the VM smoke tests: a wazero CLI built with Go, a program missing its
shared library, tiny images for broken-image cases, and the test recipes pinned to them."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from support.gotools import wazero_binary
from support.mirror import Mirror
from support.payloads import tar_bytes

WAZERO_VERSION = "1.9.0"
WAZERO_URL = (
    f"https://github.com/wazero/wazero/releases/download/v{WAZERO_VERSION}/"
    f"wazero_{WAZERO_VERSION}_linux_amd64.tar.gz"
)
TEST_HOST = "https://wsx-test.example/files"


def missing_library_program(work: Path) -> Path:
    """`needslib`, a C program linked against libwsxmissing.so, which no image ships."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "lib.c").write_text("int wsx_missing(void) { return 0; }\n")
    (work / "main.c").write_text(
        "int wsx_missing(void);\nint main(void) { return wsx_missing(); }\n"
    )
    subprocess.run(
        ["clang", "-shared", "-fPIC", "-o", str(work / "libwsxmissing.so"), str(work / "lib.c")],
        check=True,
    )
    subprocess.run(
        ["clang", "-o", str(work / "needslib"), str(work / "main.c"), f"-L{work}", "-lwsxmissing"],
        check=True,
    )
    return work / "needslib"


def pin(mirror: Mirror, url: str, data: bytes) -> str:
    mirror.put(url, data)
    return hashlib.sha256(data).hexdigest()


def _recipe(name: str, version: str, arches: dict[str, str], install: str, smoke: list[str]) -> str:
    lines = [
        f"name: {name}",
        f"summary: {name} test image",
        "homepage: https://wsx-test.example",
        "license: Apache-2.0",
        f'version: "{version}"',
        "versions:",
        f'  "{version}":',
    ]
    lines += [f"    {arch}: {entry}" for arch, entry in arches.items()]
    lines += ["install:", f"  - {install}", "smoke:"] + [f"  - {c!r}" for c in smoke]
    return "\n".join(lines) + "\n"


def write_vm_recipes(directory: Path, mirror: Mirror, work: Path) -> None:
    """Test recipes next to the wasmtime test recipe: wazero (real), and the broken cases.

    - misnamed: built as `impostor`, then renamed, so its extension-release names another
      extension (see rename_impostor).
    - wrongarch: an arm64 image (ARCHITECTURE=arm64) named as an x86-64 one (see
      mislabel_arch), so it boots in the x86-64 VM.
    - needslib: merges, but its binary lacks libwsxmissing.so.
    """
    wazero = tar_bytes({"wazero": (wazero_binary().read_bytes(), 0o755)}, compression="gz")
    sha = pin(mirror, WAZERO_URL, wazero)
    (directory / "wazero.yaml").write_text(
        _recipe(
            "wazero",
            WAZERO_VERSION,
            {
                "x86-64": f'{{url: "{WAZERO_URL}", sha256: "{sha}"}}',
                "arm64": '{unavailable: "test recipe: x86-64 only"}',
            },
            '{from: "wazero", to: /usr/bin/wazero, mode: "0755"}',
            ["wazero version", "wazero run {hello_wasm}"],
        )
    )

    needslib = tar_bytes(
        {"needslib": (missing_library_program(work).read_bytes(), 0o755)}, compression="gz"
    )
    url = f"{TEST_HOST}/needslib-1.0.tar.gz"
    sha = pin(mirror, url, needslib)
    (directory / "needslib.yaml").write_text(
        _recipe(
            "needslib",
            "1.0",
            {"x86-64": f'{{url: "{url}", sha256: "{sha}"}}'},
            '{from: "needslib", to: /usr/bin/needslib, mode: "0755"}',
            ["needslib"],
        )
    )

    note = tar_bytes({"README": b"test payload\n"}, compression="gz")
    url = f"{TEST_HOST}/note-1.0.tar.gz"
    sha = pin(mirror, url, note)
    for name in ("impostor", "misnamed"):
        (directory / f"{name}.yaml").write_text(
            _recipe(
                name,
                "1.0",
                {"x86-64": f'{{url: "{url}", sha256: "{sha}"}}'},
                f'{{from: "README", to: /usr/share/{name}/README}}',
                [f"cat /usr/share/{name}/README"],
            )
        )
    (directory / "wrongarch.yaml").write_text(
        _recipe(
            "wrongarch",
            "1.0",
            {
                "x86-64": '{unavailable: "test recipe: arm64 only"}',
                "arm64": f'{{url: "{url}", sha256: "{sha}"}}',
            },
            '{from: "README", to: /usr/share/wrongarch/README}',
            ["cat /usr/share/wrongarch/README"],
        )
    )


def rename_impostor(out: Path) -> None:
    """Turn the impostor image into `misnamed-1.0-x86-64.raw`: same bytes, so its
    extension-release is still `extension-release.impostor`."""
    import json

    old, new = out / "impostor-1.0-x86-64.raw", out / "misnamed-1.0-x86-64.raw"
    meta = json.loads(Path(f"{old}.json").read_text())
    meta["name"] = "misnamed"
    meta["image"]["file"] = new.name  # metadata must agree with the file name it sits beside
    old.replace(new)
    Path(f"{new}.json").write_text(json.dumps(meta))
    Path(f"{old}.json").unlink()


def mislabel_arch(out: Path) -> None:
    """Rename the arm64 `wrongarch` image to `wrongarch-1.0-x86-64.raw`: its
    extension-release still says ARCHITECTURE=arm64, which an x86-64 host must refuse."""
    import json

    old, new = out / "wrongarch-1.0-arm64.raw", out / "wrongarch-1.0-x86-64.raw"
    meta = json.loads(Path(f"{old}.json").read_text())
    meta["arch"], meta["image"]["file"] = "x86-64", new.name
    old.replace(new)
    Path(f"{new}.json").write_text(json.dumps(meta))
    Path(f"{old}.json").unlink()


def qemu_children(parent: int) -> list[int]:
    """PIDs of live QEMU processes whose parent is `parent` (a /proc scan, no psutil):
    other engineers' VMs on the same machine do not count."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and cmdline and b"qemu-system" in cmdline[0]:
            found.append(int(entry.name))
    return found

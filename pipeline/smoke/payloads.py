"""What the smoke test hands the guest: a WASI hello world (assembled here, so no compiler is
needed), an OCI image layout whose entrypoint is that module, and the pod sandbox ("pause")
image, for the containerd shims."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import tarfile

from pipeline.core.vocab import Arch

HELLO_TEXT = "Hello from wasm-sysexts!"
OCI_REF = "docker.io/library/wsx-hello:latest"


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _vec(items: list[bytes]) -> bytes:
    return _leb(len(items)) + b"".join(items)


def _name(text: str) -> bytes:
    return _leb(len(text)) + text.encode()


def _section(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _leb(len(body)) + body


def hello_wasm_module(text: str = HELLO_TEXT) -> bytes:
    """A minimal WASI command printing `text` and a newline: `_start` calls fd_write(1, ...)
    on an iovec the data segment sets up (at 0: pointer 8 and length; the text at 8)."""
    message = text.encode() + b"\n"
    nwritten = (8 + len(message) + 7) // 4 * 4  # 4-aligned, after the text
    i32 = 0x7F
    types = _vec(
        [
            b"\x60" + _vec([bytes([i32])] * 4) + _vec([bytes([i32])]),  # fd_write
            b"\x60" + _vec([]) + _vec([]),
        ]
    )  # _start
    imports = _vec([_name("wasi_snapshot_preview1") + _name("fd_write") + b"\x00" + _leb(0)])
    funcs = _vec([_leb(1)])
    memory = _vec([b"\x00" + _leb(1)])
    exports = _vec([_name("memory") + b"\x02" + _leb(0), _name("_start") + b"\x00" + _leb(1)])
    code = (
        b"\x41"
        + _leb(1)
        + b"\x41"
        + _leb(0)
        + b"\x41"
        + _leb(1)
        + b"\x41"
        + _leb(nwritten)
        + b"\x10"
        + _leb(0)
        + b"\x1a"
        + b"\x0b"
    )  # i32.const x4; call 0; drop; end
    body = _vec([]) + code
    codes = _vec([_leb(len(body)) + body])
    iovec = (8).to_bytes(4, "little") + len(message).to_bytes(4, "little")
    data = _vec(
        [b"\x00" + b"\x41" + _leb(0) + b"\x0b" + _vec([bytes([b]) for b in iovec + message])]
    )
    return (
        b"\x00asm\x01\x00\x00\x00"
        + _section(1, types)
        + _section(2, imports)
        + _section(3, funcs)
        + _section(5, memory)
        + _section(7, exports)
        + _section(10, codes)
        + _section(11, data)
    )


def _tar(members: dict[str, tuple[bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (data, mode) in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def oci_image_tar(
    files: dict[str, tuple[bytes, int]], entrypoint: str, arch: Arch, ref: str
) -> bytes:
    """An OCI image layout tarball (for `ctr image import`) named `ref`, for `arch`: one layer
    holding `files`, run as `entrypoint`."""
    layer = _tar(files)
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": arch.goarch,
            "os": "linux",
            "config": {"Entrypoint": [entrypoint], "Env": ["PATH=/"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        },
        sort_keys=True,
    ).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": len(layer),
                }
            ],
        },
        sort_keys=True,
    ).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": len(manifest),
                    "annotations": {
                        "io.containerd.image.name": ref,
                        "org.opencontainers.image.ref.name": ref,
                    },
                }
            ],
        },
        sort_keys=True,
    ).encode()
    blobs = {
        f"blobs/sha256/{d.split(':')[1]}": (b, 0o644)
        for d, b in ((layer_digest, layer), (config_digest, config), (manifest_digest, manifest))
    }
    return _tar(
        {
            "oci-layout": (b'{"imageLayoutVersion": "1.0.0"}', 0o644),
            "index.json": (index, 0o644),
            **blobs,
        }
    )


def hello_oci_tar(wasm: bytes, arch: Arch = Arch.X86_64, ref: str = OCI_REF) -> bytes:
    """The hello module as the entrypoint of an image: runwasi shims run a Wasm entrypoint."""
    return oci_image_tar({"hello.wasm": (wasm, 0o755)}, "/hello.wasm", arch, ref)


# A pod sandbox's one process: wait for signals forever (containerd stops a sandbox with
# SIGKILL). x86-64: `mov eax, 34 (pause); syscall; jmp back`. aarch64 has no pause(2):
# `x0..x3 = 0; x8 = 73 (ppoll, no fds, no timeout); svc 0; b back`.
_PAUSE_CODE = {
    Arch.X86_64: (62, bytes.fromhex("b8220000000f05ebf7")),
    Arch.ARM64: (
        183,
        b"".join(
            i.to_bytes(4, "little")
            for i in (
                0xD2800000,
                0xD2800001,
                0xD2800002,
                0xD2800003,
                0xD2800928,
                0xD4000001,
                0x17FFFFFA,
            )
        ),
    ),
}
PAUSE_REF = "registry.k8s.io/pause:3.10"  # containerd 2.1's default sandbox image


def pause_elf(arch: Arch) -> bytes:
    """A static ELF executable for `arch` that only waits: one PT_LOAD segment at 0x400000
    holding the headers and the code, entered right after the headers."""
    machine, code = _PAUSE_CODE[arch]
    base, headers = 0x400000, 64 + 56
    size = headers + len(code)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little-endian, SysV
    elf = ident + struct.pack(
        "<HHIQQQIHHHHHH", 2, machine, 1, base + headers, 64, 0, 0, 64, 56, 1, 0, 0, 0
    )
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)  # PT_LOAD, R+X
    return elf + phdr + code


def pause_oci_tar(arch: Arch) -> bytes:
    """The pod sandbox image, under the name containerd looks for: nothing is pulled."""
    return oci_image_tar({"pause": (pause_elf(arch), 0o755)}, "/pause", arch, PAUSE_REF)

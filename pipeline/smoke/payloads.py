"""What the smoke test hands the guest: a WASI hello world (assembled here, so no compiler is
needed) and an OCI image layout whose entrypoint is that module, for the containerd shims."""

from __future__ import annotations

import hashlib
import io
import json
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
    types = _vec([b"\x60" + _vec([bytes([i32])] * 4) + _vec([bytes([i32])]),  # fd_write
                  b"\x60" + _vec([]) + _vec([])])  # _start
    imports = _vec([_name("wasi_snapshot_preview1") + _name("fd_write") + b"\x00" + _leb(0)])
    funcs = _vec([_leb(1)])
    memory = _vec([b"\x00" + _leb(1)])
    exports = _vec([_name("memory") + b"\x02" + _leb(0), _name("_start") + b"\x00" + _leb(1)])
    code = (b"\x41" + _leb(1) + b"\x41" + _leb(0) + b"\x41" + _leb(1) + b"\x41" + _leb(nwritten)
            + b"\x10" + _leb(0) + b"\x1a" + b"\x0b")  # i32.const x4; call 0; drop; end
    body = _vec([]) + code
    codes = _vec([_leb(len(body)) + body])
    iovec = (8).to_bytes(4, "little") + len(message).to_bytes(4, "little")
    data = _vec([b"\x00" + b"\x41" + _leb(0) + b"\x0b" + _vec([bytes([b]) for b in
                                                               iovec + message])])
    return (b"\x00asm\x01\x00\x00\x00" + _section(1, types) + _section(2, imports)
            + _section(3, funcs) + _section(5, memory) + _section(7, exports)
            + _section(10, codes) + _section(11, data))


def _tar(members: dict[str, tuple[bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (data, mode) in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def hello_oci_tar(wasm: bytes, arch: Arch = Arch.X86_64, ref: str = OCI_REF) -> bytes:
    """An OCI image layout tarball (for `ctr image import`) whose one layer holds
    /hello.wasm, the image's entrypoint: runwasi shims run a Wasm entrypoint file."""
    layer = _tar({"hello.wasm": (wasm, 0o755)})
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "architecture": arch.goarch, "os": "linux",
        "config": {"Entrypoint": ["/hello.wasm"], "Env": ["PATH=/"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }, sort_keys=True).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": len(layer)}],
    }, sort_keys=True).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": len(manifest),
                       "annotations": {"io.containerd.image.name": ref,
                                       "org.opencontainers.image.ref.name": ref}}],
    }, sort_keys=True).encode()
    blobs = {f"blobs/sha256/{d.split(':')[1]}": (b, 0o644) for d, b in
             ((layer_digest, layer), (config_digest, config), (manifest_digest, manifest))}
    return _tar({"oci-layout": (b'{"imageLayoutVersion": "1.0.0"}', 0o644),
                 "index.json": (index, 0o644), **blobs})

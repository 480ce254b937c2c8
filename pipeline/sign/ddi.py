"""Verity-signed Discoverable Disk Images: made from a plain sysext image, and checked.

Making: the plain squashfs/erofs image is unpacked and systemd-repart (>= 257) writes a DDI
with an erofs root partition, its dm-verity hash partition and a signature partition holding
a PKCS#7 signature of the root hash. repart runs on the host when it is new enough (the
builder container: Debian trixie) and otherwise in a cached Debian trixie root.

Reproducible: the partition table and filesystem UUIDs come from a seed derived from the image
name, timestamps from the source image's superblock, and RSA PKCS#1 v1.5 signatures without
signed attributes are deterministic. So the same plain image and key give the same DDI bytes.

Checking (no root, no kernel): parse the GPT, recompute the verity tree from the data partition
and compare it with the hash partition, match the root hash with the signature partition, and
verify the PKCS#7 signature over that root hash against a given certificate with `openssl cms`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.build.image import UUID_NAMESPACE
from pipeline.core import run
from pipeline.core.debroot import debian_root, run_in_root
from pipeline.core.errors import PipelineError
from pipeline.sign.gpt import Partition, is_gpt, read_partitions
from pipeline.sign.keys import load_cert
from pipeline.sign.verity import check_tree

MIN_REPART = 257  # Compression= in partition definitions
TRIXIE_PACKAGES = ["systemd-repart", "libcryptsetup12", "erofs-utils", "squashfs-tools"]
EROFS_MAGIC = 0xE0F5E1E2
# Like systemd's own sysext.repart.d, plus the compression our plain erofs images use.
DEFINITIONS = {
    "10-root.conf": "[Partition]\nType=root\nFormat=erofs\nCopyFiles=/usr/\nCopyFiles=/opt/\n"
    "Verity=data\nVerityMatchKey=root\nMinimize=best\nCompression=lz4hc\n"
    "CompressionLevel=12\n",
    "20-root-verity.conf": "[Partition]\nType=root-verity\nVerity=hash\nVerityMatchKey=root\n"
    "Minimize=best\n",
    "30-root-verity-sig.conf": "[Partition]\nType=root-verity-sig\nVerity=signature\n"
    "VerityMatchKey=root\n",
}

# Runs one tool (args, extra env, what failed) on the host or in the trixie root.
Runner = Callable[[list[str], dict[str, str], str], subprocess.CompletedProcess[bytes]]


def plain_format(path: Path) -> tuple[str, int]:
    """(squashfs|erofs, build time) of a plain sysext image, from its superblock."""
    with open(path, "rb") as f:
        head = f.read(1024 + 32)
    if head[:4] == b"hsqs":
        return "squashfs", struct.unpack_from("<I", head, 8)[0]
    if len(head) >= 1056 and struct.unpack_from("<I", head, 1024)[0] == EROFS_MAGIC:
        return "erofs", struct.unpack_from("<Q", head, 1024 + 24)[0]
    raise PipelineError(f"{path.name}: neither squashfs, erofs nor a DDI")


def _repart_version(binary: str) -> int:
    out = run.run([binary, "--version"], check=False).stdout.decode(errors="replace")
    match = re.match(r"systemd (\d+)", out)
    return int(match.group(1)) if match else 0


def _runner(work: Path, cache_dir: Path) -> tuple[Runner, str]:
    """A tool runner with the tools DDIs need, and the path at which it sees `work`."""
    repart = shutil.which("systemd-repart")
    tools = ("mkfs.erofs", "fsck.erofs", "unsquashfs")
    if repart and _repart_version(repart) >= MIN_REPART and all(map(shutil.which, tools)):

        def host(
            args: list[str], env: dict[str, str], what: str
        ) -> subprocess.CompletedProcess[bytes]:
            return run.run(args, env={**os.environ, **env}, what=what)

        return host, str(work)
    root = debian_root(cache_dir, "trixie", TRIXIE_PACKAGES)

    def chrooted(
        args: list[str], env: dict[str, str], what: str
    ) -> subprocess.CompletedProcess[bytes]:
        return run_in_root(root, args, {work: "/w"}, env, what=what)

    return chrooted, "/w"


def _release_arch(tree: Path, image: str) -> str:
    """ARCHITECTURE= of the tree's single extension-release file."""
    releases = sorted((tree / "usr/lib/extension-release.d").glob("extension-release.*"))
    if len(releases) != 1:
        raise PipelineError(
            f"{image}: expected one usr/lib/extension-release.d/extension-release."
            f"* file, found {len(releases)}"
        )
    for line in releases[0].read_text(encoding="utf-8").splitlines():
        if line.startswith("ARCHITECTURE="):
            return line.split("=", 1)[1].strip().strip('"')
    raise PipelineError(f"{image}: {releases[0].name} has no ARCHITECTURE=")


def make_signed_ddi(
    image: Path, out: Path, key_pem: bytes, cert_pem: bytes, cache_dir: Path
) -> None:
    """Write the verity-signed DDI of the plain sysext `image` to `out` (which must not exist).

    The private key exists on disk only inside a 0700 work directory that is always removed."""
    fmt, epoch = plain_format(image)
    with tempfile.TemporaryDirectory(prefix=".ddi-", dir=out.parent) as work_dir:
        work = Path(work_dir)
        tool, w = _runner(work, cache_dir)
        # repart's scratch files stay in the work directory.
        env = {"SOURCE_DATE_EPOCH": str(epoch), "TMPDIR": f"{w}/tmp"}
        (work / "tmp").mkdir()
        shutil.copyfile(image, work / "in.raw")
        if fmt == "squashfs":
            tool(
                ["unsquashfs", "-q", "-n", "-no-xattrs", "-d", f"{w}/src", f"{w}/in.raw"],
                env,
                f"unsquashfs {image.name}",
            )
        else:
            tool(
                ["fsck.erofs", f"--extract={w}/src", "--preserve", f"{w}/in.raw"],
                env,
                f"fsck.erofs --extract {image.name}",
            )
        (work / "in.raw").unlink()
        arch = _release_arch(work / "src", image.name)
        (work / "defs").mkdir()
        for name, text in DEFINITIONS.items():
            (work / "defs" / name).write_text(text, encoding="utf-8")
        key = work / "key.pem"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        (work / "cert.pem").write_bytes(cert_pem)
        seed = uuid.uuid5(UUID_NAMESPACE, f"ddi:{image.name}")  # the final name, never a temp one
        tool(
            [
                "systemd-repart",
                "--definitions",
                f"{w}/defs",
                "--empty=create",
                "--size=auto",
                "--dry-run=no",
                "--offline=yes",
                "--no-pager",
                f"--architecture={arch}",
                f"--seed={seed}",
                f"--copy-source={w}/src",
                f"--private-key={w}/key.pem",
                f"--certificate={w}/cert.pem",
                f"{w}/out.raw",
            ],
            env,
            f"systemd-repart {image.name}",
        )
        key.unlink()
        os.chmod(work / "out.raw", 0o644)
        (work / "out.raw").rename(out)


@dataclass(frozen=True)
class DdiCheck:
    arch: str
    root_hash: str
    signed_by: str | None  # the certificate's subject when checked against one


def _pick(parts: list[Partition], name: str) -> tuple[Partition, Partition, Partition]:
    """The (data, verity, signature) partitions: one root or usr set of one arch."""
    by_role = {p.arch_role: p for p in parts if p.arch_role}
    for (arch, role), data in sorted(by_role.items()):
        if role not in ("root", "usr"):
            continue
        verity = by_role.get((arch, f"{role}-verity"))
        sig = by_role.get((arch, f"{role}-verity-sig"))
        if verity is None:
            raise PipelineError(f"{name}: {role}-{arch} partition has no verity partition")
        if sig is None:
            raise PipelineError(
                f"{name}: {role}-{arch} partition has no verity signature partition (unsigned DDI)"
            )
        return data, verity, sig
    raise PipelineError(f"{name}: no root or usr partition of a known architecture")


def _signature_json(raw: bytes, name: str) -> tuple[str, bytes]:
    try:
        doc = json.loads(raw.rstrip(b"\0"))
        return str(doc["rootHash"]).lower(), base64.b64decode(doc["signature"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise PipelineError(
            f'{name}: verity signature partition is not {{"rootHash": ..., "signature": ...}} JSON'
        ) from None


def _cms_verify(root_hash: str, signature: bytes, cert: Path) -> bool | None:
    """True if the PKCS#7 `signature` signs the hex root hash (what the kernel checks) with the
    key of exactly `cert` (-nointern ignores certificates carried in the signature itself);
    False if another key signed it, None if it does not verify at all. Validity dates are not
    checked, as the kernel does not check them either."""
    with tempfile.TemporaryDirectory(prefix="wasm-sysexts-p7-") as tmp:
        (Path(tmp) / "sig.der").write_bytes(signature)
        (Path(tmp) / "roothash").write_text(root_hash, encoding="ascii")
        proc = run.run(
            [
                "openssl",
                "cms",
                "-verify",
                "-binary",
                "-inform",
                "DER",
                "-in",
                f"{tmp}/sig.der",
                "-content",
                f"{tmp}/roothash",
                "-certfile",
                str(cert),
                "-CAfile",
                str(cert),
                "-nointern",
                "-purpose",
                "any",
                "-no_check_time",
                "-out",
                os.devnull,
            ],
            check=False,
        )
    if proc.returncode == 0:
        return True
    return False if b"signer certificate not found" in proc.stderr else None


def check_pkcs7(root_hash: str, signature: bytes, certs: Sequence[Path]) -> Path:
    """The one of `certs` whose key made `signature` over the root hash (hosts trust any
    certificate in /etc/verity.d/, so during a rotation an image may be signed by either)."""
    verdicts = [_cms_verify(root_hash, signature, cert) for cert in certs]
    for cert, verdict in zip(certs, verdicts, strict=True):
        if verdict:
            return cert
    names = ", ".join(c.name for c in certs)
    if None in verdicts:
        raise PipelineError(f"verity signature: signature does not verify ({names})")
    if len(certs) == 1:
        raise PipelineError(f"verity signature: signer is not this certificate ({names})")
    raise PipelineError(f"verity signature: signer is none of these certificates ({names})")


def check_ddi(path: Path, certs: Sequence[Path] = ()) -> DdiCheck:
    """Check a DDI's verity tree and root hash signature (by one of `certs`, when given);
    raises naming the fault."""
    name = path.name
    if not is_gpt(path):
        raise PipelineError(f"{name}: not a DDI (no GUID partition table)")
    data, verity, sig = _pick(read_partitions(path), name)
    with open(path, "rb") as f:
        try:
            root = check_tree(f, data.offset, data.size, verity.offset, verity.size).hex()
        except PipelineError as err:
            raise PipelineError(f"{name}: {err}") from None
        signed_hash, signature = _signature_json(sig.read(f), name)
    if signed_hash != root:
        raise PipelineError(
            f"{name}: signature partition is for root hash {signed_hash[:16]}…, "
            f"the verity partitions give {root[:16]}…"
        )
    subject = None
    if certs:
        try:
            signer = check_pkcs7(root, signature, certs)
        except PipelineError as err:
            raise PipelineError(f"{name}: {err}") from None
        subject = load_cert(signer, "--verity-cert").subject.rfc4514_string()
    arch = (data.arch_role or ("?", "?"))[0]
    return DdiCheck(arch, root, subject)

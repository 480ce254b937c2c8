"""Step 4: make the filesystem image from a staged tree with the real tools.

Both formats are reproducible: root-owned, no xattrs, every timestamp = the epoch, a UUID
derived from the image name. The image is written beside its final path and renamed in.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

from pipeline.errors import PipelineError

FORMATS = ("squashfs", "erofs")
TOOLS = {"squashfs": ("mksquashfs", "squashfs-tools"), "erofs": ("mkfs.erofs", "erofs-utils")}
# Namespace for image UUIDs: the same name gives the same UUID on every machine.
UUID_NAMESPACE = uuid.UUID("6f0c1b8e-6c3b-4c56-9a57-3a0c2f1f7d10")


def tool_path(fmt: str) -> str:
    tool, package = TOOLS[fmt]
    found = shutil.which(tool)
    if not found:
        raise PipelineError(f"{tool}: not found on PATH (install the Debian package {package})")
    return found


def tool_version(fmt: str) -> str:
    """The tool's own version line; recorded in metadata and part of the rebuild key."""
    tool = tool_path(fmt)
    # mkfs.erofs < 1.6 has no version flag but prints its version before complaining.
    attempts = [["-version"]] if fmt == "squashfs" else [["--version"], ["--quiet"]]
    pattern = re.compile(r"mksquashfs version \S+|mkfs\.erofs(?: \(erofs-utils\))? \d\S*")
    for extra in attempts:
        proc = subprocess.run([tool, *extra], capture_output=True, text=True, check=False)
        match = pattern.search(proc.stdout + proc.stderr)
        if match:
            return match.group(0)
    return f"{Path(tool).name} (unknown version)"


def image_uuid(image_name: str) -> str:
    return str(uuid.uuid5(UUID_NAMESPACE, image_name))


def make_image(root: Path, out: Path, fmt: str, epoch: int) -> None:
    """Write the image of `root` to `out` atomically (a temporary file beside it, then rename)."""
    if fmt not in FORMATS:
        raise PipelineError(f"--format: unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    tool = tool_path(fmt)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    if fmt == "squashfs":
        # mksquashfs refuses SOURCE_DATE_EPOCH together with explicit times; we pass them.
        args = [tool, str(root), str(tmp), "-noappend", "-all-root", "-no-xattrs",
                "-comp", "zstd", "-Xcompression-level", "19", "-b", "1M",
                "-mkfs-time", str(epoch), "-all-time", str(epoch), "-quiet", "-no-progress"]
    else:
        args = [tool, "-zlz4hc,12", f"-U{image_uuid(out.name)}", f"-T{epoch}", "--all-root",
                "--ignore-mtime", "-x-1", "--quiet", str(tmp), str(root)]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise PipelineError(f"{Path(tool).name} failed for {out.name}: "
                                f"{detail[-1] if detail else f'exit {proc.returncode}'}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)

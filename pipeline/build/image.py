"""Step 4: make the filesystem image from a staged tree with the real tools.

Both formats are reproducible: root-owned, no xattrs, every timestamp = the epoch, a UUID
derived from the image name. The image is written to the given path (a scratch path in the
caller's work directory); the caller moves it into the output.
"""

from __future__ import annotations

import functools
import os
import uuid
from pathlib import Path

from pipeline.core import run
from pipeline.core.vocab import ImageFormat

TOOLS = {ImageFormat.SQUASHFS: "mksquashfs", ImageFormat.EROFS: "mkfs.erofs"}
# Namespace for image UUIDs: the same name gives the same UUID on every machine.
UUID_NAMESPACE = uuid.UUID("6f0c1b8e-6c3b-4c56-9a57-3a0c2f1f7d10")


@functools.cache
def tool_version(fmt: ImageFormat) -> str:
    """The tool's own version line; recorded in metadata and part of the rebuild key."""
    tool = TOOLS[fmt]
    # mkfs.erofs < 1.6 has no version flag but prints its version before complaining.
    flag = "-version" if fmt is ImageFormat.SQUASHFS else "--version"
    return run.version(tool, flag)


def image_uuid(image_name: str) -> str:
    return str(uuid.uuid5(UUID_NAMESPACE, image_name))


def image_args(fmt: ImageFormat, root: Path, out: Path, epoch: int, image_name: str) -> list[str]:
    """The tool command line that makes `out` from `root` (shared with the benchmark)."""
    if fmt is ImageFormat.SQUASHFS:
        return [
            "mksquashfs",
            str(root),
            str(out),
            "-noappend",
            "-all-root",
            "-no-xattrs",
            "-comp",
            "zstd",
            "-Xcompression-level",
            "19",
            "-b",
            "1M",
            "-mkfs-time",
            str(epoch),
            "-all-time",
            str(epoch),
            "-quiet",
            "-no-progress",
        ]
    return [
        "mkfs.erofs",
        "-zlz4hc,12",
        f"-U{image_uuid(image_name)}",
        f"-T{epoch}",
        "--all-root",
        "--ignore-mtime",
        "-x-1",
        "--quiet",
        str(out),
        str(root),
    ]


def make_image(root: Path, out: Path, fmt: ImageFormat, epoch: int, image_name: str) -> None:
    """Write the `fmt` image of `root` to `out`; `image_name` (its final file name) seeds
    the filesystem UUID."""
    # mksquashfs refuses SOURCE_DATE_EPOCH together with explicit times; we pass them.
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    run.run(
        image_args(fmt, root, out, epoch, image_name), env=env, what=f"{TOOLS[fmt]} {image_name}"
    )
    os.chmod(out, 0o644)

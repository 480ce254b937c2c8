"""A small GPT reader: enough to find the partitions of a Discoverable Disk Image (DDI).

Partition type GUIDs are those of the Discoverable Partitions Specification
(https://uapi-group.org/specifications/specs/discoverable_partitions_specification/) for the
two arches we build. Only the primary header is read; its CRCs are checked so a damaged table
is reported as such rather than as a missing partition.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pipeline.core.errors import PipelineError

SECTOR = 512
GPT_SIGNATURE = b"EFI PART"

# (arch, role) -> partition type GUID; roles: root, root-verity, root-verity-sig, usr, ...
PARTITION_TYPES: dict[tuple[str, str], uuid.UUID] = {
    ("x86-64", "root"): uuid.UUID("4f68bce3-e8cd-4db1-96e7-fbcaf984b709"),
    ("x86-64", "root-verity"): uuid.UUID("2c7357ed-ebd2-46d9-aec1-23d437ec2bf5"),
    ("x86-64", "root-verity-sig"): uuid.UUID("41092b05-9fc8-4523-994f-2def0408b176"),
    ("x86-64", "usr"): uuid.UUID("8484680c-9521-48c6-9c11-b0720656f69e"),
    ("x86-64", "usr-verity"): uuid.UUID("77ff5f63-e7b6-4633-acf4-1565b864c0e6"),
    ("x86-64", "usr-verity-sig"): uuid.UUID("e7bb33fb-06cf-4e81-8273-e543b413e2e2"),
    ("arm64", "root"): uuid.UUID("b921b045-1df0-41c3-af44-4c6f280d3fae"),
    ("arm64", "root-verity"): uuid.UUID("df3300ce-d69f-4c92-978c-9bfb0f38d820"),
    ("arm64", "root-verity-sig"): uuid.UUID("6db69de6-29f4-4758-a7a5-962190f00ce3"),
    ("arm64", "usr"): uuid.UUID("b0e01050-ee5f-4390-949a-9101b17104e9"),
    ("arm64", "usr-verity"): uuid.UUID("6e11a4e7-fbca-4ded-b9e9-e1a512bb664e"),
    ("arm64", "usr-verity-sig"): uuid.UUID("c23ce4ff-44bd-4b00-b2d4-b41b3419e02a"),
}
ROLES = {guid: key for key, guid in PARTITION_TYPES.items()}


@dataclass(frozen=True)
class Partition:
    number: int  # 1-based, as fdisk shows it
    type_guid: uuid.UUID
    uuid: uuid.UUID
    label: str
    offset: int  # bytes from the start of the image
    size: int  # bytes

    @property
    def arch_role(self) -> tuple[str, str] | None:
        return ROLES.get(self.type_guid)

    def read(self, image: BinaryIO) -> bytes:
        image.seek(self.offset)
        data = image.read(self.size)
        if len(data) != self.size:
            raise PipelineError(f"partition {self.number} ({self.label}) extends past the image")
        return data


def is_gpt(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(SECTOR)
        return f.read(len(GPT_SIGNATURE)) == GPT_SIGNATURE


def read_partitions(path: Path) -> list[Partition]:
    """The used entries of the primary GPT of the image at `path`."""
    with open(path, "rb") as f:
        f.seek(SECTOR)
        header = f.read(92)
        if len(header) < 92 or header[:8] != GPT_SIGNATURE:
            raise PipelineError(f"{path.name}: no GUID partition table (not a DDI)")
        (header_size, header_crc, entries_lba, count, entry_size) = (
            struct.unpack_from("<I", header, 12)[0],
            struct.unpack_from("<I", header, 16)[0],
            struct.unpack_from("<Q", header, 72)[0],
            struct.unpack_from("<I", header, 80)[0],
            struct.unpack_from("<I", header, 84)[0],
        )
        entries_crc = struct.unpack_from("<I", header, 88)[0]
        if header_size != 92 or entry_size < 128 or count > 1024:
            raise PipelineError(f"{path.name}: GPT header has unexpected sizes")
        if zlib.crc32(header[:16] + b"\0\0\0\0" + header[20:92]) != header_crc:
            raise PipelineError(f"{path.name}: GPT header CRC mismatch")
        f.seek(entries_lba * SECTOR)
        table = f.read(count * entry_size)
    if len(table) != count * entry_size or zlib.crc32(table) != entries_crc:
        raise PipelineError(f"{path.name}: GPT partition entries CRC mismatch")
    parts = []
    for i in range(count):
        entry = table[i * entry_size : (i + 1) * entry_size]
        type_guid = uuid.UUID(bytes_le=entry[:16])
        if type_guid.int == 0:
            continue
        first, last = struct.unpack_from("<QQ", entry, 32)
        label = entry[56:128].decode("utf-16-le", errors="replace").split("\0", 1)[0]
        parts.append(
            Partition(
                i + 1,
                type_guid,
                uuid.UUID(bytes_le=entry[16:32]),
                label,
                first * SECTOR,
                (last - first + 1) * SECTOR,
            )
        )
    return parts

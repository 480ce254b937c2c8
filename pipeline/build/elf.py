"""What an image's ELF files are: their machine, and for dynamically linked ones their
interpreter and needed libraries, read from the headers (no tools, no execution).

Every image is checked when it is staged: an ELF file whose machine is not the image's arch
(an arm64 image carrying x86-64 binaries) is refused, and what the dynamic binaries need goes
into the image's metadata, so an operator sees which host libraries a runtime relies on.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

from pipeline.core.errors import PipelineError

MAGIC = b"\x7fELF"
MACHINES = {
    3: "x86",
    40: "arm",
    62: "x86-64",
    183: "arm64",
    243: "riscv",
    8: "mips",
    21: "ppc64",
    22: "s390",
}
PT_DYNAMIC, PT_INTERP, PT_LOAD = 2, 3, 1
DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ = 0, 1, 5, 10
MAX_ENTRIES = 4096  # program headers / dynamic entries read at most


class NotElf(PipelineError):
    """A file that claims to be ELF (its magic) but is not one that can be read."""


@dataclass(frozen=True)
class ElfInfo:
    machine: int
    interpreter: str | None
    needed: tuple[str, ...]

    @property
    def machine_name(self) -> str:
        return MACHINES.get(self.machine, f"machine {self.machine}")


def is_elf(head: bytes) -> bool:
    return head[:4] == MAGIC


def read_elf(f: BinaryIO) -> ElfInfo:
    """Parse the ELF file open at `f` (positioned anywhere)."""
    f.seek(0)
    ident = f.read(64)
    if len(ident) < 52 or ident[:4] != MAGIC or ident[4] not in (1, 2) or ident[5] not in (1, 2):
        raise NotElf("not a valid ELF header")
    wide, order = ident[4] == 2, "<" if ident[5] == 1 else ">"
    if wide:
        if len(ident) < 64:
            raise NotElf("truncated ELF header")
        (machine,) = struct.unpack_from(order + "H", ident, 18)
        phoff, phentsize, phnum = (
            struct.unpack_from(order + "Q", ident, 32)[0],
            *struct.unpack_from(order + "HH", ident, 54),
        )
    else:
        (machine,) = struct.unpack_from(order + "H", ident, 18)
        phoff, phentsize, phnum = (
            struct.unpack_from(order + "I", ident, 28)[0],
            *struct.unpack_from(order + "HH", ident, 42),
        )
    phdr = struct.Struct(order + ("IIQQQQQQ" if wide else "IIIIIIII"))
    if phnum > MAX_ENTRIES or (phnum and phentsize < phdr.size):
        raise NotElf("implausible program header table")
    segments = []
    for i in range(phnum):
        _seek(f, phoff + i * phentsize)
        raw = f.read(phdr.size)
        if len(raw) < phdr.size:
            raise NotElf("truncated program header table")
        fields = phdr.unpack(raw)
        if wide:
            p_type, _, p_offset, p_vaddr, _, p_filesz = fields[:6]
        else:
            p_type, p_offset, p_vaddr, _, p_filesz = fields[:5]
        segments.append((p_type, p_offset, p_vaddr, p_filesz))
    interpreter = None
    for p_type, offset, _, size in segments:
        if p_type == PT_INTERP:
            _seek(f, offset)
            interpreter = f.read(min(size, 4096)).split(b"\0", 1)[0].decode(errors="replace")
    return ElfInfo(machine, interpreter, _needed(f, segments, wide, order))


def _seek(f: BinaryIO, offset: int) -> None:
    """Seek to an offset the file itself names: one past what a file can hold is a bad ELF."""
    try:
        f.seek(offset)
    except (OverflowError, OSError, ValueError):
        raise NotElf(f"offset {offset} outside any file") from None


def _needed(
    f: BinaryIO, segments: list[tuple[int, int, int, int]], wide: bool, order: str
) -> tuple[str, ...]:
    dynamic = next((s for s in segments if s[0] == PT_DYNAMIC), None)
    if dynamic is None:
        return ()
    entry = struct.Struct(order + ("qQ" if wide else "iI"))
    _seek(f, dynamic[1])
    raw = f.read(min(dynamic[3], MAX_ENTRIES * entry.size))
    tags: list[tuple[int, int]] = []
    for start in range(0, len(raw) - entry.size + 1, entry.size):
        tag, value = entry.unpack_from(raw, start)
        if tag == DT_NULL:
            break
        tags.append((tag, value))
    strtab = next((v for t, v in tags if t == DT_STRTAB), None)
    strsz = next((v for t, v in tags if t == DT_STRSZ), 0)
    if strtab is None:
        return ()
    # DT_STRTAB is an address: find the loaded segment that holds it.
    load = next((s for s in segments if s[0] == PT_LOAD and s[2] <= strtab < s[2] + s[3]), None)
    if load is None:
        raise NotElf("dynamic string table outside every loaded segment")
    _seek(f, load[1] + strtab - load[2])
    table = f.read(min(strsz, 1 << 20))
    names = []
    for tag, value in tags:
        if tag == DT_NEEDED and value < len(table):
            names.append(table[value:].split(b"\0", 1)[0].decode(errors="replace"))
    return tuple(names)

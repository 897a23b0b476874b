"""Numba kernels that check an HDF5 32008/32004 chunk before it is written (bitshuffle and LZ4 HDF5 filters).

A chunk whose chain runs past the end of its blob is truncated; written as-is it would make HDF5 fail on
read ("filter returned failure") long after the frame was counted as saved. The walk is sequential (each
block's offset depends on the previous length), so numpy cannot vectorise it. Measured on a 4M uint16
frame (2162 × 2068, 1092 blocks of 8192 bytes, 1.65 MB compressed): a Python loop takes ~250 µs, this
kernel ~8 µs with the blob in cache and 30–60 µs on one fetched from memory (numba kernels live in their
own module and take and return arrays and scalars).

Compilation is lazy: importing this module costs only the numba import (~0.3 s). The first call compiles
(~0.6 s, or ~0.3 s from the on-disk cache of ``cache=True``); ``warm_up`` does it ahead of the first frame,
so the receive loop never stalls on it. Callers pass a read-only array so one specialisation serves bytes
and writable ZMQ buffers alike.

``payload_end`` goes further and parses every LZ4 sequence of every block, accepting only what
``LZ4_decompress_safe`` (called by both HDF5 filters) accepts: literals and matches inside the block,
match offsets inside the output so far, the last five bytes literals, and the block decoding to exactly
its size. It is stricter in one way: a match offset of 0, which no compressor writes and which LZ4's
decoder follows into bytes not yet decoded, is refused. It writes nothing, so it costs ~0.36 ms per 4M frame where a full decode costs ~2.5 ms; and it
keeps corrupt chunks away from ``bitshuffle.decompress_lz4``, which can crash the process on them. A bit
flipped inside literal bytes still decodes (to other pixel values): only a checksum from the detector could
tell, and SIMPLON streams carry none.
"""

from __future__ import annotations

import numpy as np
from numba import njit

CHUNK_HEADER_BYTES = 12  # uint64 BE uncompressed bytes + uint32 BE block bytes (bitshuffle HDF5 filter, ID 32008)


def readonly_bytes(blob: bytes | memoryview) -> np.ndarray:
    """A read-only uint8 view of ``blob`` (no copy), the one array type the kernel is compiled for."""
    buf = np.frombuffer(blob, dtype=np.uint8)
    buf.flags.writeable = False
    return buf


def warm_up() -> None:
    """Compile (or load from cache) the kernel now, outside the receive loop."""
    empty = readonly_bytes(bytes(CHUNK_HEADER_BYTES + 4))
    block_chain_end(empty, 1)
    payload_end(empty, 1, 0, 0, False)


@njit(cache=True, nogil=True)
def block_chain_end(buf: np.ndarray, nblocks: int) -> int:
    """Offset just past the last of ``nblocks`` length-prefixed blocks that start after the chunk header.

    ``buf`` is the whole chunk as uint8. Each block is a uint32 big-endian length followed by that many
    bytes. Returns -1 when a length prefix or a block payload runs past the end of ``buf``.
    """
    size: int = buf.size
    pos: int = CHUNK_HEADER_BYTES
    for _ in range(nblocks):
        if pos + 4 > size:
            return -1
        length = (int(buf[pos]) << 24) | (int(buf[pos + 1]) << 16) | (int(buf[pos + 2]) << 8) | int(buf[pos + 3])
        pos += 4 + length
        if pos > size:
            return -1
    return pos


_LAST_LITERALS = 5  # LZ4 block format: the last 5 bytes of a block are always literals
_MATCH_FROM_END = 12  # ... and the last match starts at least 12 bytes before the end


CHAIN_TRUNCATED = -1  # what payload_end returns for a chain running past the blob
BLOCK_CORRUPT = -2  # ... and for a block that does not decode to its size


@njit(cache=True, nogil=True)
def payload_end(buf: np.ndarray, nblocks: int, block_bytes: int, last_block_bytes: int, stored_blocks: bool) -> int:
    """Offset just past the last of ``nblocks`` length-prefixed LZ4 blocks after the chunk header, when each
    decodes to its size; ``CHAIN_TRUNCATED`` or ``BLOCK_CORRUPT`` otherwise. One call walks the chain and
    the contents, so a checking thread gives up the GIL once per chunk.

    Every block decodes to ``block_bytes`` except the last, which decodes to ``last_block_bytes``.
    ``stored_blocks`` (filter 32004): a block whose length equals its size is stored uncompressed.
    """
    size: int = buf.size
    pos: int = CHUNK_HEADER_BYTES
    for i in range(nblocks):
        if pos + 4 > size:
            return CHAIN_TRUNCATED
        length = (int(buf[pos]) << 24) | (int(buf[pos + 1]) << 16) | (int(buf[pos + 2]) << 8) | int(buf[pos + 3])
        pos += 4
        if pos + length > size:
            return CHAIN_TRUNCATED
        out_bytes = last_block_bytes if i == nblocks - 1 else block_bytes
        if not (stored_blocks and length == out_bytes) and not _lz4_block_ok(buf, pos, pos + length, out_bytes):
            return BLOCK_CORRUPT
        pos += length
    return pos


@njit(cache=True, nogil=True, inline="always")
def _lz4_block_ok(buf: np.ndarray, ip: int, end: int, out_bytes: int) -> bool:
    """Parse the LZ4 sequences in ``buf[ip:end]`` as the safe decoder would, without writing output."""
    op = 0
    while ip < end:
        token = int(buf[ip])
        ip += 1
        literals = token >> 4
        if literals == 15:
            extra = 255
            while extra == 255 and ip < end:
                extra = int(buf[ip])
                ip += 1
                literals += extra
        ip += literals
        op += literals
        if ip >= end:
            return ip == end and op == out_bytes
        if op > out_bytes - _MATCH_FROM_END or ip + 2 > end:
            return False
        offset = int(buf[ip]) | (int(buf[ip + 1]) << 8)
        ip += 2
        match = (token & 15) + 4
        if match == 19:
            extra = 255
            while extra == 255 and ip < end:
                extra = int(buf[ip])
                ip += 1
                match += extra
        if offset == 0 or offset > op:
            return False
        op += match
        if op > out_bytes - _LAST_LITERALS:
            return False
    return out_bytes == 0 and op == 0

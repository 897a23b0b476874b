"""The 12-byte HDF5 chunk header and the conversions that make any Eiger stream blob a writable chunk.

Every wire form is normalised into one HDF5 chunk so the writer hands it to ``write_direct_chunk`` as-is,
never recompressing (HDF5 direct chunk write, as the DECTRIS file writer stores chunks: 9.7 GB/s direct
versus ~1 GB/s through the filter). Blobs that are already chunks pass through without a copy; only the
header-less bslz4 quirk (a simulator's bare ``bitshuffle.compress_lz4`` output) and V1 ``lz4<`` (a raw
LZ4 block, DECTRIS Stream V1 documentation) need a new buffer, because a header has to go in front.

Layouts (the bitshuffle and HDF5 LZ4 filters' formats): filter 32008 (bslz4) and 32004 (lz4) both start
with ``>QI`` = (uncompressed bytes, block bytes), then per block a uint32 BE length and the payload; bslz4
appends the ``n % 8`` trailing elements uncompressed, and a 32004 block whose length equals its size is
stored uncompressed.
"""

from __future__ import annotations

import math
import struct
from typing import NamedTuple

import bitshuffle
import lz4.block
import numpy as np

from .chunk_check import BLOCK_CORRUPT, CHUNK_HEADER_BYTES, block_chain_end, payload_end, readonly_bytes
from .errors import FrameRejected
from .frame import Encoding

DEFAULT_BLOCK_BYTES = 8192  # bshuf_default_block_size for element sizes up to 64 bytes; DECTRIS uses it too
_HEADER = struct.Struct(">QI")
_BLOCK_LENGTH = struct.Struct(">I")
_V1_LZ4_HEADER = struct.Struct(">QII")  # chunk header + the one block's length (HDF5 LZ4 filter, ID 32004)
# Below this many bytes a header-less blob may hold only the raw tail (fewer than 8 elements), so its first
# bytes say nothing about framing; see frame_bslz4.
_MIN_BYTES_FOR_FRAMING_GUESS = 64

ChunkBlob = bytes | memoryview


class ChunkHeader(NamedTuple):
    """The 12-byte header of a 32008/32004 chunk; both sizes are in bytes (bitshuffle/LZ4 HDF5 filters).
    A named tuple, as ``_ChunkLayout``: built for every frame on the receive thread, where a frozen
    dataclass costs a microsecond more."""

    nbytes: int
    block_bytes: int


def build_chunk_header(nbytes: int, block_bytes: int = DEFAULT_BLOCK_BYTES) -> bytes:
    """The header a chunk of ``nbytes`` uncompressed bytes needs; 8192-byte blocks unless told otherwise."""
    return _HEADER.pack(nbytes, block_bytes)


def bslz4_chunk(frame: np.ndarray) -> bytes:
    """One frame as a filter-32008 chunk: the 12-byte ``>QI`` header (bytes, 8192-byte blocks) + bitshuffle-LZ4,
    the layout DECTRIS streams, so chunks detpipe compresses read like the detector's own."""
    frame = np.ascontiguousarray(frame)
    payload = bitshuffle.compress_lz4(frame, DEFAULT_BLOCK_BYTES // frame.dtype.itemsize)
    return b"".join((build_chunk_header(frame.nbytes, DEFAULT_BLOCK_BYTES), payload))


def parse_chunk_header(blob: ChunkBlob) -> ChunkHeader:
    """Read the header without copying the blob; a blob shorter than the header is truncated."""
    if len(blob) < CHUNK_HEADER_BYTES:
        raise FrameRejected("truncated_blob", f"{len(blob)} bytes cannot hold the 12-byte chunk header")
    nbytes, block_bytes = _HEADER.unpack_from(blob)
    return ChunkHeader(nbytes, block_bytes)


def frame_bslz4(blob: ChunkBlob, nbytes: int) -> ChunkBlob:
    """Return a bslz4 blob as a 32008 chunk: unchanged (same object, no copy) when it already has the header.

    Real detectors and V2 send the header, the ALBA simulator sends bare
    ``bitshuffle.compress_lz4`` output. A framed blob starts with ``nbytes`` as uint64 BE; a bare one starts
    with the first block's (non-zero) uint32 BE length, so its first 8 bytes read as ≥ 2**32. A blob whose
    first 4 bytes are zero therefore carries a header, and if that header gives another size the frame's
    declared shape/type lie (as a simulator's may): raise ``size_mismatch`` rather than prepend a second header.
    """
    if len(blob) >= 8:
        (head,) = struct.unpack_from(">Q", blob)
        if head == nbytes:
            return blob
        if nbytes >= _MIN_BYTES_FOR_FRAMING_GUESS and head < 2**32:
            raise FrameRejected(
                "size_mismatch", f"bslz4 header says {head} uncompressed bytes, shape and type give {nbytes}"
            )
    return b"".join((build_chunk_header(nbytes), blob))


def reframe_v1_lz4(blob: ChunkBlob, nbytes: int) -> tuple[Encoding, bytes]:
    """Turn a V1 ``lz4<`` blob (one raw LZ4 block) into a one-block 32004 chunk without recompressing.

    ``>QII (nbytes, nbytes, len(blob)) + blob`` is a valid chunk (HDF5 LZ4 filter, ID 32004). When the
    compressed block is exactly ``nbytes`` long the 32004 filter would take it for an uncompressed block, so
    the frame is decompressed and returned as ``Encoding.RAW`` pixels instead.
    """
    if len(blob) == nbytes:
        try:
            return Encoding.RAW, lz4.block.decompress(blob, uncompressed_size=nbytes)
        except lz4.block.LZ4BlockError as err:
            raise FrameRejected("truncated_blob", f"lz4 block does not decompress: {err}") from err
    return Encoding.LZ4, b"".join((_V1_LZ4_HEADER.pack(nbytes, nbytes, len(blob)), blob))


def check_chunk(encoding: Encoding, blob: ChunkBlob, nbytes: int, itemsize: int, *, walk_chain: bool = True) -> None:
    """Reject a chunk that HDF5 could not read back as ``nbytes`` of pixels, judged by its framing.

    RAW must be exactly ``nbytes`` long. For BSLZ4/LZ4 the header must announce ``nbytes`` and a sane
    block size (``size_mismatch`` otherwise), and the block chain must end inside the blob
    (``truncated_blob``). Bytes after the chain are tolerated: both filters ignore them. The chain walk
    touches every block header (~1100 dependent loads for a 4M frame: ~10 us in cache, ~60-100 us from
    DRAM), so the stream receiver and the writer thread leave it (``walk_chain=False``) to the writer's frame
    check (``verify_payload`` in ``writers/checked_writer.py``), which walks the chain and every block's contents.
    """
    if encoding is Encoding.RAW:
        if len(blob) != nbytes:
            raise FrameRejected("size_mismatch", f"raw frame has {len(blob)} bytes, shape and type give {nbytes}")
        return
    layout = _chunk_layout(encoding, blob, nbytes, itemsize)
    if walk_chain:
        _check_end(encoding, blob, layout, block_chain_end(readonly_bytes(blob), layout.nblocks))


def verify_payload(encoding: Encoding, blob: ChunkBlob, nbytes: int, itemsize: int) -> None:
    """``check_chunk``, and reject a chunk whose blocks do not all decode (``corrupt_payload``), without
    decompressing it: every LZ4 sequence is parsed (``chunk_check.payload_end``), so a chunk written after
    it passes always reads back through the HDF5 filter."""
    if encoding is Encoding.RAW:
        check_chunk(encoding, blob, nbytes, itemsize)
        return
    layout = _chunk_layout(encoding, blob, nbytes, itemsize)
    end = payload_end(readonly_bytes(blob), layout.nblocks, layout.block_bytes, layout.last_block_bytes,
                      encoding is Encoding.LZ4)
    if end == BLOCK_CORRUPT:
        raise FrameRejected("corrupt_payload", f"{encoding.value} chunk has a block that does not decode")
    _check_end(encoding, blob, layout, end)


def _check_end(encoding: Encoding, blob: ChunkBlob, layout: _ChunkLayout, end: int) -> None:
    if end < 0 or end + layout.tail_bytes > len(blob):
        raise FrameRejected(
            "truncated_blob", f"{encoding.value} chain of {layout.nblocks} blocks runs past the {len(blob)}-byte blob"
        )


def decode_chunk_pixels(encoding: Encoding, blob: ChunkBlob, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Decompress one chunk back to pixels (triage, live view, RED, tests); the writer never needs this.

    Raises ``ValueError`` (a ``FrameRejected``: ``corrupt_payload``, ``truncated_blob``, ``size_mismatch``)
    for a chunk whose payload does not decompress to ``shape``. The payload is verified first
    (``verify_payload``, ~0.36 ms per 4M frame against ~2.5 ms for the decode): ``bitshuffle.decompress_lz4``
    can crash the process on a corrupt chunk, and the stream receiver forwards chunks checked only for
    their framing unless configured otherwise.
    """
    dtype = np.dtype(dtype)
    if encoding is Encoding.RAW:
        return np.frombuffer(blob, dtype=dtype).reshape(shape)
    verify_payload(encoding, blob, math.prod(shape) * dtype.itemsize, dtype.itemsize)
    header = parse_chunk_header(blob)
    try:
        if encoding is Encoding.BSLZ4:
            payload = np.frombuffer(blob, dtype=np.uint8, offset=CHUNK_HEADER_BYTES)
            return bitshuffle.decompress_lz4(payload, shape, dtype, block_size=header.block_bytes // dtype.itemsize)
        return np.frombuffer(_lz4_chunk_bytes(blob, header), dtype=dtype).reshape(shape)
    except (RuntimeError, lz4.block.LZ4BlockError, struct.error) as err:  # bitshuffle raises RuntimeError
        raise ValueError(f"{encoding.value} chunk does not decompress: {err}") from err


class _ChunkLayout(NamedTuple):
    """How a chunk's ``nbytes`` split into LZ4 blocks: all decode to ``block_bytes`` but the last, which
    decodes to ``last_block_bytes``; ``tail_bytes`` follow the chain uncompressed (bslz4 only)."""

    nblocks: int
    block_bytes: int
    last_block_bytes: int
    tail_bytes: int


def _chunk_layout(encoding: Encoding, blob: ChunkBlob, nbytes: int, itemsize: int) -> _ChunkLayout:
    """The block layout the header announces; ``size_mismatch`` for a header that contradicts the frame."""
    header = parse_chunk_header(blob)
    if header.nbytes != nbytes:
        raise FrameRejected(
            "size_mismatch",
            f"{encoding.value} header says {header.nbytes} uncompressed bytes, shape and type give {nbytes}",
        )
    if encoding is Encoding.BSLZ4:
        return _bslz4_layout(header, itemsize)
    return _lz4_layout(header)


def _bslz4_layout(header: ChunkHeader, itemsize: int) -> _ChunkLayout:
    """The blocks of a 32008 chunk as bitshuffle lays them out: full blocks, then one of the remaining
    elements rounded down to a multiple of 8, then the last ``n % 8`` elements raw (bitshuffle filter 32008)."""
    if header.block_bytes <= 0 or header.block_bytes % (8 * itemsize):
        raise FrameRejected(
            "size_mismatch", f"bslz4 block size {header.block_bytes} is not a multiple of 8 x {itemsize} bytes"
        )
    full, rest = divmod(header.nbytes // itemsize, header.block_bytes // itemsize)
    last = rest - rest % 8
    last_block_bytes = last * itemsize if last else header.block_bytes
    return _ChunkLayout(full + (1 if last else 0), header.block_bytes, last_block_bytes, (rest % 8) * itemsize)


def _lz4_layout(header: ChunkHeader) -> _ChunkLayout:
    """The blocks of a 32004 chunk; the filter caps the block size at the chunk size (HDF5 LZ4 filter, ID 32004)."""
    if header.nbytes == 0:
        return _ChunkLayout(0, 0, 0, 0)
    if header.block_bytes <= 0:
        raise FrameRejected("size_mismatch", f"lz4 block size {header.block_bytes} is not positive")
    block = min(header.block_bytes, header.nbytes)
    nblocks = -(-header.nbytes // block)
    return _ChunkLayout(nblocks, block, header.nbytes - (nblocks - 1) * block, 0)


def _lz4_chunk_bytes(blob: ChunkBlob, header: ChunkHeader) -> bytes:
    """Walk the 32004 blocks, decompressing each; a block stored at full size is raw (HDF5 LZ4 filter, ID 32004)."""
    view = memoryview(blob)
    pieces, pos, left = [], CHUNK_HEADER_BYTES, header.nbytes
    block = min(header.block_bytes, header.nbytes)
    while left > 0:
        size = min(block, left)
        (length,) = _BLOCK_LENGTH.unpack_from(view, pos)
        payload = view[pos + 4 : pos + 4 + length]
        pieces.append(bytes(payload) if length == size else lz4.block.decompress(payload, uncompressed_size=size))
        pos, left = pos + 4 + length, left - size
    return b"".join(pieces)

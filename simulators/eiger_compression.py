"""Detector-side frame encoders, written from DECTRIS's stream docs and the HDF5 filters, not from detpipe's decoders.

Three byte layouts leave a DCU:
- ``BSLZ4_CHUNK``: an HDF5 filter-32008 chunk, 12-byte big-endian header (total bytes, block bytes)
  then bitshuffled LZ4 blocks. Sent by V1 ``bsNN-lz4<`` and V2 ``["bslz4", elem, bytes]``.
- ``LZ4_BLOCK``: one raw LZ4 block of the whole frame, no size prefix. V1 ``lz4<`` only.
- ``LZ4_CHUNK``: an HDF5 filter-32004 chunk, 12-byte header then ``>I`` length + block per 8192 bytes.
  V2 ``["lz4", 0, bytes]`` only.
- ``RAW``: little-endian pixels (``compression=none``).
"""

from __future__ import annotations

import enum
import struct

import bitshuffle
import lz4.block
import numpy as np
from numpy.typing import NDArray

from .openmp_limit import use_one_openmp_thread

# Every DECTRIS blob seen used 8192-byte blocks; bitshuffle's default is 8192 bytes for any element size.
BLOCK_BYTES = 8192


class Compression(enum.Enum):
    """Values of the detector ``compression`` key (DECTRIS SIMPLON API documentation; ``none`` is 1.8 only)."""

    BSLZ4 = "bslz4"
    LZ4 = "lz4"
    NONE = "none"


class BlobLayout(enum.Enum):
    BSLZ4_CHUNK = "bslz4_chunk"
    LZ4_BLOCK = "lz4_block"
    LZ4_CHUNK = "lz4_chunk"
    RAW = "raw"


def bslz4_chunk(pixels: NDArray[np.unsignedinteger]) -> bytes:
    """bitshuffle-LZ4 with the filter-32008 header, byte-identical to what the HDF5 filter writes."""
    pixels = np.ascontiguousarray(pixels)
    use_one_openmp_thread()
    header = struct.pack(">QI", pixels.nbytes, BLOCK_BYTES)
    return header + bitshuffle.compress_lz4(pixels, BLOCK_BYTES // pixels.itemsize).tobytes()


def lz4_block(pixels: NDArray[np.unsignedinteger]) -> bytes:
    """The V1 ``lz4<`` form: one LZ4 block, decodable only when the receiver knows the frame size."""
    return lz4.block.compress(np.ascontiguousarray(pixels).data, store_size=False)


def lz4_chunk(pixels: NDArray[np.unsignedinteger]) -> bytes:
    """HDF5 filter-32004 framing with 8192-byte blocks; a block that does not shrink is stored raw,
    with its length written as the block size (the filter's rule for "uncompressed", HDF5 LZ4 filter ID 32004)."""
    raw = memoryview(np.ascontiguousarray(pixels)).cast("B")
    parts = [struct.pack(">QI", raw.nbytes, BLOCK_BYTES)]
    for start in range(0, raw.nbytes, BLOCK_BYTES):
        block = raw[start : start + BLOCK_BYTES]
        packed = lz4.block.compress(block, store_size=False)
        if len(packed) >= len(block):
            packed = bytes(block)
        parts.append(struct.pack(">I", len(packed)))
        parts.append(packed)
    return b"".join(parts)


def raw_pixels(pixels: NDArray[np.unsignedinteger]) -> bytes:
    return np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()


_ENCODERS = {
    BlobLayout.BSLZ4_CHUNK: bslz4_chunk,
    BlobLayout.LZ4_BLOCK: lz4_block,
    BlobLayout.LZ4_CHUNK: lz4_chunk,
    BlobLayout.RAW: raw_pixels,
}


def encode(pixels: NDArray[np.unsignedinteger], layout: BlobLayout) -> bytes:
    return _ENCODERS[layout](pixels)

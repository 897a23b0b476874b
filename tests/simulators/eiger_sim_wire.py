"""Test-side decoders of EIGER stream blobs, written from DECTRIS's stream docs with bitshuffle/lz4 directly.

Deliberately not detpipe.pipeline code: the simulator must be checked against the spec, not against
the receiver it will test.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

import bitshuffle
import cbor2
import lz4.block
import numpy as np


def decode_bslz4_chunk(blob: bytes, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """A filter-32008 chunk: ``>QI`` total bytes and block bytes, then bitshuffled LZ4 blocks."""
    total, block_bytes = struct.unpack(">QI", blob[:12])
    dtype = np.dtype(dtype)
    assert total == shape[0] * shape[1] * dtype.itemsize, (total, shape, dtype)
    payload = np.frombuffer(blob, dtype=np.uint8, offset=12)
    return bitshuffle.decompress_lz4(payload, shape, dtype, block_bytes // dtype.itemsize)


def decode_lz4_chunk(blob: bytes, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """A filter-32004 chunk: ``>QI`` header, then per block ``>I`` length and an LZ4 block (raw if full)."""
    total, block_bytes = struct.unpack(">QI", blob[:12])
    out, offset = bytearray(), 12
    while len(out) < total:
        expected = min(block_bytes, total - len(out))
        (length,) = struct.unpack(">I", blob[offset : offset + 4])
        chunk = blob[offset + 4 : offset + 4 + length]
        offset += 4 + length
        out += chunk if length == expected else lz4.block.decompress(chunk, uncompressed_size=expected)
    assert offset == len(blob)
    return np.frombuffer(bytes(out), dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


def decode_lz4_block(blob: bytes, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    size = shape[0] * shape[1] * np.dtype(dtype).itemsize
    raw = lz4.block.decompress(blob, uncompressed_size=size)
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


def decode_v1_image(parts: list[bytes]) -> tuple[dict[str, Any], np.ndarray]:
    """Part 2 says shape [x, y], type and encoding; the pixels come back as (y, x)."""
    descriptor = json.loads(parts[1])
    width, height = descriptor["shape"]
    dtype = np.dtype(descriptor["type"])
    encoding = descriptor["encoding"]
    blob = parts[2]
    assert descriptor["size"] == len(blob)
    if encoding.startswith("bs"):
        assert encoding == f"bs{dtype.itemsize * 8}-lz4<"
        pixels = decode_bslz4_chunk(blob, (height, width), dtype)
    elif encoding == "lz4<":
        pixels = decode_lz4_block(blob, (height, width), dtype)
    else:
        assert encoding == "<"
        pixels = np.frombuffer(blob, dtype=dtype.newbyteorder("<")).reshape(height, width)
    return descriptor, pixels


def loads_v2(message: bytes) -> Any:
    """The message map with every inner tag kept as a ``CBORTag``, so tests can inspect tags.

    cbor2 strips the 55799 wrapper itself and, inside tags, decodes maps and arrays as immutable
    (frozendict, tuple); they are thawed to dict and list here so tests compare with plain literals.
    """
    assert message[:3] == b"\xd9\xd9\xf7", message[:3]
    return _thaw(cbor2.loads(message, tag_hook=lambda tag, _immutable: tag))


def _thaw(value: Any) -> Any:
    if isinstance(value, cbor2.CBORTag):
        return cbor2.CBORTag(value.tag, _thaw(value.value))
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(item) for item in value]
    return value


TYPED_ARRAY_DTYPES = {64: np.uint8, 69: np.dtype("<u2"), 70: np.dtype("<u4"), 85: np.dtype("<f4")}


def decode_v2_array(array: cbor2.CBORTag) -> tuple[np.ndarray, bytes, str | None]:
    """Tag 40 [[H, W], typed array (maybe over tag 56500)] → (pixels, the blob, the algorithm or None)."""
    assert array.tag == 40
    (height, width), typed = array.value
    dtype = np.dtype(TYPED_ARRAY_DTYPES[typed.tag])
    inner = typed.value
    if isinstance(inner, cbor2.CBORTag):
        assert inner.tag == 56500
        algorithm, elem_size, blob = inner.value
        if algorithm == "bslz4":
            assert elem_size == dtype.itemsize
            return decode_bslz4_chunk(blob, (height, width), dtype), blob, algorithm
        assert algorithm == "lz4" and elem_size == 0
        return decode_lz4_chunk(blob, (height, width), dtype), blob, algorithm
    return np.frombuffer(inner, dtype=dtype).reshape(height, width), inner, None

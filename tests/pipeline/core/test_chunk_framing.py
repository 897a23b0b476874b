"""Chunk header, framing quirks and the block-chain check (bitshuffle and LZ4 HDF5 filters)."""

from __future__ import annotations

import struct

import bitshuffle
import h5py
import hdf5plugin
import numpy as np
import pytest

from detpipe.pipeline.core.chunk_framing import (
    ChunkHeader,
    build_chunk_header,
    check_chunk,
    decode_chunk_pixels,
    frame_bslz4,
    parse_chunk_header,
    reframe_v1_lz4,
)
from detpipe.pipeline.core.errors import FrameRejected
from detpipe.pipeline.core.frame import Encoding
from tests.pipeline.stream_messages import (
    bslz4_blocks,
    bslz4_chunk,
    lz4_block_as_long_as_its_frame,
    lz4_chunk,
    lz4_raw_block,
    pixels,
)

# 64 × 96 uint16 = 12288 bytes: two 8192-byte blocks, the second one short.
SHAPE = (64, 96)


def test_chunk_header_is_big_endian_total_then_block_bytes():
    header = build_chunk_header(1_058_840)
    assert header == bytes.fromhex("0000000000102818") + bytes.fromhex("00002000")
    assert parse_chunk_header(header + b"blocks") == ChunkHeader(nbytes=1_058_840, block_bytes=8192)


def test_blob_shorter_than_a_header_is_truncated():
    with pytest.raises(FrameRejected) as err:
        parse_chunk_header(b"\x00" * 11)
    assert err.value.reason == "truncated_blob"


@pytest.mark.parametrize("wrap", [bytes, memoryview], ids=["bytes", "memoryview"])
def test_framed_bslz4_blob_is_returned_as_the_same_object(wrap):
    blob = wrap(bslz4_chunk(pixels(SHAPE)))
    assert frame_bslz4(blob, 2 * SHAPE[0] * SHAPE[1]) is blob


def test_headerless_bslz4_blob_gets_the_header_the_hdf5_filter_writes():
    image = pixels(SHAPE)
    framed = frame_bslz4(bslz4_blocks(image), image.nbytes)
    assert bytes(framed) == bslz4_chunk(image)
    assert parse_chunk_header(framed) == ChunkHeader(image.nbytes, 8192)


def test_framed_bslz4_blob_of_another_size_is_a_size_mismatch():
    """A simulator that labels 32-bit data uint16 sends a header twice the declared size."""
    image = pixels(SHAPE, "uint32")
    with pytest.raises(FrameRejected) as err:
        frame_bslz4(bslz4_chunk(image), image.nbytes // 2)
    assert err.value.reason == "size_mismatch"


def test_v1_lz4_block_becomes_a_one_block_32004_chunk():
    image = pixels(SHAPE)
    block = lz4_raw_block(image)
    encoding, chunk = reframe_v1_lz4(block, image.nbytes)
    assert encoding is Encoding.LZ4
    assert chunk == struct.pack(">QII", image.nbytes, image.nbytes, len(block)) + block
    np.testing.assert_array_equal(decode_chunk_pixels(encoding, chunk, SHAPE, image.dtype), image)


def test_v1_lz4_block_as_long_as_its_frame_is_stored_as_raw_pixels():
    """Edge case: the 32004 filter would read a block of exactly nbytes as uncompressed."""
    block, raw = lz4_block_as_long_as_its_frame()
    encoding, chunk = reframe_v1_lz4(block, len(raw))
    assert encoding is Encoding.RAW
    assert chunk == raw


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
@pytest.mark.parametrize(
    ("encoding", "make_chunk"),
    [(Encoding.BSLZ4, bslz4_chunk), (Encoding.LZ4, lz4_chunk), (Encoding.RAW, lambda a: a.tobytes())],
    ids=["bslz4", "lz4", "raw"],
)
def test_every_chunk_decodes_back_to_its_pixels(encoding, make_chunk, dtype):
    image = pixels((37, 53), dtype)  # 1961 pixels: a short last block and a raw bslz4 tail of 1 element
    chunk = make_chunk(image)
    check_chunk(encoding, chunk, image.nbytes, image.itemsize)
    np.testing.assert_array_equal(decode_chunk_pixels(encoding, chunk, image.shape, image.dtype), image)


def test_lz4_chunk_with_an_incompressible_block_stored_raw_decodes():
    image = np.random.default_rng(5).integers(0, 2**16, SHAPE, dtype=np.uint16)
    chunk = lz4_chunk(image)
    (first_length,) = struct.unpack_from(">I", chunk, 12)
    assert first_length == 8192  # stored uncompressed
    check_chunk(Encoding.LZ4, chunk, image.nbytes, 2)
    np.testing.assert_array_equal(decode_chunk_pixels(Encoding.LZ4, chunk, SHAPE, image.dtype), image)


def test_bslz4_chunk_with_a_non_default_block_size_decodes_with_the_header_block_size():
    """The bitshuffle filter takes the block size from the chunk header, so any block size decodes."""
    image = pixels(SHAPE)
    chunk = build_chunk_header(image.nbytes, 1024) + bitshuffle.compress_lz4(image, 512).tobytes()
    check_chunk(Encoding.BSLZ4, chunk, image.nbytes, 2)
    np.testing.assert_array_equal(decode_chunk_pixels(Encoding.BSLZ4, chunk, SHAPE, image.dtype), image)


@pytest.mark.parametrize(
    ("encoding", "make_chunk"), [(Encoding.BSLZ4, bslz4_chunk), (Encoding.LZ4, lz4_chunk)], ids=["bslz4", "lz4"]
)
@pytest.mark.parametrize("cut", [1, 100, 3000], ids=["last_byte", "inside_last_block", "a_whole_block"])
def test_chunk_whose_block_chain_runs_past_the_blob_is_truncated(encoding, make_chunk, cut):
    image = pixels(SHAPE)
    chunk = make_chunk(image)
    with pytest.raises(FrameRejected) as err:
        check_chunk(encoding, chunk[:-cut], image.nbytes, image.itemsize)
    assert err.value.reason == "truncated_blob"


def test_bslz4_chunk_missing_its_raw_tail_is_truncated():
    image = pixels((37, 53))  # 1961 elements: the last element travels uncompressed after the blocks
    chunk = bslz4_chunk(image)
    check_chunk(Encoding.BSLZ4, chunk, image.nbytes, 2)
    with pytest.raises(FrameRejected) as err:
        check_chunk(Encoding.BSLZ4, chunk[:-1], image.nbytes, 2)
    assert err.value.reason == "truncated_blob"


@pytest.mark.parametrize(
    ("encoding", "make_chunk"), [(Encoding.BSLZ4, bslz4_chunk), (Encoding.LZ4, lz4_chunk)], ids=["bslz4", "lz4"]
)
def test_chunk_header_announcing_another_frame_size_is_a_size_mismatch(encoding, make_chunk):
    image = pixels(SHAPE)
    with pytest.raises(FrameRejected) as err:
        check_chunk(encoding, make_chunk(image), image.nbytes + 2, 2)
    assert err.value.reason == "size_mismatch"


def test_bslz4_block_size_that_is_not_whole_groups_of_8_elements_is_a_size_mismatch():
    image = pixels(SHAPE)
    chunk = build_chunk_header(image.nbytes, 1000) + bslz4_blocks(image)
    with pytest.raises(FrameRejected) as err:
        check_chunk(Encoding.BSLZ4, chunk, image.nbytes, 2)
    assert err.value.reason == "size_mismatch"


def test_raw_frame_of_the_wrong_length_is_a_size_mismatch():
    image = pixels(SHAPE)
    with pytest.raises(FrameRejected) as err:
        check_chunk(Encoding.RAW, image.tobytes()[:-2], image.nbytes, 2)
    assert err.value.reason == "size_mismatch"


@pytest.mark.parametrize(
    ("encoding", "filter_options"),
    [
        (Encoding.BSLZ4, hdf5plugin.Bitshuffle(nelems=0, cname="lz4")),
        (Encoding.LZ4, hdf5plugin.LZ4()),
    ],
    ids=["bslz4", "lz4"],
)
def test_reframed_chunks_are_read_back_by_the_hdf5_filters(tmp_path, encoding, filter_options):
    """Header-less bslz4 and V1 lz4< become chunks the real HDF5 filters decode."""
    image = pixels(SHAPE)
    if encoding is Encoding.BSLZ4:
        chunk = frame_bslz4(bslz4_blocks(image), image.nbytes)
    else:
        _, chunk = reframe_v1_lz4(lz4_raw_block(image), image.nbytes)
    with h5py.File(tmp_path / "chunks.h5", "w") as h5:
        dset = h5.create_dataset("data", shape=(1, *SHAPE), dtype=image.dtype, chunks=(1, *SHAPE), **filter_options)
        dset.id.write_direct_chunk((0, 0, 0), bytes(chunk), filter_mask=0)
    with h5py.File(tmp_path / "chunks.h5", "r") as h5:
        np.testing.assert_array_equal(h5["data"][0], image)

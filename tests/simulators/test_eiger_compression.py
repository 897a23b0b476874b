"""The encoders against the HDF5 filters themselves: a blob written as a chunk must read back as the frame."""

from __future__ import annotations

import struct
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

from detpipe.simulators import SfxFrames, bslz4_chunk, lz4_block, lz4_chunk
from tests.simulators.eiger_sim_wire import decode_bslz4_chunk, decode_lz4_block, decode_lz4_chunk


@pytest.fixture(scope="module", params=[np.uint16, np.uint32], ids=["uint16", "uint32"])
def frame(request: pytest.FixtureRequest) -> np.ndarray:
    bits = np.dtype(request.param).itemsize * 8
    return SfxFrames("500K", seed=4, hit_fraction=1.0, bit_depth=bits).pixels(0)


def noise(shape: tuple[int, int], dtype: type) -> np.ndarray:
    """Incompressible pixels: every LZ4 block of it must be stored raw."""
    return np.random.default_rng(0).integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)


def read_back_as_chunk(path: Path, blob: bytes, frame: np.ndarray, filter_options: dict) -> np.ndarray:
    with h5py.File(path, "w") as f:
        shape = (1, *frame.shape)
        dset = f.create_dataset("data", shape=shape, dtype=frame.dtype, chunks=shape, **filter_options)
        dset.id.write_direct_chunk((0, 0, 0), blob, filter_mask=0)
    with h5py.File(path, "r") as f:
        return f["data"][0]


def test_bslz4_chunk_has_the_12_byte_filter_header_with_8192_byte_blocks(frame: np.ndarray) -> None:
    blob = bslz4_chunk(frame)
    assert struct.unpack(">QI", blob[:12]) == (frame.nbytes, 8192)
    np.testing.assert_array_equal(decode_bslz4_chunk(blob, frame.shape, frame.dtype), frame)


def test_bslz4_chunk_is_what_the_hdf5_bitshuffle_filter_reads(tmp_path: Path, frame: np.ndarray) -> None:
    options = dict(hdf5plugin.Bitshuffle(nelems=0, cname="lz4"))
    np.testing.assert_array_equal(read_back_as_chunk(tmp_path / "b.h5", bslz4_chunk(frame), frame, options), frame)


@pytest.mark.parametrize("content", ["frame", "noise"])
def test_lz4_chunk_is_what_the_hdf5_lz4_filter_reads(tmp_path: Path, frame: np.ndarray, content: str) -> None:
    pixels = frame if content == "frame" else noise((37, 1021), frame.dtype.type)  # odd size: a partial last block
    blob = lz4_chunk(pixels)
    assert struct.unpack(">QI", blob[:12]) == (pixels.nbytes, 8192)
    np.testing.assert_array_equal(decode_lz4_chunk(blob, pixels.shape, pixels.dtype), pixels)
    options = dict(hdf5plugin.LZ4())
    np.testing.assert_array_equal(read_back_as_chunk(tmp_path / "l.h5", blob, pixels, options), pixels)


def test_lz4_block_is_one_raw_block_without_size_prefix(frame: np.ndarray) -> None:
    blob = lz4_block(frame)
    np.testing.assert_array_equal(decode_lz4_block(blob, frame.shape, frame.dtype), frame)
    assert struct.unpack("<I", blob[:4])[0] != frame.nbytes

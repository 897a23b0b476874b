"""Payload verification: a chunk passes exactly when the HDF5 filter can read it back (issue 14, item 2)."""

from __future__ import annotations

import struct

import bitshuffle
import h5py
import hdf5plugin
import lz4.block
import numpy as np
import pytest

from detpipe.pipeline.core.chunk_framing import build_chunk_header, verify_payload
from detpipe.pipeline.core.errors import FrameRejected
from detpipe.pipeline.core.frame import Encoding
from tests.pipeline.stream_messages import bslz4_chunk, lz4_chunk, pixels

SHAPE = (64, 96)  # 12288 bytes of uint16: two blocks, the second one short


def sparse_frame(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Mostly dark with a few bright spots, as diffraction frames are: long matches and short literal runs."""
    rng = np.random.default_rng(seed)
    frame = rng.poisson(0.05, shape).astype(np.uint16)
    frame[rng.integers(0, shape[0], 40), rng.integers(0, shape[1], 40)] = rng.integers(100, 60000, 40)
    return frame


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
@pytest.mark.parametrize("shape", [(37, 53), (1, 5), (64, 96), (512, 256)], ids=["short_tail", "tiny", "two", "many"])
@pytest.mark.parametrize(("encoding", "make_chunk"), [(Encoding.BSLZ4, bslz4_chunk), (Encoding.LZ4, lz4_chunk)],
                         ids=["bslz4", "lz4"])
def test_every_well_formed_chunk_passes(encoding, make_chunk, shape, dtype):
    image = pixels(shape, dtype)
    verify_payload(encoding, make_chunk(image), image.nbytes, image.itemsize)


def test_lz4_chunk_with_a_block_stored_uncompressed_passes():
    image = np.random.default_rng(5).integers(0, 2**16, SHAPE, dtype=np.uint16)
    chunk = lz4_chunk(image)
    assert struct.unpack_from(">I", chunk, 12)[0] == 8192  # stored as is: not LZ4 sequences
    verify_payload(Encoding.LZ4, chunk, image.nbytes, 2)


def test_bslz4_chunk_with_a_non_default_block_size_passes():
    image = pixels(SHAPE)
    chunk = build_chunk_header(image.nbytes, 1024) + bitshuffle.compress_lz4(image, 512).tobytes()
    verify_payload(Encoding.BSLZ4, chunk, image.nbytes, 2)


def test_match_reaching_before_the_start_of_its_block_is_a_corrupt_payload():
    image = sparse_frame(SHAPE, 1)
    chunk = bytearray(bslz4_chunk(image))
    first_block = 12 + 4
    literals = chunk[first_block] >> 4
    assert literals < 15  # the first sequence's offset follows its literals directly
    offset_at = first_block + 1 + literals
    chunk[offset_at:offset_at + 2] = b"\xff\xff"
    with pytest.raises(FrameRejected) as err:
        verify_payload(Encoding.BSLZ4, bytes(chunk), image.nbytes, 2)
    assert err.value.reason == "corrupt_payload"


def test_block_decoding_to_another_size_is_a_corrupt_payload():
    """A block taken from a frame with more signal: its chain is intact, its contents decode to too little."""
    image = sparse_frame(SHAPE, 2)
    compressed = bitshuffle.compress_lz4(image, 4096).tobytes()
    (first,) = struct.unpack_from(">I", compressed)
    short = bitshuffle.compress_lz4(image[:32], 4096).tobytes()  # one block of 2048 elements
    chunk = build_chunk_header(image.nbytes) + short + compressed[4 + first:]
    with pytest.raises(FrameRejected) as err:
        verify_payload(Encoding.BSLZ4, chunk, image.nbytes, 2)
    assert err.value.reason == "corrupt_payload"


def test_truncated_chunk_is_still_named_truncated():
    image = pixels(SHAPE)
    with pytest.raises(FrameRejected) as err:
        verify_payload(Encoding.BSLZ4, bslz4_chunk(image)[:-100], image.nbytes, 2)
    assert err.value.reason == "truncated_blob"


def blocks_decode(encoding: Encoding, chunk: bytes, nbytes: int, itemsize: int) -> bool:
    """What the HDF5 filters do, block by block, with LZ4's safe decoder (python-lz4): True when every block
    decodes to its size. Reading a corrupt chunk through the filter itself can crash the reader."""
    block_bytes = struct.unpack_from(">I", chunk, 8)[0] if struct.unpack_from(">Q", chunk)[0] == nbytes else 0
    if block_bytes <= 0 or block_bytes % (8 * itemsize):
        return False
    if encoding is Encoding.BSLZ4:
        full, rest = divmod(nbytes // itemsize, block_bytes // itemsize)
        sizes = [block_bytes] * full + ([(rest - rest % 8) * itemsize] if rest >= 8 else [])
    else:
        block = min(block_bytes, nbytes)
        sizes = [min(block, nbytes - at) for at in range(0, nbytes, block)]
    pos = 12
    for size in sizes:
        if pos + 4 > len(chunk):
            return False
        (length,) = struct.unpack_from(">I", chunk, pos)
        payload = chunk[pos + 4:pos + 4 + length]
        pos += 4 + length
        if len(payload) < length:
            return False
        if encoding is Encoding.LZ4 and length == size:
            continue
        try:
            if len(lz4.block.decompress(payload, uncompressed_size=size)) != size:  # the filters insist on size
                return False
        except lz4.block.LZ4BlockError:
            return False
    return True


@pytest.mark.parametrize(("encoding", "make_chunk", "filter_options"), [
    (Encoding.BSLZ4, bslz4_chunk, hdf5plugin.Bitshuffle(cname="lz4")),
    (Encoding.LZ4, lz4_chunk, hdf5plugin.LZ4()),
], ids=["bslz4", "lz4"])
def test_a_chunk_passes_only_when_lz4_decodes_it_and_reads_back(tmp_path, encoding, make_chunk,
                                                                               filter_options):
    """400 chunks with 1-3 flipped bits each: every chunk that passes is one LZ4's safe decoder takes (never
    laxer), and reads back through the HDF5 filter. The check may be stricter: a match offset of 0, which no
    compressor writes, passes LZ4's decoder (it copies bytes not yet decoded) but is refused here."""
    rng = np.random.default_rng(14)
    shape = (128, 128)
    images = [sparse_frame(shape, seed) for seed in range(4)]
    chunks = [make_chunk(image) for image in images]
    nbytes = images[0].nbytes
    passed, decodes = [], []
    with h5py.File(tmp_path / "passed.h5", "w") as f:
        data = f.create_dataset("data", (0, *shape), np.uint16, chunks=(1, *shape), maxshape=(None, *shape),
                                **filter_options)
        for i in range(400):
            chunk = bytearray(chunks[i % 4])
            for _ in range(rng.integers(1, 4)):
                at = rng.integers(12, len(chunk))
                chunk[at] ^= 1 << rng.integers(8)
            try:
                verify_payload(encoding, bytes(chunk), nbytes, 2)
                passed.append(True)
                data.resize(len(data) + 1, axis=0)
                data.id.write_direct_chunk((len(data) - 1, 0, 0), bytes(chunk))
            except FrameRejected as err:
                assert err.reason in ("corrupt_payload", "truncated_blob", "size_mismatch")
                passed.append(False)
            decodes.append(blocks_decode(encoding, bytes(chunk), nbytes, 2))
    assert all(decodes[i] for i, ok in enumerate(passed) if ok)
    assert sum(decodes) - sum(passed) <= len(passed) // 20
    assert 0 < sum(passed) < len(passed)  # both outcomes occur: the comparison says something
    with h5py.File(tmp_path / "passed.h5", "r") as f:
        assert f["data"][()].shape == (sum(passed), *shape)

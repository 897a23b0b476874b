"""The CXI peak list (the CXI peak-list layout) holds one padded row per frame, as CrystFEL's ``--peaks=cxi`` reads it.

Triage results are built by hand with known values; every check reads the rows back from the file.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from detpipe.pipeline.core.peak_list import FrameTriage, PeakList
from detpipe.pipeline.nexus.cxi_peak_list import (
    CXI_COLUMNS,
    CXI_DATA_PATH,
    CXI_PATH,
    PeakRow,
    PeakRowBuffer,
    create_cxi_peak_list,
    cxi_chunk_rows,
    write_cxi_rows,
)

WIDTH = 8


def known_triage(frame: int, stored: int, *, n_peaks: int | None = None, is_hit: bool = True) -> FrameTriage:
    """Peak k of ``frame`` has fs = 100·frame + k + 0.25 and every other column a distinct offset of it."""
    fs = (100.0 * frame + np.arange(stored) + 0.25).astype(np.float32)
    peaks = PeakList(fs, fs + 1000, fs + 2000, fs + 3000, fs + 4000, fs + 5000)
    return FrameTriage(stored if n_peaks is None else n_peaks, peaks, lit_pixels=10 * frame, is_hit=is_hit)


def expected_row(frame: int, stored: int) -> np.ndarray:
    """(6, WIDTH): what the six CXI columns must hold for ``known_triage(frame, stored)``, zero padded."""
    row = np.zeros((len(CXI_COLUMNS), WIDTH), np.float32)
    fs = 100.0 * frame + np.arange(stored) + 0.25
    row[:, :stored] = fs + 1000.0 * np.arange(len(CXI_COLUMNS))[:, None]
    return row


def read_rows(handle: h5py.File) -> np.ndarray:
    """(N, 6, WIDTH) from the file's six padded columns."""
    return np.stack([handle[f"{CXI_PATH}/{name}"][()] for name, _ in CXI_COLUMNS], axis=1)


def test_columns_follow_the_cxi_names_crystfel_reads() -> None:
    names = dict(CXI_COLUMNS)
    assert names["peakXPosRaw"] == "fs" and names["peakYPosRaw"] == "ss"  # X is fast scan, Y slow scan
    assert names["peakTotalIntensity"] == "intensity"
    assert list(names) == ["peakXPosRaw", "peakYPosRaw", "peakTotalIntensity", "peakSNR", "peakNPixels",
                           "peakMaximumValue"]


def test_a_row_keeps_at_most_max_num_peaks_and_counts_every_accepted_peak() -> None:
    row = PeakRow.of(3, known_triage(3, 12, n_peaks=40), WIDTH)
    assert row.stored == WIDTH and row.n_peaks == 40 and row.peaks.shape == (6, WIDTH)
    np.testing.assert_array_equal(row.peaks, expected_row(3, WIDTH))


def test_a_frame_not_triaged_is_minus_one_with_no_stored_peaks() -> None:
    row = PeakRow.of(5, None, WIDTH)
    assert (row.n_peaks, row.lit_pixels, row.is_hit, row.vetoed, row.stored) == (-1, -1, -1, -1, 0)


def test_a_buffered_row_copies_its_peaks_so_a_workers_arrays_are_not_kept() -> None:
    triage = known_triage(1, 3)
    row = PeakRow.of(1, triage, WIDTH)
    assert not np.shares_memory(row.peaks, triage.peaks.fs)


def test_buffer_blocks_are_consecutive_frames_split_at_gaps_and_chunk_boundaries() -> None:
    buffer = PeakRowBuffer(WIDTH)
    chunk = cxi_chunk_rows(WIDTH)
    for index in [*range(chunk - 2, chunk + 2), chunk + 5, 0, 1]:
        buffer.add(index, None)
    blocks = [[row.index for row in block] for block in buffer.blocks()]
    assert blocks == [[0, 1], [chunk - 2, chunk - 1], [chunk, chunk + 1], [chunk + 5]]


def test_buffer_keeps_the_last_result_of_a_repeated_frame_and_its_highest_index_after_clear() -> None:
    buffer = PeakRowBuffer(WIDTH, flush_rows=3)
    buffer.add(4, None)
    buffer.add(4, known_triage(4, 2))
    assert len(buffer) == 1 and buffer.blocks()[0][0].stored == 2
    buffer.add(9, None)
    buffer.add(2, None)
    assert buffer.full
    buffer.clear()
    assert len(buffer) == 0 and not buffer.full and buffer.highest_index == 9


def test_a_deferred_buffer_waits_for_another_flush_rows_rows() -> None:
    buffer = PeakRowBuffer(WIDTH, flush_rows=2)
    buffer.add(0, None)
    buffer.add(1, None)
    buffer.defer()  # the flush failed: rows 0 and 1 stay
    buffer.add(2, None)
    assert not buffer.full
    buffer.add(3, None)
    assert buffer.full and len(buffer) == 4


def test_chunk_rows_stay_within_one_mib_for_wide_rows() -> None:
    assert cxi_chunk_rows(2048) == 64
    assert cxi_chunk_rows(65536) * 65536 * 4 <= 1 << 20


def test_layout_has_cxi_dtypes_growable_shapes_and_deflate_with_shuffle(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "peaks.h5", "w") as handle:
        create_cxi_peak_list(handle, WIDTH, image_path="/entry/data/data")
    with h5py.File(tmp_path / "peaks.h5", "r") as handle:
        assert handle["/entry_1"].attrs["NX_class"] == "NXentry"
        assert handle[CXI_PATH].attrs["NX_class"] == "NXcollection"
        n_peaks = handle[f"{CXI_PATH}/nPeaks"]
        assert n_peaks.dtype == np.int32 and n_peaks.shape == (0,) and n_peaks.maxshape == (None,)
        for name, _ in CXI_COLUMNS:
            column = handle[f"{CXI_PATH}/{name}"]
            assert column.dtype == np.float32 and column.shape == (0, WIDTH) and column.maxshape == (None, WIDTH)
            assert column.compression == "gzip" and column.shuffle and column.fillvalue == 0
            assert column.chunks == (cxi_chunk_rows(WIDTH), WIDTH)
        link = handle.get(CXI_DATA_PATH, getlink=True)
        assert isinstance(link, h5py.SoftLink) and link.path == "/entry/data/data"


def test_rows_read_back_padded_with_zeros_and_unwritten_rows_are_zero(tmp_path: Path) -> None:
    stored = {0: 3, 1: 0, 2: WIDTH, 4: 1}  # frame 3 never written; frame 1 triaged with no peak
    buffer = PeakRowBuffer(WIDTH)
    with h5py.File(tmp_path / "peaks.h5", "w") as handle:
        create_cxi_peak_list(handle, WIDTH, image_path="/entry/data/data")
        for frame, count in stored.items():
            buffer.add(frame, known_triage(frame, count))
        write_cxi_rows(handle, buffer.blocks(), n_rows=7)
    with h5py.File(tmp_path / "peaks.h5", "r") as handle:
        assert handle[f"{CXI_PATH}/nPeaks"][()].tolist() == [3, 0, WIDTH, 0, 1, 0, 0]
        rows = read_rows(handle)
    assert rows.shape == (7, 6, WIDTH)
    for frame in range(7):
        want = expected_row(frame, stored[frame]) if frame in stored else np.zeros((6, WIDTH), np.float32)
        np.testing.assert_array_equal(rows[frame], want, err_msg=f"frame {frame}")


def test_later_flushes_extend_the_rows_and_never_shrink_or_overwrite_them(tmp_path: Path) -> None:
    buffer = PeakRowBuffer(WIDTH)
    with h5py.File(tmp_path / "peaks.h5", "w") as handle:
        create_cxi_peak_list(handle, WIDTH, image_path="/entry/data/data")
        buffer.add(0, known_triage(0, 2))
        buffer.add(1, known_triage(1, 5))
        write_cxi_rows(handle, buffer.blocks(), n_rows=0)
        buffer.clear()
        buffer.add(2, known_triage(2, 1))  # same chunk as rows 0 and 1: they must survive the rewrite
        write_cxi_rows(handle, buffer.blocks(), n_rows=0)
        buffer.clear()
        write_cxi_rows(handle, buffer.blocks(), n_rows=2)  # a smaller n_rows never trims
        assert handle[f"{CXI_PATH}/nPeaks"].shape == (3,)
        rows = read_rows(handle)
    for frame, count in ((0, 2), (1, 5), (2, 1)):
        np.testing.assert_array_equal(rows[frame], expected_row(frame, count))


@pytest.mark.parametrize("width", [1, 2048])
def test_any_valid_max_num_peaks_gives_a_readable_layout(tmp_path: Path, width: int) -> None:
    with h5py.File(tmp_path / "peaks.h5", "w") as handle:
        create_cxi_peak_list(handle, width, image_path="/entry/data/data")
        buffer = PeakRowBuffer(width)
        buffer.add(0, known_triage(0, 1))
        write_cxi_rows(handle, buffer.blocks(), n_rows=1)
        assert handle[f"{CXI_PATH}/peakXPosRaw"][0, 0] == pytest.approx(0.25)
        assert handle[f"{CXI_PATH}/peakXPosRaw"].shape == (1, width)

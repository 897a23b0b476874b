"""An archived NXmx series reads back as the stream items that wrote it: the same chunks, triage and metadata.

Ground truth is what the test handed ``NxmxWriter``: the blobs (built from the spec in
frames_for_writer_tests.py), the hand-made triage results and the ``DetectorConfig``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import fields, replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from detpipe.pipeline.core.frame import Encoding, Frame
from detpipe.pipeline.core.peak_list import FrameTriage, PeakList
from detpipe.pipeline.core.saving_target import SavingParams
from detpipe.pipeline.core.series import DetectorConfig, EndOfSeries, EndReason, SeriesStart
from detpipe.pipeline.core.stage import Item, Stage
from detpipe.pipeline.core.triage_params import TriageParams
from detpipe.pipeline.nexus.nxmx_frame_source import DataFileMissing, NotAnNxmxMaster, NxmxFrameSource
from detpipe.pipeline.writers.nxmx_writer import NxmxWriter
from tests.pipeline.frames_for_writer_tests import SMALL, config, frame, pixels, start

SERIES_ID = 7
FRAMES_PER_FILE = 4
NIMAGES = 14  # data files hold frames 0-3, 4-7, 8-11, 12-13
LOST = 5
RAW_IN_BSLZ4 = 3  # stored with the filter marked skipped
PARAMS = TriageParams(max_num_peaks=8, min_peaks=2, fast_mode=False, min_lit_pixels=5)
# Scalars are copied into detectorSpecific; the rest cannot come back (module docstring of nxmx_frame_source).
HEADER_KEPT = {"omega_start": 10.0, "omega_increment": 0.1, "software_version": "1.8.0",
               "countrate_correction_applied": True, "detector_readout_time": 1e-5, "number_of_excluded_pixels": 17,
               "compression": "bslz4"}
HEADER_LOST = {"eiger_fw_version": "release-2022.1.2", "nimages": NIMAGES, "threshold_energy_list": [6000.0, 9000.0]}


def triage_with(stored: int, *, fs0: float, n_peaks: int | None = None, lit: int = 50,
                vetoed: bool = False) -> FrameTriage:
    """``stored`` peaks whose six columns are distinct known values; ``n_peaks`` may count more."""
    fs = (fs0 + np.arange(stored) + 0.25).astype(np.float32)
    peaks = PeakList(fs, fs + 100, fs * 3, fs / 7, np.full(stored, 4, np.float32), fs + 0.5)
    count = stored if n_peaks is None else n_peaks
    return FrameTriage(count, peaks, lit_pixels=lit, is_hit=count >= PARAMS.min_peaks, vetoed=vetoed)


# Frame index -> triage result given to the writer; None = arrived untriaged; LOST never arrives.
TRIAGE: dict[int, FrameTriage | None] = {
    0: triage_with(3, fs0=10, lit=100), 1: triage_with(0, fs0=0, lit=2, vetoed=True), 2: None,
    3: triage_with(8, fs0=30, lit=400), 4: triage_with(5, fs0=40, n_peaks=12), 6: triage_with(1, fs0=60),
    7: None, 8: triage_with(0, fs0=0, lit=9), 9: triage_with(2, fs0=90), 10: None, 11: triage_with(4, fs0=11),
    12: triage_with(6, fs0=12), 13: triage_with(1, fs0=13),
}


def make_writer(directory: Path) -> NxmxWriter:
    return NxmxWriter(SavingParams(directory=directory, data_roots=(directory.parent,),
                                   frames_per_file=FRAMES_PER_FILE))


def feed(writer: Stage, items: Iterable[Item]) -> None:
    """What a stage runner does with a source's items, without the thread."""
    for item in items:
        if isinstance(item, SeriesStart):
            writer.start_series(item)
        elif isinstance(item, EndOfSeries):
            writer.finish(item)
        else:
            writer.process(item)


def original_items() -> tuple[SeriesStart, list[Frame]]:
    cfg = config(nimages=NIMAGES, header={**HEADER_KEPT, **HEADER_LOST})
    mask = np.zeros(SMALL, np.uint32)
    mask[0, :], mask[5, 7] = 1, 8
    flatfield = np.linspace(0.9, 1.1, SMALL[0] * SMALL[1], dtype=np.float32).reshape(SMALL)
    series_start = start(SERIES_ID, cfg, pixel_mask=mask, flatfield=flatfield, triage=PARAMS)
    frames = [replace(frame(i, pixels(i), Encoding.RAW if i == RAW_IN_BSLZ4 else Encoding.BSLZ4, SERIES_ID),
                      triage=result) for i, result in TRIAGE.items()]
    return series_start, frames


@pytest.fixture(scope="module")
def archived(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SeriesStart, list[Frame]]:
    """The master of a triaged 14-frame series in 4 data files, frame 5 lost, and what the writer was given."""
    writer = make_writer(tmp_path_factory.mktemp("archive") / "run")
    series_start, frames = original_items()
    feed(writer, [series_start, *frames, EndOfSeries(SERIES_ID)])
    assert writer.master_path is not None
    return writer.master_path, series_start, frames


def assert_triage_equal(got: FrameTriage | None, want: FrameTriage | None, index: int) -> None:
    if want is None:
        assert got is None, f"frame {index}"
        return
    assert got is not None, f"frame {index}"
    assert (got.n_peaks, got.lit_pixels, got.is_hit, got.vetoed) == (want.n_peaks, want.lit_pixels, want.is_hit,
                                                                       want.vetoed), f"frame {index}"
    for name in ("fs", "ss", "intensity", "snr", "npix", "max_value"):
        column = getattr(got.peaks, name)
        assert column.dtype == np.float32, f"frame {index} {name}"
        np.testing.assert_array_equal(column, getattr(want.peaks, name), err_msg=f"frame {index} {name}")


def assert_config_round_trips(got: DetectorConfig | None, want: DetectorConfig) -> None:
    assert got is not None
    for f in fields(DetectorConfig):
        if f.name != "header":
            assert getattr(got, f.name) == getattr(want, f.name), f.name
    expected_header = {k: v for k, v in want.header.items() if k not in HEADER_LOST}
    assert dict(got.header) == expected_header
    assert all(type(got.header[k]) is type(v) for k, v in expected_header.items())


def test_every_stored_chunk_comes_back_byte_for_byte_in_index_order(archived) -> None:
    master, _, written = archived
    source = NxmxFrameSource(master)
    frames = list(source.frames())
    assert [f.index for f in frames] == [f.index for f in written] == [i for i in range(NIMAGES) if i != LOST]
    for got, want in zip(frames, written):
        assert bytes(got.blob) == bytes(want.blob), f"frame {got.index}"
        assert (got.series_id, got.shape, got.dtype, got.encoding, got.received_s) == (
            SERIES_ID, SMALL, np.dtype(np.uint16), want.encoding, 0.0)
    assert frames[RAW_IN_BSLZ4].encoding is Encoding.RAW and frames[0].encoding is Encoding.BSLZ4


def test_a_lost_frame_is_skipped_and_counted_and_totals_count_frames_present(archived) -> None:
    master, _, written = archived
    source = NxmxFrameSource(master)
    assert source.frames_total == len(written) == NIMAGES - 1
    assert source.data_files == [master.parent / f"series_{SERIES_ID}_data_00000{k}.h5" for k in (1, 2, 3, 4)]
    assert source.files == [master, *source.data_files]
    assert sum(1 for _ in source.frames()) == NIMAGES - 1 and source.frames_missing == 1


@pytest.mark.parametrize("block_rows", [3, 1024])
def test_triage_comes_back_equal_to_what_the_writer_was_given(archived, block_rows: int) -> None:
    master, _, written = archived
    for got, want in zip(NxmxFrameSource(master, triage_block_rows=block_rows).frames(), written, strict=True):
        assert_triage_equal(got.triage, want.triage, got.index)
        assert got.triage is None or got.triage.time_ms == 0.0


def test_series_start_rebuilds_config_mask_flatfield_and_triage_params(archived) -> None:
    master, given, _ = archived
    rebuilt = NxmxFrameSource(master).series_start()
    assert given.config is not None
    assert_config_round_trips(rebuilt.config, given.config)
    assert rebuilt.series_id == SERIES_ID and rebuilt.triage == PARAMS and rebuilt.unique_id == ""
    assert rebuilt.received_s == pytest.approx(given.received_s, abs=1e-3)
    np.testing.assert_array_equal(rebuilt.pixel_mask, given.pixel_mask)
    np.testing.assert_array_equal(rebuilt.flatfield, given.flatfield)


def test_items_are_the_start_every_frame_then_an_end_that_counts_them(archived) -> None:
    master, _, _ = archived
    items = list(NxmxFrameSource(master).items())
    assert isinstance(items[0], SeriesStart) and all(isinstance(item, Frame) for item in items[1:-1])
    assert items[-1] == EndOfSeries(SERIES_ID, EndReason.END_MESSAGE, frames_sent=NIMAGES - 1)


def test_rewriting_the_items_stores_byte_identical_chunks_and_the_same_metadata(archived, tmp_path: Path) -> None:
    master, given, _ = archived
    writer = make_writer(tmp_path / "rewrite")
    feed(writer, list(NxmxFrameSource(master).items()))
    assert writer.master_path is not None
    for old, new in zip(NxmxFrameSource(master).data_files, NxmxFrameSource(writer.master_path).data_files,
                        strict=True):
        with h5py.File(old) as before, h5py.File(new) as after:
            a, b = before["/entry/data/data"], after["/entry/data/data"]
            assert a.shape == b.shape and dict(a.attrs) == dict(b.attrs)
            for row in range(a.shape[0]):
                allocated = a.id.get_chunk_info_by_coord((row, 0, 0)).byte_offset is not None
                assert (b.id.get_chunk_info_by_coord((row, 0, 0)).byte_offset is not None) == allocated
                if allocated:
                    assert a.id.read_direct_chunk((row, 0, 0)) == b.id.read_direct_chunk((row, 0, 0))
    rebuilt = NxmxFrameSource(writer.master_path).series_start()
    assert given.config is not None and rebuilt.triage == PARAMS
    assert_config_round_trips(rebuilt.config, given.config)
    with h5py.File(master) as before, h5py.File(writer.master_path) as after:
        for path in ("/entry_1/result_1/nPeaks", "/entry_1/result_1/peakXPosRaw", "/entry/process_01/results/is_hit",
                     "/entry/sample/transformations/omega", "/entry/instrument/beam/incident_wavelength"):
            np.testing.assert_array_equal(after[path][()], before[path][()], err_msg=path)


@pytest.mark.parametrize(("encoding", "compression"), [(Encoding.LZ4, "lz4"), (Encoding.RAW, "bslz4")])
def test_lz4_and_raw_series_keep_their_encoding_and_untriaged_series_have_no_triage(
        tmp_path: Path, encoding: Encoding, compression: str) -> None:
    writer = make_writer(tmp_path / "run")
    cfg = config(nimages=3, photon_energy_ev=None, wavelength_a=0.9)  # wavelength given, energy derived
    written = [frame(i, pixels(i), encoding, SERIES_ID) for i in range(3)]
    feed(writer, [start(SERIES_ID, cfg), *written, EndOfSeries(SERIES_ID)])
    assert writer.master_path is not None
    source = NxmxFrameSource(writer.master_path)
    frames = list(source.frames())
    assert [(f.encoding, bytes(f.blob), f.triage) for f in frames] == [(encoding, w.blob, None) for w in written]
    rebuilt = source.series_start()
    assert rebuilt.triage is None and rebuilt.pixel_mask is None and source.frames_missing == 0
    assert_config_round_trips(rebuilt.config, replace(cfg, compression=compression))


def test_a_series_started_without_config_comes_back_without_one(tmp_path: Path) -> None:
    writer = make_writer(tmp_path / "run")
    feed(writer, [start(SERIES_ID, None), frame(0, pixels(0), series_id=SERIES_ID), EndOfSeries(SERIES_ID)])
    assert writer.master_path is not None
    assert NxmxFrameSource(writer.master_path).series_start().config is None


@pytest.fixture
def text_file_named_master(tmp_path: Path) -> Path:
    path = tmp_path / "series_1_master.h5"
    path.write_text("not hdf5")
    return path


@pytest.fixture
def data_file_given_as_master(archived) -> Path:
    return NxmxFrameSource(archived[0]).data_files[0]


@pytest.fixture
def cxi_file_given_as_master(tmp_path: Path) -> Path:
    path = tmp_path / "peaks.cxi"
    with h5py.File(path, "w") as handle:
        handle["/entry/definition"] = "NXcxi"
    return path


@pytest.mark.parametrize("fault", ["text_file_named_master", "data_file_given_as_master", "cxi_file_given_as_master"])
def test_a_file_that_is_not_an_nxmx_master_is_refused_with_what_to_pass(request, fault: str) -> None:
    path = request.getfixturevalue(fault)
    with pytest.raises(NotAnNxmxMaster, match="pass the <prefix>_master.h5") as caught:
        NxmxFrameSource(path)
    assert isinstance(caught.value, ValueError) and caught.value.path == path


def test_a_missing_data_file_is_named_when_the_source_is_opened(archived, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(archived[0].parent, tmp_path / "copy"))
    (copy / f"series_{SERIES_ID}_data_000002.h5").unlink()
    with pytest.raises(DataFileMissing, match=f"series_{SERIES_ID}_data_000002.h5.*restore it") as caught:
        NxmxFrameSource(copy / archived[0].name)
    assert isinstance(caught.value, ValueError)

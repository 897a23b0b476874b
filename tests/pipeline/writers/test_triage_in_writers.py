"""Triage results travel with the frames into the series' master: a CXI peak list CrystFEL reads (CXI peak-list
layout of Cheetah and CrystFEL) and an NXprocess whose stored parameters feed back into detpipe (docs/triage_output.md).

Ground truth is triage results built by hand with known values; rows are compared with them frame by frame,
for the Eiger image stack and for the AGIPD run's VDS frame order.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import extra_data
import h5py
import numpy as np
import nxmx
import pytest

from detpipe.pipeline.core.errors import ConfigError, FrameRejected
from detpipe.pipeline.core.peak_list import FrameTriage, PeakList
from detpipe.pipeline.core.saving_target import SavingParams
from detpipe.pipeline.core.series import EndOfSeries, SeriesStart
from detpipe.pipeline.core.train import AGIPD_MODULES, Train
from detpipe.pipeline.core.triage_params import UNITS, TriageParams
from detpipe.pipeline.nexus.cxi_peak_list import CXI_COLUMNS
from detpipe.pipeline.nexus.triage_process import TriageProcess, read_triage_params
from detpipe.pipeline.writers.exdf_writer import ExdfWriter
from detpipe.pipeline.writers.nxmx_writer import NxmxWriter
from tests.pipeline.agipd_trains import FIRST_TRAIN_ID, make_train
from tests.pipeline.frames_for_writer_tests import SMALL, config, frame, pixels, start

PARAMS = TriageParams(adc_threshold=12.5, max_num_peaks=8, min_peaks=2, fast_mode=False, min_lit_pixels=5)
WIDTH = PARAMS.max_num_peaks
RESULT = "/entry_1/result_1"
PROCESS = "/entry/process_01"
NOT_TRIAGED = None


def triage_with(stored: int, *, fs0: float, ss0: float, n_peaks: int | None = None, lit: int = 50,
                vetoed: bool = False) -> FrameTriage:
    """Peak k at (fs0 + k, ss0 + k/2); the other columns are distinct functions of fs, so any column or row
    mix-up shows. ``n_peaks`` may exceed ``stored`` (the finder accepted more than it keeps)."""
    fs = (fs0 + np.arange(stored)).astype(np.float32)
    ss = (ss0 + np.arange(stored) / 2).astype(np.float32)
    peaks = PeakList(fs, ss, fs * 10, fs / 4, np.full(stored, 3, np.float32), fs + 0.5)
    count = stored if n_peaks is None else n_peaks
    return FrameTriage(count, peaks, lit_pixels=lit, is_hit=count >= PARAMS.min_peaks, vetoed=vetoed)


def padded(triage: FrameTriage | None) -> np.ndarray:
    """(6, WIDTH): the CXI columns a frame's row must hold; zeros for a frame without stored peaks."""
    row = np.zeros((len(CXI_COLUMNS), WIDTH), np.float32)
    if triage is not None:
        stored = min(len(triage.peaks), WIDTH)
        for c, (_, attr) in enumerate(CXI_COLUMNS):
            row[c, :stored] = getattr(triage.peaks, attr)[:stored]
    return row


def cxi_rows(handle: h5py.File) -> np.ndarray:
    return np.stack([handle[f"{RESULT}/{name}"][()] for name, _ in CXI_COLUMNS], axis=1)


def per_frame(handle: h5py.File, name: str) -> list[int]:
    return handle[f"{PROCESS}/results/{name}"][()].tolist()


# --- Eiger: 10 frames, 3 per data file; frame 7 never arrives, frames 2 and 5 arrive untriaged ----------------
EIGER_TRIAGE: dict[int, FrameTriage | None] = {
    0: triage_with(3, fs0=10, ss0=20, lit=100),
    1: triage_with(0, fs0=0, ss0=0, lit=2, vetoed=True),  # the lit-pixel pre-veto called it a miss
    2: NOT_TRIAGED,
    3: triage_with(12, fs0=30, ss0=5, n_peaks=12, lit=400),  # 12 accepted, only max_num_peaks = 8 stored
    4: triage_with(1, fs0=44, ss0=9),
    5: NOT_TRIAGED,
    6: triage_with(5, fs0=60, ss0=1),
    8: triage_with(2, fs0=80, ss0=3),
    9: triage_with(4, fs0=90, ss0=7),
}


@pytest.fixture(scope="module")
def eiger_series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, list[int]]]:
    """The master of the series, and ``nPeaks`` as a reader saw it right after data files 1 and 2 closed."""
    root = tmp_path_factory.mktemp("eiger")
    writer = NxmxWriter(SavingParams(directory=root / "run", data_roots=(root,), frames_per_file=3))
    writer.start_series(start(1, config(nimages=10), triage=PARAMS))
    assert writer.master_path is not None
    seen_after_close: dict[int, list[int]] = {}
    for i, result in EIGER_TRIAGE.items():
        writer.process(replace(frame(i, pixels(i)), triage=result))
        if i in (2, 5):  # data file 1 (frames 0-2) or 2 (3-5) just closed and was linked into the master
            with h5py.File(writer.master_path, "r") as handle:  # the master is not held open between steps
                seen_after_close[i] = handle[f"{RESULT}/nPeaks"][()].tolist()
    writer.finish(EndOfSeries(1))
    return writer.master_path, seen_after_close


def test_eiger_rows_reach_the_master_each_time_a_data_file_closes(eiger_series) -> None:
    _, seen = eiger_series
    assert seen == {2: [3, 0, 0], 5: [3, 0, 0, 8, 1, 0]}


def test_eiger_cxi_rows_equal_the_given_peaks_padded_with_zeros(eiger_series) -> None:
    master, _ = eiger_series
    with h5py.File(master, "r") as handle:
        assert handle[f"{RESULT}/nPeaks"][()].tolist() == [3, 0, 0, 8, 1, 0, 5, 0, 2, 4]
        assert handle[f"{RESULT}/nPeaks"].dtype == np.int32
        rows = cxi_rows(handle)
    assert rows.shape == (10, 6, WIDTH)
    for i in range(10):
        np.testing.assert_array_equal(rows[i], padded(EIGER_TRIAGE.get(i)), err_msg=f"frame {i}")


def test_eiger_per_frame_results_read_minus_one_for_untriaged_and_lost_frames(eiger_series) -> None:
    master, _ = eiger_series
    with h5py.File(master, "r") as handle:
        assert per_frame(handle, "n_peaks") == [3, 0, -1, 12, 1, -1, 5, -1, 2, 4]
        assert per_frame(handle, "is_hit") == [1, 0, -1, 1, 0, -1, 1, -1, 1, 1]
        assert per_frame(handle, "lit_pixels") == [100, 2, -1, 400, 50, -1, 50, -1, 50, 50]
        assert per_frame(handle, "vetoed") == [0, 1, -1, 0, 0, -1, 0, -1, 0, 0]
        results = handle[f"{PROCESS}/results"]
        assert results.attrs["NX_class"] == "NXdata" and results.attrs["signal"] == "n_peaks"
        dtypes = {name: results[name].dtype for name in ("n_peaks", "is_hit", "lit_pixels", "vetoed")}
        assert dtypes == {"n_peaks": np.int32, "is_hit": np.int8, "lit_pixels": np.int64, "vetoed": np.int8}
        assert all(results[name].fillvalue == -1 for name in dtypes)


def test_eiger_soft_links_resolve_to_the_cxi_columns_and_the_image_stack(eiger_series) -> None:
    master, _ = eiger_series
    with h5py.File(master, "r") as handle:
        results = handle[f"{PROCESS}/results"]
        for name in ("nPeaks", *(name for name, _ in CXI_COLUMNS)):
            link = results.get(name, getlink=True)
            assert isinstance(link, h5py.SoftLink) and link.path == f"{RESULT}/{name}"
            np.testing.assert_array_equal(results[name][()], handle[f"{RESULT}/{name}"][()])
        assert handle.get("/entry_1/data_1/data", getlink=True).path == "/entry/data/data"
        stack = handle["/entry_1/data_1/data"]
        assert stack.shape == (10, *SMALL) and handle["/entry_1/data_1"].attrs["signal"] == "data"
        np.testing.assert_array_equal(stack[9], pixels(9))
        assert (stack[7] == 2**16 - 1).all()  # the lost frame reads masked, and its peak row is empty


def test_eiger_nxnote_json_round_trips_to_the_same_params_and_its_sha256_matches(eiger_series) -> None:
    master, _ = eiger_series
    with h5py.File(master, "r") as handle:
        note = handle[f"{PROCESS}/notes_01"]
        assert note.attrs["NX_class"] == "NXnote" and note["type"].asstr()[()] == "application/json"
        text = note["data"].asstr()[()]
        assert TriageParams.from_mapping(json.loads(text)) == PARAMS
        assert note["checksum"].asstr()[()] == hashlib.sha256(text.encode()).hexdigest()
        assert note["algorithm"].asstr()[()] == "sha256" and "read_triage_params" in note["description"].asstr()[()]
        assert read_triage_params(handle) == PARAMS


def test_eiger_nxprocess_names_program_version_date_parameters_and_peak_list(eiger_series) -> None:
    master, _ = eiger_series
    version = importlib.metadata.version("detpipe")
    with h5py.File(master, "r") as handle:
        process = handle[PROCESS]
        assert process.attrs["NX_class"] == "NXprocess"
        assert process["program"].asstr()[()] == "detpipe" and process["program"].attrs["version"] == version
        assert process["version"].asstr()[()] == version and process["sequence_index"][()] == 1
        assert process["date"][()] == handle["/entry/start_time"][()]  # ISO 8601 of the series start
        assert process["peak_list"].asstr()[()] == RESULT
        parameters = process["parameters"]
        assert parameters.attrs["NX_class"] == "NXparameters"
        assert {name: parameters[name][()] for name in parameters} == PARAMS.to_mapping()
        for name in parameters:
            assert parameters[name].attrs.get("units") == (UNITS[name] or None), name


def test_eiger_master_with_triage_is_still_one_valid_nxmx_entry(eiger_series) -> None:
    master, _ = eiger_series
    with h5py.File(master, "r") as handle:
        entries = nxmx.NXmx(handle).entries
        assert len(entries) == 1 and entries[0].definition == "NXmx"
        assert handle.attrs["default"] == "entry" and handle["/entry_1"].attrs["NX_class"] == "NXentry"


def test_a_series_without_triage_has_no_cxi_entry_and_no_nxprocess(tmp_path: Path) -> None:
    writer = NxmxWriter(SavingParams(directory=tmp_path / "run", data_roots=(tmp_path,), frames_per_file=3))
    writer.start_series(start(1, config(nimages=4)))  # frames carry results, but the series is not triaged
    for i in range(4):
        writer.process(replace(frame(i, pixels(i)), triage=triage_with(2, fs0=1, ss0=1)))
    writer.finish(EndOfSeries(1))
    with h5py.File(writer.master_path, "r") as handle:
        assert sorted(handle) == ["entry"] and "process_01" not in handle["entry"]


# --- TriageProcess on its own: the bound flush, a locked master, a tampered note ------------------------------
def make_master(path: Path, flush_rows: int) -> TriageProcess:
    process = TriageProcess(PARAMS, path, flush_rows=flush_rows)
    with h5py.File(path, "w") as handle:
        process.create(handle, image_path="/entry/data/data", date="2026-01-01T00:00:00.000Z")
    return process


def stored_rows(path: Path) -> int:
    with h5py.File(path, "r") as handle:
        return handle[f"{RESULT}/nPeaks"].shape[0]


def test_a_full_buffer_is_flushed_into_the_master_without_waiting_for_a_file_close(tmp_path: Path) -> None:
    process = make_master(tmp_path / "master.h5", flush_rows=4)
    process.add(0, [triage_with(1, fs0=1, ss0=1)] * 3, frames=3)
    assert stored_rows(tmp_path / "master.h5") == 0 and process.rows_waiting == 3
    process.add(3, [NOT_TRIAGED])
    assert stored_rows(tmp_path / "master.h5") == 4 and process.rows_waiting == 0


def test_a_master_held_open_by_a_reader_does_not_delay_the_rows(tmp_path: Path) -> None:
    """The rows go into a copy renamed over the master: the reader keeps the version it opened, HDF5's lock
    on it no longer stands in the way (it refused the writer's in-place r+ open)."""
    process = make_master(tmp_path / "master.h5", flush_rows=2)
    with h5py.File(tmp_path / "master.h5", "r") as reader:
        process.add(0, [triage_with(1, fs0=1, ss0=1), NOT_TRIAGED], frames=2)
        assert process.rows_waiting == 0
        assert reader[f"{RESULT}/nPeaks"].shape[0] == 0
    process.add(2, [NOT_TRIAGED])
    assert process.flush_file() and process.rows_waiting == 0
    with h5py.File(tmp_path / "master.h5", "r") as handle:
        assert per_frame(handle, "n_peaks") == [1, -1, -1]


def test_a_train_with_the_wrong_number_of_results_is_stored_as_not_triaged(tmp_path: Path) -> None:
    process = make_master(tmp_path / "master.h5", flush_rows=100)
    process.add(0, [triage_with(1, fs0=1, ss0=1)] * 3, frames=4)
    assert process.frames_without_results == 4 and process.flush_file()
    with h5py.File(tmp_path / "master.h5", "r") as handle:
        assert per_frame(handle, "n_peaks") == [-1] * 4


def test_stored_parameters_edited_after_writing_fail_their_checksum(tmp_path: Path) -> None:
    make_master(tmp_path / "master.h5", flush_rows=4)
    with h5py.File(tmp_path / "master.h5", "r+") as handle:
        note = handle[f"{PROCESS}/notes_01"]
        edited = note["data"].asstr()[()].replace('"min_peaks": 2', '"min_peaks": 3')
        del note["data"]
        note["data"] = edited
    with h5py.File(tmp_path / "master.h5", "r") as handle, pytest.raises(ConfigError, match="checksum"):
        read_triage_params(handle)


# --- AGIPD: rows follow the VDS frame order; peaks are in the stacked (16·512, 128) frame ---------------------
def agipd_peaks(train_id: int, cell: int) -> FrameTriage:
    """Peaks of the frame (train_id, cell) on a module that varies with both, at ss' = module·512 + ss (the
    stacked frame); 1 to 3 peaks, so rows differ in width."""
    module = (train_id + 3 * cell) % AGIPD_MODULES
    return triage_with(cell % 3 + 1, fs0=float(train_id - FIRST_TRAIN_ID), ss0=module * 512 + 100.0 + cell)


def triaged(train: Train, *, untriaged_frames: tuple[int, ...] = ()) -> Train:
    results = tuple(NOT_TRIAGED if f in untriaged_frames else agipd_peaks(train.train_id, int(c))
                    for f, c in enumerate(train.cell_ids))
    return replace(train, triage=results)


def test_agipd_rows_follow_the_master_frame_order_and_lie_in_the_stacked_frame(tmp_path: Path) -> None:
    writer = ExdfWriter(SavingParams(directory=tmp_path / "raw", data_roots=(tmp_path,)), trains_per_sequence=2,
                        compression_threads=2)
    trains = [triaged(make_train(0, frames=4)),
              replace(make_train(1, frames=4), triage=None),  # triage fell behind for the whole train
              triaged(make_train(2, frames=4, missing=(5,)), untriaged_frames=(2,)),
              triaged(make_train(3, frames=4))]
    late = triaged(make_train(1, frames=4, train_id=FIRST_TRAIN_ID + 2))  # rejected: its rows must not appear
    writer.prepare(1)
    writer.start_series(SeriesStart(1, received_s=1.7e9, triage=PARAMS))
    for k, train in enumerate(trains):
        writer.process(train)
        if k == 1:  # sequence 0 closed: its rows are in the master already
            with h5py.File(writer.master_path, "r") as handle:
                assert per_frame(handle, "n_peaks") == [2, 3, 1, 2, -1, -1, -1, -1]  # cells 1-4: cell % 3 + 1
        if k == 2:
            with pytest.raises(FrameRejected, match="train_id_not_increasing"):
                writer.process(late)
    writer.finish(EndOfSeries(1))
    with h5py.File(writer.master_path, "r") as handle:
        train_ids, cells = handle["/entry/data/trainId"][()], handle["/entry/data/cellId"][()]
        assert len(train_ids) == 16 and handle[f"{RESULT}/nPeaks"].shape == (16,)
        rows = cxi_rows(handle)
        n_peaks = per_frame(handle, "n_peaks")
        untriaged = {4, 5, 6, 7, 10}  # train 1 entirely, frame 2 of train 2
        for k, (train_id, cell) in enumerate(zip(train_ids.tolist(), cells.tolist())):
            expected = None if k in untriaged else agipd_peaks(train_id, cell)
            np.testing.assert_array_equal(rows[k], padded(expected), err_msg=f"frame {k}")
            assert n_peaks[k] == (-1 if expected is None else expected.n_peaks)
        assert rows[:, 1].max() >= 512 * 8  # peaks of the later modules lie far below the first 512 rows
        stack = handle["/entry_1/data_1/data"]
        assert stack.shape == (16, AGIPD_MODULES, 2, 512, 128) and stack.is_virtual
        assert read_triage_params(handle) == PARAMS
        assert handle.attrs["default"] == "entry" and handle["/entry/data"].attrs["signal"] == "data"


def test_agipd_triaged_master_still_opens_as_an_exdf_member_of_its_run(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    writer = ExdfWriter(SavingParams(directory=tmp_path / "raw", data_roots=(tmp_path,)), compression_threads=2)
    writer.prepare(3)
    writer.start_series(SeriesStart(3, received_s=1.7e9, triage=PARAMS))
    assert writer.master_path is not None and writer.master_path.exists()  # created at the start, for the rows
    # Mid-run, as a user's notebook would, in another process: extra-data keeps files open, and HDF5 refuses
    # read-write access to a file this process holds read-only.
    subprocess.run([sys.executable, "-c", "import sys, extra_data; extra_data.RunDirectory(sys.argv[1])",
                    str(writer.run_directory)], check=True)
    writer.process(triaged(make_train(0, frames=2, run=3)))
    writer.finish(EndOfSeries(3))
    run = extra_data.RunDirectory(str(writer.run_directory), parallelize=False)
    assert "Skipping file" not in capsys.readouterr().err and list(run.train_ids) == [FIRST_TRAIN_ID]
    with h5py.File(writer.master_path, "r") as handle:
        assert handle[f"{RESULT}/nPeaks"][()].tolist() == [2, 3]  # cells 1 and 2


def test_an_agipd_run_without_triage_has_no_cxi_entry_and_no_nxprocess(tmp_path: Path) -> None:
    writer = ExdfWriter(SavingParams(directory=tmp_path / "raw", data_roots=(tmp_path,)), compression_threads=2)
    writer.prepare(2)
    writer.start_series(SeriesStart(2))
    assert not writer.master_path.exists()  # written once, at the end, as before
    writer.process(triaged(make_train(0, frames=2, run=2)))
    writer.finish(EndOfSeries(2))
    with h5py.File(writer.master_path, "r") as handle:
        assert "entry_1" not in handle and "process_01" not in handle["entry"]

"""The REDU00 file lists every frame received with its decision, and extra-data opens and validates it.

Ground truth is the table of trains below (reasons, triage numbers, ids per frame); every check reads the
file back through extra-data and compares it with that table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import pytest
from extra_data import H5File
from extra_data.reader import FileAccess
from extra_data.validation import FileValidator

from detpipe.pipeline.core.errors import FrameRejected, TargetFileExists
from detpipe.pipeline.core.train import Product
from detpipe.pipeline.exdf.module_file import RunMetadata
from detpipe.pipeline.policy.event_selection import KeepReason
from detpipe.pipeline.policy.redu_flags_file import ROW_KEYS, ReduFlagsFile, redu_file_name, redu_source

DETECTOR = "SPB_DET_AGIPD1M-1"
SOURCE = redu_source(DETECTOR)
METADATA = RunMetadata(proposal=900123, run=7, run_type="SPI", sample="mimivirus")
R = KeepReason


@dataclasses.dataclass(frozen=True)
class TrainRows:
    """One train as the reducer hands it over: per-frame ids, decisions and triage numbers."""

    train_id: int
    timestamp_ns: int
    cell_ids: np.ndarray
    reasons: tuple[KeepReason, ...]
    n_peaks: np.ndarray
    lit_pixels: np.ndarray

    @property
    def pulse_ids(self) -> np.ndarray:
        return self.cell_ids.astype(np.uint64) * 4  # pulses 4 apart, as with a 1.1 MHz pattern stride 4

    @property
    def frames(self) -> int:
        return len(self.reasons)


def _train(train_id: int, reasons: Sequence[KeepReason], *, triaged: bool = True) -> TrainRows:
    frames = len(reasons)
    peaks = np.array([30 if r is R.HIT else 2 for r in reasons], np.int32) if triaged else np.full(frames, -1)
    lit = np.arange(frames, dtype=np.int64) * 1000 + train_id % 7 if triaged else np.full(frames, -1)
    return TrainRows(train_id, train_id * 100_000_000, np.arange(1, frames + 1, dtype=np.uint16), tuple(reasons),
                     peaks, lit)


# Every reason appears; train 1003 received no frames; train 1004 was not triaged (-1 numbers).
TRAINS = (
    _train(1000, [R.DROPPED_UNLIT, R.HIT, R.DROPPED_MISS, R.SAMPLED_MISS, R.HIT, R.DROPPED_MISS]),
    _train(1001, [R.DROPPED_MISS, R.DROPPED_MISS, R.SAMPLED_MISS, R.DROPPED_MISS, R.HIT, R.DROPPED_UNLIT]),
    _train(1003, []),
    _train(1004, [R.UNTRIAGED] * 5, triaged=False),
    _train(1005, [R.ALL] * 3),
)


def add(target: ReduFlagsFile, train: TrainRows) -> None:
    target.add_train(train.train_id, train.timestamp_ns, pulse_ids=train.pulse_ids, cell_ids=train.cell_ids,
                     reasons=train.reasons, n_peaks=train.n_peaks, lit_pixels=train.lit_pixels)


def write(path: Path, trains: Sequence[TrainRows]) -> ReduFlagsFile:
    redu = ReduFlagsFile(path, detector=DETECTOR, metadata=METADATA)
    try:
        for train in trains:
            add(redu, train)
    finally:
        redu.close()
    return redu


def column(path: Path, key: str) -> np.ndarray:
    return H5File(path)[SOURCE, f"data.{key}"].ndarray()


def assert_valid(path: Path) -> None:
    problems = FileValidator(FileAccess(str(path))).run_checks()
    assert problems == [], problems


def expected_rows(trains: Sequence[TrainRows]) -> dict[str, np.ndarray]:
    codes = np.array([int(r) for t in trains for r in t.reasons], np.int8)
    kept = np.array([r.kept for t in trains for r in t.reasons], np.uint8)
    return {
        "trainId": np.repeat([t.train_id for t in trains], [t.frames for t in trains]).astype(np.uint64),
        "pulseId": np.concatenate([t.pulse_ids for t in trains]),
        "cellId": np.concatenate([t.cell_ids for t in trains]),
        "hitFlag": (codes == R.HIT).astype(np.uint8),
        "missFlag": (codes == R.SAMPLED_MISS).astype(np.uint8),
        "dataFlag": kept,
        "keepReason": codes,
        "nPeaks": np.concatenate([t.n_peaks for t in trains]).astype(np.int32),
        "litPixels": np.concatenate([t.lit_pixels for t in trains]).astype(np.int64),
    }


@pytest.fixture
def redu_path(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / redu_file_name(Product.CORRECTED, METADATA.run)
    redu = write(path, TRAINS)
    assert (redu.trains, redu.frames) == (len(TRAINS), sum(t.frames for t in TRAINS))
    yield path


def test_names_follow_the_euxfel_reduced_product_convention() -> None:
    assert redu_file_name(Product.CORRECTED, 7) == "CORR-R0007-REDU00-S00000.h5"
    assert redu_file_name(Product.RAW, 348, 2) == "RAW-R0348-REDU00-S00002.h5"
    # extra-data 1.25 splits INSTRUMENT source ids at ':', so the channel is part of the name.
    assert redu_source("MID_DET_AGIPD1M-1") == "MID_DET_AGIPD1M-1/REDU/DETPIPE_HITFINDER:output"


def test_extra_data_reads_back_every_frame_with_its_decision(redu_path: Path) -> None:
    run = H5File(redu_path)
    assert run.instrument_sources == {SOURCE}
    assert run.train_ids == [t.train_id for t in TRAINS]
    counts = run[SOURCE].data_counts(labelled=False)
    np.testing.assert_array_equal(counts, [t.frames for t in TRAINS])
    for key, values in expected_rows(TRAINS).items():
        read = column(redu_path, key)
        assert read.dtype == values.dtype, key
        np.testing.assert_array_equal(read, values, err_msg=key)


def test_extra_data_counts_frames_per_train(redu_path: Path) -> None:
    counts = H5File(redu_path).get_data_counts(SOURCE, "data.hitFlag")
    assert counts.to_dict() == {t.train_id: t.frames for t in TRAINS}


def test_file_passes_extra_data_validation(redu_path: Path) -> None:
    assert_valid(redu_path)


def test_hit_flags_come_only_from_hits_and_miss_flags_only_from_sampled_misses(redu_path: Path) -> None:
    flags = {key: column(redu_path, key) for key in ("hitFlag", "missFlag", "dataFlag", "keepReason")}
    expected = {  # reason: (hitFlag, missFlag, dataFlag)
        R.DROPPED_MISS: (0, 0, 0), R.HIT: (1, 0, 1), R.SAMPLED_MISS: (0, 1, 1),
        R.UNTRIAGED: (0, 0, 1), R.ALL: (0, 0, 1), R.DROPPED_UNLIT: (0, 0, 0),
    }
    for reason, (hit, miss, kept) in expected.items():
        rows = flags["keepReason"] == reason
        assert rows.any(), f"the table lacks {reason.name}"
        assert set(flags["hitFlag"][rows]) == {hit}, reason.name
        assert set(flags["missFlag"][rows]) == {miss}, reason.name
        assert set(flags["dataFlag"][rows]) == {kept}, reason.name


def test_untriaged_frames_carry_minus_one_peaks_and_lit_pixels(redu_path: Path) -> None:
    untriaged = column(redu_path, "keepReason") == R.UNTRIAGED
    assert set(column(redu_path, "nPeaks")[untriaged]) == {-1}
    assert set(column(redu_path, "litPixels")[untriaged]) == {-1}


def test_train_with_zero_frames_is_listed_with_count_zero(redu_path: Path) -> None:
    counts = H5File(redu_path)[SOURCE].data_counts(labelled=True)
    assert counts[1003] == 0
    assert 1003 not in column(redu_path, "trainId")


def test_file_with_only_empty_trains_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "empty.h5"
    write(path, [_train(5, []), _train(6, [])])
    assert_valid(path)
    assert H5File(path).get_data_counts(SOURCE, "data.dataFlag").to_dict() == {5: 0, 6: 0}


def test_existing_file_is_never_overwritten(redu_path: Path) -> None:
    before = redu_path.read_bytes()
    with pytest.raises(TargetFileExists) as caught:
        ReduFlagsFile(redu_path, detector=DETECTOR, metadata=METADATA)
    assert caught.value.path == redu_path
    assert redu_path.read_bytes() == before


def test_overwrite_replaces_the_file_when_asked(redu_path: Path) -> None:
    with ReduFlagsFile(redu_path, detector=DETECTOR, metadata=METADATA, overwrite=True) as redu:
        add(redu, TRAINS[-1])
    assert H5File(redu_path).train_ids == [TRAINS[-1].train_id]


class SimulatedCrash(Exception):
    """Stands in for whatever ends a run mid-way (a dead receiver, a full disk)."""


def test_file_closed_after_an_exception_holds_the_trains_added_before(tmp_path: Path) -> None:
    path = tmp_path / "crash.h5"
    with pytest.raises(SimulatedCrash):
        redu = ReduFlagsFile(path, detector=DETECTOR, metadata=METADATA)
        try:
            add(redu, TRAINS[0])
            add(redu, TRAINS[1])
            raise SimulatedCrash
        finally:
            redu.close()
    assert_valid(path)
    np.testing.assert_array_equal(column(path, "keepReason"), expected_rows(TRAINS[:2])["keepReason"])


def test_train_half_written_when_the_disk_fails_is_trimmed_away(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "disk_full.h5"
    redu = ReduFlagsFile(path, detector=DETECTOR, metadata=METADATA)
    try:
        add(redu, TRAINS[0])
        write_row = h5py.Dataset.__setitem__

        def fail_on_the_fourth_key(dataset: h5py.Dataset, selection: object, values: object) -> None:
            if dataset.name.endswith("/hitFlag"):
                raise OSError(28, "No space left on device")
            write_row(dataset, selection, values)

        monkeypatch.setattr(h5py.Dataset, "__setitem__", fail_on_the_fourth_key)
        with pytest.raises(OSError):
            add(redu, TRAINS[1])
        monkeypatch.undo()
        assert (redu.trains, redu.frames) == (1, TRAINS[0].frames)
    finally:
        redu.close()
    assert_valid(path)
    with h5py.File(path, "r") as handle:  # extra-data reads only indexed rows; no key may keep the extra ones
        assert {name: handle[f"INSTRUMENT/{SOURCE}/data/{name}"].shape for name, _, _ in ROW_KEYS} == {
            name: (TRAINS[0].frames,) for name, _, _ in ROW_KEYS}
    assert H5File(path).train_ids == [TRAINS[0].train_id]
    for key, values in expected_rows(TRAINS[:1]).items():
        np.testing.assert_array_equal(column(path, key), values, err_msg=key)


@pytest.mark.parametrize(("bad_train", "reason"), [
    (dataclasses.replace(TRAINS[1], n_peaks=np.zeros(2, np.int32)), "shape_mismatch"),
    (dataclasses.replace(TRAINS[1], reasons=(7,) * 6), "unknown_keep_reason"),
    (dataclasses.replace(TRAINS[1], train_id=TRAINS[0].train_id), "train_id_order"),
], ids=["rows_of_unequal_length", "unknown_keep_reason", "train_id_not_increasing"])
def test_bad_train_is_rejected_with_its_reason_and_nothing_of_it_written(tmp_path: Path, bad_train: TrainRows,
                                                                          reason: str) -> None:
    path = tmp_path / "rejected.h5"
    with ReduFlagsFile(path, detector=DETECTOR, metadata=METADATA) as redu:
        add(redu, TRAINS[0])
        with pytest.raises(FrameRejected) as caught:
            add(redu, bad_train)
        assert caught.value.reason == reason
        add(redu, TRAINS[3])
    assert_valid(path)
    assert H5File(path).train_ids == [TRAINS[0].train_id, TRAINS[3].train_id]
    np.testing.assert_array_equal(column(path, "trainId"), expected_rows([TRAINS[0], TRAINS[3]])["trainId"])


def test_reasons_may_be_given_as_an_integer_array(tmp_path: Path) -> None:
    path = tmp_path / "codes.h5"
    train = TRAINS[0]
    with ReduFlagsFile(path, detector=DETECTOR, metadata=METADATA) as redu:
        redu.add_train(train.train_id, train.timestamp_ns, pulse_ids=train.pulse_ids, cell_ids=train.cell_ids,
                       reasons=np.array([int(r) for r in train.reasons], np.uint8), n_peaks=train.n_peaks,
                       lit_pixels=train.lit_pixels)
    np.testing.assert_array_equal(column(path, "dataFlag"), expected_rows([train])["dataFlag"])


def test_file_describes_its_source_and_every_dataset(redu_path: Path) -> None:
    with h5py.File(redu_path, "r") as handle:
        assert handle["METADATA/dataSources/dataSourceId"][:].tolist() == [f"INSTRUMENT/{SOURCE}/data".encode()]
        assert handle["METADATA/runNumber"][0] == METADATA.run
        assert handle["METADATA/proposalNumber"][0] == METADATA.proposal
        np.testing.assert_array_equal(handle["INDEX/timestamp"][:], [t.timestamp_ns for t in TRAINS])
        group = handle[f"INSTRUMENT/{SOURCE}/data"]
        assert sorted(group) == sorted(name for name, _, _ in ROW_KEYS)
        for name, _, _ in ROW_KEYS:
            assert group[name].attrs["description"], name
        assert "sampled_miss" in group["keepReason"].attrs["description"]

"""An archived AGIPD run reads back as the trains that wrote it, and rewriting them gives byte-identical chunks.

Ground truth is what the test handed ``ExdfWriter``: the trains built in agipd_trains.py and the hand-made
triage results of test_triage_in_writers.py. Runs are small (2-4 cells, 2 trains per sequence): an AGIPD-1M
raw frame is 4 MiB.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers filter 32008 for reading back
import numpy as np
import pytest

from detpipe.pipeline.core.series import EndOfSeries, EndReason, SeriesStart
from detpipe.pipeline.core.train import AGIPD_MODULES, Product, Train
from detpipe.pipeline.exdf.module_file import PIXEL_KEYS, module_source
from detpipe.pipeline.exdf.nexus_master import VDS_FILL
from detpipe.pipeline.exdf.run_source import ExdfRunSource, NotAnExdfRun
from tests.pipeline.agipd_trains import FIRST_TRAIN_ID, make_train
from tests.pipeline.nexus.test_nxmx_frame_source import assert_triage_equal, feed
from tests.pipeline.writers.test_exdf_writer import DETECTOR, make_writer, write_run
from tests.pipeline.writers.test_triage_in_writers import PARAMS, triaged

TRAINS_PER_SEQUENCE = 2
ALL_MODULES = tuple(range(AGIPD_MODULES))
MASK_FILL = VDS_FILL["mask"]  # an absent module's mask, as the master VDS reads it


@dataclass
class Archived:
    """A run as written: its directory and the trains the writer was given."""

    directory: Path
    trains: list[Train]


def archive(root: Path, trains: Sequence[Train], run: int, **options: object) -> Archived:
    written = write_run(make_writer(root, trains_per_sequence=TRAINS_PER_SEQUENCE, compression_threads=2,
                                    **options), trains, run=run)
    return Archived(written.directory, list(trains))


def rewrite(source: ExdfRunSource, root: Path) -> Path:
    """Feeds ``source.items()`` to a new writer set up as the source says; returns the new run directory."""
    writer = make_writer(root, trains_per_sequence=source.trains_per_sequence, detector=source.detector,
                         compression_threads=2)
    feed(writer, source.items())
    assert writer.run_directory is not None
    return writer.run_directory


@pytest.fixture(scope="module")
def raw_run(tmp_path_factory: pytest.TempPathFactory) -> Archived:
    """5 raw trains in 3 sequences; module 3 misses train 1, modules 0 and 15 miss train 4; ids jump after 2."""
    missing = {1: (3,), 4: (0, 15)}
    trains = [make_train(i, frames=3, run=4, train_id=FIRST_TRAIN_ID + i + (5 if i > 2 else 0),
                         missing=missing.get(i, ())) for i in range(5)]
    return archive(tmp_path_factory.mktemp("raw"), trains, run=4)


@pytest.fixture(scope="module")
def corrected_run(tmp_path_factory: pytest.TempPathFactory) -> Archived:
    trains = [make_train(i, product=Product.CORRECTED, frames=2, run=9, missing=(7,) if i == 2 else (), seed=3)
              for i in range(3)]
    return archive(tmp_path_factory.mktemp("corr"), trains, run=9)


@pytest.fixture(scope="module")
def triaged_run(tmp_path_factory: pytest.TempPathFactory) -> Archived:
    """A triaged run: train 1 untriaged as a whole, frame 1 of train 3 untriaged, and train 2 held by no module
    at all (its 4 frames exist only in the master, and later trains' rows must still line up)."""
    trains = [triaged(make_train(0, frames=4, run=5)),
              replace(make_train(1, frames=4, run=5), triage=None),
              triaged(make_train(2, frames=4, run=5, missing=ALL_MODULES)),
              triaged(make_train(3, frames=4, run=5, missing=(2,)), untriaged_frames=(1,)),
              triaged(make_train(4, frames=4, run=5))]
    writer = make_writer(tmp_path_factory.mktemp("triaged"), trains_per_sequence=TRAINS_PER_SEQUENCE,
                         compression_threads=2)
    writer.prepare(5)
    writer.start_series(SeriesStart(5, received_s=1.7e9, triage=PARAMS))
    for train in trains:
        writer.process(train)
    writer.finish(EndOfSeries(5))
    assert writer.run_directory is not None
    return Archived(writer.run_directory, trains)


def assert_train_equal(got: Train, want: Train, position: int, run: int) -> None:
    """Ids, flags and times equal; present modules' pixels equal; absent ones read as the master's fill."""
    where = f"train {position}"
    assert (got.series_id, got.index, got.train_id, got.product) == (run, position, want.train_id, want.product), where
    assert got.modules_present == want.modules_present, where
    assert (got.timestamp_s, got.received_s) == (want.timestamp_s, 0.0), where
    np.testing.assert_array_equal(got.cell_ids, want.cell_ids, err_msg=where)
    np.testing.assert_array_equal(got.pulse_ids, want.pulse_ids, err_msg=where)
    assert (got.cell_ids.dtype, got.pulse_ids.dtype) == (np.uint16, np.uint64), where
    present = list(np.flatnonzero(want.modules_present))
    absent = [m for m in ALL_MODULES if m not in present]
    for key in PIXEL_KEYS[want.product]:
        array = getattr(got, key.name)
        assert array.shape == getattr(want, key.name).shape and array.dtype == key.dtype, f"{where} {key.name}"
        np.testing.assert_array_equal(array[:, present], getattr(want, key.name)[:, present],
                                      err_msg=f"{where} {key.name}")
        assert (array[:, absent] == (MASK_FILL if key.name == "mask" else 0)).all(), f"{where} {key.name}"
    if want.product is Product.RAW:
        assert got.gain is None and got.mask is None, where


def module_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.startswith(("RAW-", "CORR-")))


def assert_same_chunks_and_index(old: Path, new: Path, product: Product) -> None:
    """Every pixel chunk byte-identical, row for row, and the same ids and INDEX."""
    assert [p.name for p in module_files(old)] == [p.name for p in module_files(new)]
    for before_path, after_path in zip(module_files(old), module_files(new), strict=True):
        with h5py.File(before_path, "r") as before, h5py.File(after_path, "r") as after:
            module = int(before_path.name.split("-AGIPD")[1][:2])
            image = f"INSTRUMENT/{module_source(DETECTOR, product, module)}/image"
            for key in PIXEL_KEYS[product]:
                a, b = before[f"{image}/{key.name}"], after[f"{image}/{key.name}"]
                assert (a.shape, a.dtype, a.chunks) == (b.shape, b.dtype, b.chunks), f"{before_path.name} {key.name}"
                offset = (0,) * (a.ndim - 1)
                for row in range(a.shape[0]):
                    assert a.id.read_direct_chunk((row, *offset)) == b.id.read_direct_chunk((row, *offset)), \
                        f"{before_path.name} {key.name} row {row}"
            for name in ("trainId", "pulseId", "cellId"):
                np.testing.assert_array_equal(after[f"{image}/{name}"][()], before[f"{image}/{name}"][()])
            index = image.replace("INSTRUMENT", "INDEX")
            for name in ("INDEX/trainId", "INDEX/timestamp", f"{index}/first", f"{index}/count"):
                np.testing.assert_array_equal(after[name][()], before[name][()], err_msg=f"{before_path.name} {name}")


def test_raw_trains_come_back_with_their_pixels_ids_and_timestamps(raw_run: Archived) -> None:
    got = list(ExdfRunSource(raw_run.directory).trains())
    assert len(got) == len(raw_run.trains)
    for position, (train, want) in enumerate(zip(got, raw_run.trains)):
        assert_train_equal(train, want, position, run=4)
        assert train.triage is None


def test_an_absent_module_is_flagged_and_reads_as_zeros(raw_run: Archived) -> None:
    got = list(ExdfRunSource(raw_run.directory).trains())
    assert [m for m in ALL_MODULES if not got[1].modules_present[m]] == [3]
    assert [m for m in ALL_MODULES if not got[4].modules_present[m]] == [0, 15]
    assert not got[1].data[:, 3].any() and not got[4].data[:, [0, 15]].any()
    assert got[1].data[:, 2].all()  # the neighbouring module is real data (ADU ≥ 4000)


def test_corrected_trains_come_back_with_gain_and_mask_and_an_absent_module_fully_masked(
        corrected_run: Archived) -> None:
    source = ExdfRunSource(corrected_run.directory)
    assert source.product is Product.CORRECTED
    for position, (train, want) in enumerate(zip(source.trains(), corrected_run.trains, strict=True)):
        assert_train_equal(train, want, position, run=9)
    absent = list(source.trains())[2]
    assert (absent.mask[:, 7] == MASK_FILL).all() and not absent.gain[:, 7].any() and not absent.data[:, 7].any()


def test_layout_attributes_describe_the_run_as_written(raw_run: Archived) -> None:
    source = ExdfRunSource(raw_run.directory)
    assert (source.run_number, source.product, source.detector) == (4, Product.RAW, DETECTOR)
    assert (source.trains_per_sequence, source.proposal) == (TRAINS_PER_SEQUENCE, 900123)
    assert source.master == raw_run.directory / "AGIPD-R0004-master.h5"
    expected = [raw_run.directory / f"RAW-R0004-AGIPD{m:02d}-S{s:05d}.h5" for s in range(3) for m in ALL_MODULES]
    assert source.files == [source.master, *expected]
    assert (source.trains_total, source.frames_total) == (5, 15)


def test_series_start_carries_the_run_number_and_the_first_train_time(raw_run: Archived) -> None:
    start = ExdfRunSource(raw_run.directory).series_start()
    assert (start.series_id, start.config, start.triage) == (4, None, None)
    assert start.received_s == pytest.approx(raw_run.trains[0].timestamp_s, abs=1e-3)


def test_items_are_the_start_every_train_then_an_end_that_counts_the_frames(raw_run: Archived) -> None:
    items = list(ExdfRunSource(raw_run.directory).items())
    assert isinstance(items[0], SeriesStart) and all(isinstance(item, Train) for item in items[1:-1])
    assert len(items) == len(raw_run.trains) + 2
    assert items[-1] == EndOfSeries(4, EndReason.END_MESSAGE, frames_sent=15)


@pytest.mark.parametrize("block_rows", [3, 1024])
def test_triage_comes_back_equal_to_what_the_writer_was_given(triaged_run: Archived, block_rows: int) -> None:
    source = ExdfRunSource(triaged_run.directory, triage_block_rows=block_rows)
    assert source.series_start().triage == PARAMS
    got = list(source.trains())
    for position, (train, want) in enumerate(zip(got, triaged_run.trains, strict=True)):
        assert train.triage is not None and len(train.triage) == want.frames, f"train {position}"
        expected = want.triage if want.triage is not None else (None,) * want.frames
        for f, (result, wanted) in enumerate(zip(train.triage, expected, strict=True)):
            assert_triage_equal(result, wanted, 4 * position + f)
    assert got[1].triage == (None,) * 4 and got[3].triage[1] is None


def test_a_train_no_module_holds_keeps_its_frames_and_ids_from_the_master(triaged_run: Archived) -> None:
    source = ExdfRunSource(triaged_run.directory)
    empty = list(source.trains())[2]
    assert_train_equal(empty, triaged_run.trains[2], 2, run=5)
    assert not any(empty.modules_present) and empty.frames == 4 and source.frames_total == 20


@pytest.mark.parametrize("fixture", ["raw_run", "corrected_run"])
def test_rewriting_the_items_stores_byte_identical_chunks(request: pytest.FixtureRequest, fixture: str,
                                                          tmp_path: Path) -> None:
    archived: Archived = request.getfixturevalue(fixture)
    source = ExdfRunSource(archived.directory)
    rewritten = rewrite(source, tmp_path)
    assert rewritten.name == archived.directory.name
    assert_same_chunks_and_index(archived.directory, rewritten, source.product)


def test_rewriting_a_triaged_run_stores_the_same_chunks_and_triage_rows(triaged_run: Archived, tmp_path: Path) -> None:
    source = ExdfRunSource(triaged_run.directory)
    rewritten = rewrite(source, tmp_path)
    assert_same_chunks_and_index(triaged_run.directory, rewritten, Product.RAW)
    with h5py.File(source.master, "r") as before, h5py.File(rewritten / source.master.name, "r") as after:
        for path in ("/entry/process_01/results/n_peaks", "/entry/process_01/results/is_hit",
                     "/entry/process_01/results/lit_pixels", "/entry/process_01/results/vetoed",
                     "/entry_1/result_1/nPeaks", "/entry_1/result_1/peakXPosRaw", "/entry_1/result_1/peakYPosRaw",
                     "/entry/data/trainId", "/entry/data/cellId", "/entry/data/modules_present"):
            np.testing.assert_array_equal(after[path][()], before[path][()], err_msg=path)


def test_a_directory_without_module_files_is_refused_with_what_to_pass(raw_run: Archived, tmp_path: Path) -> None:
    shutil.copy(raw_run.directory / "AGIPD-R0004-master.h5", tmp_path)  # a master alone is no run
    (tmp_path / "notes.txt").write_text("not a run")
    with pytest.raises(NotAnExdfRun, match="no AGIPD module files.*pass a run directory") as caught:
        ExdfRunSource(tmp_path)
    assert isinstance(caught.value, ValueError) and caught.value.directory == tmp_path


def test_a_directory_mixing_raw_and_corrected_files_is_refused(raw_run: Archived, corrected_run: Archived,
                                                               tmp_path: Path) -> None:
    mixed = Path(shutil.copytree(raw_run.directory, tmp_path / "mixed"))
    shutil.copy(corrected_run.directory / "CORR-R0009-AGIPD00-S00000.h5", mixed / "CORR-R0004-AGIPD00-S00000.h5")
    with pytest.raises(NotAnExdfRun, match=r"mixes products \['CORR', 'RAW'\]"):
        ExdfRunSource(mixed)


def test_a_directory_holding_two_runs_is_refused(raw_run: Archived, tmp_path: Path) -> None:
    mixed = Path(shutil.copytree(raw_run.directory, tmp_path / "mixed"))
    shutil.copy(mixed / "RAW-R0004-AGIPD00-S00000.h5", mixed / "RAW-R0005-AGIPD00-S00000.h5")
    with pytest.raises(NotAnExdfRun, match=r"several runs \[4, 5\]"):
        ExdfRunSource(mixed)

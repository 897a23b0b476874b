"""The EXDF writer produces EuXFEL run directories that extra-data reads back pixel for pixel, plus a NeXus master.

Ground truth is the trains built in agipd_trains.py; every comparison is of pixels and ids, never of "a file
exists". Runs are small (8 cells) because an AGIPD-1M frame is 4 MiB.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import extra_data
import h5py
import hdf5plugin  # noqa: F401 - registers filter 32008 for reading back
import numpy as np
import pytest
from extra_data.components import AGIPD1M

from detpipe.pipeline.core.chunk_framing import (
    DEFAULT_BLOCK_BYTES,
    check_chunk,
    decode_chunk_pixels,
    parse_chunk_header,
)
from detpipe.pipeline.core.errors import FrameRejected, PathOutsideDataRoots, TargetFileExists
from detpipe.pipeline.core.frame import Encoding
from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.core.saving_target import OverwritePolicy, SavingParams
from detpipe.pipeline.core.series import EndOfSeries, EndReason, SeriesStart
from detpipe.pipeline.core.stage_runner import StageRunner
from detpipe.pipeline.core.train import AGIPD_MODULES, Product, Train
from detpipe.pipeline.exdf.module_file import ModuleChunks, module_source
from detpipe.pipeline.exdf.pixel_compression import PixelCompression
from detpipe.pipeline.writers import exdf_writer
from detpipe.pipeline.writers.exdf_writer import ExdfWriter
from tests.pipeline.agipd_trains import FIRST_TRAIN_ID, make_train, module_frames, run_stack
from tests.waiting import wait_until

DETECTOR = "SPB_DET_AGIPD1M-1"
RAW_FRAME_BYTES = 2 * 512 * 128 * 2
MAKE_VIRTUAL_CXI = Path(sys.executable).parent / "extra-data-make-virtual-cxi"
VALIDATE = Path(sys.executable).parent / "extra-data-validate"


@dataclasses.dataclass
class WrittenRun:
    writer: ExdfWriter
    trains: list[Train]

    @property
    def directory(self) -> Path:
        assert self.writer.run_directory is not None
        return self.writer.run_directory


def make_writer(root: Path, **options: object) -> ExdfWriter:
    policy = options.pop("overwrite_policy", OverwritePolicy.ABORT)
    params = SavingParams(directory=root / "raw", data_roots=(root,), overwrite_policy=policy)  # type: ignore[arg-type]
    return ExdfWriter(params, proposal=900123, **options)  # type: ignore[arg-type]


def write_run(writer: ExdfWriter, trains: Sequence[Train], run: int = 1) -> WrittenRun:
    writer.prepare(run)
    writer.start_series(SeriesStart(run))
    for train in trains:
        writer.process(train)
    writer.finish(EndOfSeries(run))
    return WrittenRun(writer, list(trains))


def open_run(directory: Path) -> extra_data.DataCollection:
    # Serial opening: extra-data's parallel path starts a loky process pool this test process would keep.
    return extra_data.RunDirectory(str(directory), parallelize=False)


def read_frames(dataset: h5py.Dataset) -> np.ndarray:
    """A virtual dataset read frame by frame: HDF5 reads a multi-frame slice of a VDS over chunked sources
    about 100 times slower than the same frames one by one (h5py issue #1597, still so with HDF5 2.0)."""
    return np.stack([dataset[k] for k in range(dataset.shape[0])])


def ids(key_data: extra_data.KeyData) -> np.ndarray:
    return key_data.ndarray().reshape(-1)  # raw ids are (N, 1), corrected (N,)


# Train ids jump after train 6 (a lost train), module 3 misses train 2 and module 11 trains 5 and 6.
MISSING = {2: (3,), 5: (11,), 6: (11,)}
RAW_TRAIN_IDS = [FIRST_TRAIN_ID + i + (2 if i > 6 else 0) for i in range(10)]


@pytest.fixture(scope="module")
def raw_run(tmp_path_factory: pytest.TempPathFactory) -> WrittenRun:
    trains = [make_train(i, train_id=tid, missing=MISSING.get(i, ())) for i, tid in enumerate(RAW_TRAIN_IDS)]
    return write_run(make_writer(tmp_path_factory.mktemp("raw"), trains_per_sequence=4), trains)


@pytest.fixture(scope="module")
def corrected_run(tmp_path_factory: pytest.TempPathFactory) -> WrittenRun:
    trains = [make_train(i, product=Product.CORRECTED, frames=4, run=7, missing=(0,) if i == 1 else (), seed=5)
              for i in range(5)]
    return write_run(make_writer(tmp_path_factory.mktemp("corr"), compression=PixelCompression.BSLZ4), trains, run=7)


def test_raw_modules_read_back_pixel_for_pixel_with_their_ids_in_extra_data(
        raw_run: WrittenRun, capsys: pytest.CaptureFixture[str]) -> None:
    run = open_run(raw_run.directory).select("*/DET/*", "image.*")
    assert "Skipping file" not in capsys.readouterr().err  # the NeXus master opens as an EXDF file too
    assert run.instrument_sources == {module_source(DETECTOR, Product.RAW, m) for m in range(AGIPD_MODULES)}
    assert list(run.train_ids) == RAW_TRAIN_IDS
    for module in range(AGIPD_MODULES):
        source = run[module_source(DETECTOR, Product.RAW, module)]
        present = [t for t in raw_run.trains if t.modules_present[module]]
        np.testing.assert_array_equal(source["image.data"].ndarray(), module_frames(raw_run.trains, module))
        assert source["image.data"].dtype == np.uint16
        np.testing.assert_array_equal(ids(source["image.trainId"]), np.repeat([t.train_id for t in present], 8))
        np.testing.assert_array_equal(ids(source["image.cellId"]), np.concatenate([t.cell_ids for t in present]))
        np.testing.assert_array_equal(ids(source["image.pulseId"]), np.concatenate([t.pulse_ids for t in present]))


def test_agipd1m_raw_view_stacks_the_modules_with_the_gain_axis(raw_run: WrittenRun) -> None:
    detector = AGIPD1M(open_run(raw_run.directory), raw=True).select_trains(np.s_[1:4])  # train 2 lacks module 3
    array = detector.get_array("image.data", unstack_pulses=False)
    assert array.dims == ("module", "train_pulse", "data_gain", "slow_scan", "fast_scan")
    expected = run_stack(raw_run.trains[1:4]).swapaxes(0, 1)  # missing modules: zero here, extra-data's fill there
    np.testing.assert_array_equal(array.values, expected)
    np.testing.assert_array_equal(detector.get_array("image.cellId", unstack_pulses=False).values[0],
                                  np.concatenate([t.cell_ids for t in raw_run.trains[1:4]]))


def test_corrected_run_reads_back_data_gain_and_mask(corrected_run: WrittenRun) -> None:
    run = open_run(corrected_run.directory)
    detector = AGIPD1M(run, raw=False)
    assert detector.get_array("image.data", unstack_pulses=False).dims == ("module", "train_pulse", "slow_scan", "fast_scan")
    for module in range(AGIPD_MODULES):
        source = run[module_source(DETECTOR, Product.CORRECTED, module)]
        for key, dtype in (("data", np.float32), ("gain", np.uint8), ("mask", np.uint32)):
            values = source[f"image.{key}"].ndarray()
            assert values.dtype == dtype
            np.testing.assert_array_equal(values, module_frames(corrected_run.trains, module, key))
        assert source["image.pulseId"].ndarray().shape == (source["image.data"].shape[0],)
    assert sorted(p.name for p in corrected_run.directory.glob("CORR-*-AGIPD00-*.h5")) == [
        "CORR-R0007-AGIPD00-S00000.h5"]


def test_a_new_sequence_file_starts_every_trains_per_sequence_trains(raw_run: WrittenRun) -> None:
    for module in range(AGIPD_MODULES):
        names = sorted(p.name for p in raw_run.directory.glob(f"RAW-R0001-AGIPD{module:02d}-S*.h5"))
        assert names == [f"RAW-R0001-AGIPD{module:02d}-S{s:05d}.h5" for s in range(3)]
    for sequence, train_ids in enumerate((RAW_TRAIN_IDS[:4], RAW_TRAIN_IDS[4:8], RAW_TRAIN_IDS[8:])):
        with h5py.File(raw_run.directory / f"RAW-R0001-AGIPD05-S{sequence:05d}.h5") as handle:
            assert list(handle["INDEX/trainId"]) == train_ids
            metadata = {key: handle[f"METADATA/{key}"][0] for key in
                        ("dataFormatVersion", "runNumber", "sequenceNumber", "proposalNumber")}
            assert metadata == {"dataFormatVersion": b"1.2", "runNumber": 1, "sequenceNumber": sequence,
                                "proposalNumber": 900123}
            assert list(handle["METADATA/dataSources/dataSourceId"]) == [
                f"INSTRUMENT/{DETECTOR}/DET/5CH0:xtdf/image".encode()]
            assert list(handle["INDEX/flag"]) == [1] * len(train_ids)


def test_a_missing_module_is_listed_with_count_zero_and_the_gap_is_visible(raw_run: WrittenRun) -> None:
    with h5py.File(raw_run.directory / "RAW-R0001-AGIPD03-S00000.h5") as handle:
        index = handle[f"INDEX/{DETECTOR}/DET/3CH0:xtdf/image"]
        assert list(handle["INDEX/trainId"]) == RAW_TRAIN_IDS[:4]
        assert list(index["count"]) == [8, 8, 0, 8] and list(index["first"]) == [0, 8, 16, 16]
        assert handle[f"INSTRUMENT/{DETECTOR}/DET/3CH0:xtdf/image/data"].shape == (24, 2, 512, 128)
    run = open_run(raw_run.directory)
    counts = run[module_source(DETECTOR, Product.RAW, 11), "image.data"].data_counts(labelled=False)
    assert list(counts) == [8, 8, 8, 8, 8, 0, 0, 8, 8, 8]
    complete = AGIPD1M(run, raw=True, min_modules=AGIPD_MODULES)
    assert list(complete.data.train_ids) == [tid for i, tid in enumerate(RAW_TRAIN_IDS) if i not in MISSING]
    assert list(AGIPD1M(run, raw=True).data.train_ids) == RAW_TRAIN_IDS


def test_extra_data_validate_finds_no_problem_in_the_run_master_included(raw_run: WrittenRun) -> None:
    result = subprocess.run([str(VALIDATE), str(raw_run.directory)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "No problems found" in result.stdout, result.stdout[-2000:]


def test_virtual_cxi_from_extra_data_reads_back_the_input(raw_run: WrittenRun, tmp_path: Path) -> None:
    out = tmp_path / "run.cxi"
    result = subprocess.run([str(MAKE_VIRTUAL_CXI), str(raw_run.directory), "-o", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    with h5py.File(out) as handle:
        data = handle["/entry_1/instrument_1/detector_1/data"]
        assert data.shape == (80, AGIPD_MODULES, 2, 512, 128)
        np.testing.assert_array_equal(read_frames(data), run_stack(raw_run.trains))
        np.testing.assert_array_equal(handle["/entry_1/trainId"][()], np.repeat(RAW_TRAIN_IDS, 8))
        np.testing.assert_array_equal(handle["/entry_1/pulseId"][()],
                                      np.concatenate([t.pulse_ids for t in raw_run.trains]))


def test_nexus_master_vds_stacks_every_module_with_the_gain_axis(raw_run: WrittenRun) -> None:
    assert raw_run.writer.master_path == raw_run.directory / "AGIPD-R0001-master.h5"
    with h5py.File(raw_run.writer.master_path) as handle:
        assert handle.attrs["default"] == "entry" and handle["entry"].attrs["default"] == "data"
        group = handle["/entry/data"]
        assert group.attrs["NX_class"] == "NXdata" and group.attrs["signal"] == "data"
        data = group["data"]
        assert data.is_virtual and data.dtype == np.uint16 and data.shape == (80, AGIPD_MODULES, 2, 512, 128)
        assert all("/" not in source.file_name for source in data.virtual_sources())  # relative: the run can move
        np.testing.assert_array_equal(read_frames(data), run_stack(raw_run.trains))
        np.testing.assert_array_equal(group["trainId"][()], np.repeat(RAW_TRAIN_IDS, 8))
        np.testing.assert_array_equal(group["cellId"][()], np.concatenate([t.cell_ids for t in raw_run.trains]))
        np.testing.assert_array_equal(group["pulseId"][()], np.concatenate([t.pulse_ids for t in raw_run.trains]))
        assert group["modules_present"][16:24, 3].tolist() == [0] * 8 and group["modules_present"][16:24].sum() == 120
        detector = handle["/entry/instrument/detector"]
        assert detector.attrs["NX_class"] == "NXdetector"
        assert detector["description"][()] == b"AGIPD-1M" and detector["sensor_material"][()] == b"Si"
        assert detector["x_pixel_size"][()] == pytest.approx(200e-6) and detector["x_pixel_size"].attrs["units"] == "m"
        assert detector["sensor_thickness"][()] == pytest.approx(500e-6)


def test_nexus_master_of_a_corrected_run_stacks_data_gain_and_mask(corrected_run: WrittenRun) -> None:
    with h5py.File(corrected_run.writer.master_path) as handle:
        group = handle["/entry/data"]
        assert group["data"].shape == (20, AGIPD_MODULES, 512, 128) and group["data"].dtype == np.float32
        np.testing.assert_array_equal(read_frames(group["data"]), run_stack(corrected_run.trains))
        np.testing.assert_array_equal(read_frames(group["gain"]), run_stack(corrected_run.trains, "gain"))
        mask = run_stack(corrected_run.trains, "mask")
        mask[4:8, 0] = 0xFFFFFFFF  # module 0 missed train 1: every bad-pixel bit set
        np.testing.assert_array_equal(read_frames(group["mask"]), mask)
        # the slab CrystFEL reads with the CXI peak list: the same frames, modules one below the other
        assert group["data_slab"].shape == (20, AGIPD_MODULES * 512, 128) and "gain_slab" not in group
        np.testing.assert_array_equal(read_frames(group["data_slab"]),
                                      run_stack(corrected_run.trains).reshape(20, AGIPD_MODULES * 512, 128))
        np.testing.assert_array_equal(read_frames(group["mask_slab"]), mask.reshape(20, AGIPD_MODULES * 512, 128))


def test_bslz4_chunks_on_disk_are_bitshuffle_lz4_chunks_with_the_filter_header(corrected_run: WrittenRun) -> None:
    for key in ("data", "gain", "mask"):
        expected = getattr(corrected_run.trains[0], key)[1, 2]  # frame 1 of module 2
        with h5py.File(corrected_run.directory / "CORR-R0007-AGIPD02-S00000.h5") as handle:
            dataset = handle[f"INSTRUMENT/{DETECTOR}/CORR/2CH0:output/image/{key}"]
            plist = dataset.id.get_create_plist()
            assert [plist.get_filter(i)[0] for i in range(plist.get_nfilters())] == [32008]
            assert dataset.chunks == (1, *expected.shape)
            filter_mask, blob = dataset.id.read_direct_chunk((1,) + (0,) * expected.ndim)
        assert filter_mask == 0
        header = parse_chunk_header(blob)
        assert (header.nbytes, header.block_bytes) == (expected.nbytes, DEFAULT_BLOCK_BYTES)
        check_chunk(Encoding.BSLZ4, blob, expected.nbytes, expected.dtype.itemsize)
        np.testing.assert_array_equal(decode_chunk_pixels(Encoding.BSLZ4, blob, expected.shape, expected.dtype),
                                      expected)


def test_stats_count_each_frame_once_and_the_bytes_on_disk(raw_run: WrittenRun) -> None:
    stats = raw_run.writer.stats
    module_frames_present = sum(t.frames * sum(t.modules_present) for t in raw_run.trains)
    assert (stats.frames_written, stats.last_image_saved, stats.files_closed) == (80, 79, 3)
    assert stats.bytes_uncompressed == module_frames_present * RAW_FRAME_BYTES
    on_disk = 0
    for module in range(AGIPD_MODULES):
        for sequence in range(3):
            with h5py.File(raw_run.directory / f"RAW-R0001-AGIPD{module:02d}-S{sequence:05d}.h5") as handle:
                data = handle[f"INSTRUMENT/{module_source(DETECTOR, Product.RAW, module)}/image/data"]
                on_disk += sum(data.id.get_chunk_info(i).size for i in range(data.id.get_num_chunks()))
    assert stats.bytes_written == on_disk == stats.bytes_uncompressed  # the default stores pixels as they are
    assert stats.current_file == ""


# What a user without detpipe runs (the European XFEL data analysis documentation's AGIPD recipe): no hdf5plugin,
# no HDF5_PLUGIN_PATH. It prints the pixels' checksum so the test compares them with the trains it wrote.
STOCK_READER = """
import sys, extra_data, numpy as np
from extra_data.components import AGIPD1M
run = extra_data.RunDirectory(sys.argv[1], parallelize=False)
data = AGIPD1M(run, raw=sys.argv[2] == "raw").get_array("image.data", unstack_pulses=False).values
assert "hdf5plugin" not in sys.modules, "the reader loaded hdf5plugin"
print(data.shape, int(np.nansum(data.astype(np.float64))))  # a missing module reads as NaN or 0
"""


def stock_read(directory: Path, product: Product) -> str:
    env = {k: v for k, v in os.environ.items() if k != "HDF5_PLUGIN_PATH"}
    result = subprocess.run([sys.executable, "-c", STOCK_READER, str(directory), product.value], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


def expected_read(trains: Sequence[Train]) -> str:
    stack = run_stack(trains).swapaxes(0, 1)
    return f"{stack.shape} {int(stack.astype(np.float64).sum())}"


def test_the_default_and_deflate_runs_read_in_stock_extra_data_with_no_filter_plugin(
        raw_run: WrittenRun, tmp_path: Path) -> None:
    assert stock_read(raw_run.directory, Product.RAW) == expected_read(raw_run.trains)
    trains = [make_train(i, frames=2, run=3, seed=9) for i in range(3)]
    deflated = write_run(make_writer(tmp_path, compression=PixelCompression.DEFLATE), trains, run=3)
    with h5py.File(deflated.directory / "RAW-R0003-AGIPD04-S00000.h5") as handle:
        plist = handle[f"INSTRUMENT/{DETECTOR}/DET/4CH0:xtdf/image/data"].id.get_create_plist()
        assert [plist.get_filter(i)[0] for i in range(plist.get_nfilters())] == [h5py.h5z.FILTER_SHUFFLE,
                                                                                 h5py.h5z.FILTER_DEFLATE]
    assert stock_read(deflated.directory, Product.RAW) == expected_read(trains)
    assert deflated.writer.stats.bytes_written < 0.9 * deflated.writer.stats.bytes_uncompressed


def test_a_bslz4_run_tells_a_stock_reader_which_filter_it_lacks(corrected_run: WrittenRun) -> None:
    result = subprocess.run([sys.executable, "-c", STOCK_READER, str(corrected_run.directory), "corrected"],
                            env={k: v for k, v in os.environ.items() if k != "HDF5_PLUGIN_PATH"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "plugin" in result.stderr  # the opt-in; docs/agipd.md gives the recipe
    env = dict(os.environ, HDF5_PLUGIN_PATH=hdf5plugin.PLUGIN_PATH)
    result = subprocess.run([sys.executable, "-c", STOCK_READER, str(corrected_run.directory), "corrected"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == expected_read(corrected_run.trains)


def test_a_bad_train_is_rejected_with_a_named_reason_and_the_run_goes_on(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    writer.prepare(2)
    writer.start_series(SeriesStart(2))
    first = make_train(0, frames=1, run=2)
    writer.process(first)
    bad = {
        "shape_mismatch": [dataclasses.replace(first, train_id=first.train_id + 1, data=first.data.astype(np.float32)),
                           dataclasses.replace(first, train_id=first.train_id + 1, data=first.data[:, :, 0]),
                           dataclasses.replace(first, train_id=first.train_id + 1, modules_present=(True,) * 15)],
        "product_mismatch": [make_train(1, product=Product.CORRECTED, frames=1, run=2)],
        "train_id_not_increasing": [dataclasses.replace(first, train_id=first.train_id),
                                    dataclasses.replace(first, train_id=first.train_id - 5)],
    }
    for reason, trains in bad.items():
        for train in trains:
            with pytest.raises(FrameRejected) as rejected:
                writer.process(train)
            assert rejected.value.reason == reason
    second = make_train(1, frames=1, run=2)
    writer.process(second)
    writer.finish(EndOfSeries(2))
    run = open_run(tmp_path / "raw" / "r0002")
    assert list(run.train_ids) == [first.train_id, second.train_id]
    np.testing.assert_array_equal(run[module_source(DETECTOR, Product.RAW, 9), "image.data"].ndarray(),
                                  module_frames([first, second], 9))


def test_corrected_train_without_gain_and_mask_is_a_shape_mismatch(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    writer.start_series(SeriesStart(3))
    with pytest.raises(FrameRejected, match="gain missing") as rejected:
        writer.process(dataclasses.replace(make_train(0, product=Product.CORRECTED, frames=1, run=3), gain=None))
    assert rejected.value.reason == "shape_mismatch"
    writer.finish(EndOfSeries(3))


def test_a_failure_mid_train_is_aborted_by_the_runner_and_every_file_stays_valid(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = make_writer(tmp_path, trains_per_sequence=4)
    trains = [make_train(i, frames=2) for i in range(6)]
    inbox: FrameQueue = FrameQueue(16, FullPolicy.BLOCK)
    failed = threading.Event()
    runner = StageRunner("exdf", writer, inbox, on_failure=lambda reason: failed.set())  # type: ignore[arg-type]
    runner.start()
    inbox.put(SeriesStart(1))
    for train in trains[:5]:
        inbox.put(train)
    wait_until(lambda: writer.stats.frames_written, lambda n: n == 10, what="frames written")
    real_chunks = exdf_writer.module_chunks

    def module_7_breaks_after_one_frame(train: Train, module: int, compression: PixelCompression) -> ModuleChunks:
        chunks = real_chunks(train, module, compression)
        if module == 7:
            chunks["data"][1] = 12345  # type: ignore[call-overload]  # not a buffer: write_direct_chunk raises
        return chunks

    monkeypatch.setattr(exdf_writer, "module_chunks", module_7_breaks_after_one_frame)
    inbox.put(trains[5])
    inbox.put(EndOfSeries(1, EndReason.STOP))
    assert runner.series_done.wait(10.0) and failed.is_set()
    runner.close()
    assert "frame 5 of series 1: TypeError" in (runner.failure or "")  # the runner names a train by its index
    assert writer.stats.rejected["stage_failed"] == 2 and writer.stats.frames_written == 10  # the train's 2 frames
    run = open_run(tmp_path / "raw" / "r0001")
    for module in (0, 7, 15):
        data = run[module_source(DETECTOR, Product.RAW, module), "image.data"]
        kept = trains[:6] if module < 7 else trains[:5]  # modules 0-6 had stored train 5 completely
        np.testing.assert_array_equal(data.ndarray(), module_frames(kept, module))
    with h5py.File(tmp_path / "raw" / "r0001" / "RAW-R0001-AGIPD07-S00001.h5") as handle:  # its train-5 row trimmed
        assert handle[f"INSTRUMENT/{DETECTOR}/DET/7CH0:xtdf/image/data"].shape == (2, 2, 512, 128)
    with h5py.File(writer.master_path) as handle:
        np.testing.assert_array_equal(read_frames(handle["/entry/data/data"]), run_stack(trains[:5]))


def test_an_existing_run_directory_is_refused_under_abort_and_replaced_under_overwrite(tmp_path: Path) -> None:
    first = write_run(make_writer(tmp_path, trains_per_sequence=1), [make_train(i, frames=1) for i in range(3)])
    open_run(first.directory)  # extra-data leaves karabo_data_map.json in the run directory
    assert (first.directory / "karabo_data_map.json").exists()
    before = sorted(p.name for p in first.directory.iterdir())
    with pytest.raises(TargetFileExists):
        make_writer(tmp_path).prepare(1)
    assert sorted(p.name for p in first.directory.iterdir()) == before
    again = write_run(make_writer(tmp_path, overwrite_policy=OverwritePolicy.OVERWRITE),
                      [make_train(i, frames=1, seed=9) for i in range(2)])
    names = sorted(p.name for p in again.directory.iterdir())
    assert "karabo_data_map.json" not in names and not any("-S00002" in n for n in names)
    # Read with h5py: extra-data keeps one FileAccess per path for the life of the process, so it would still
    # describe the first run's files here.
    with h5py.File(again.directory / "RAW-R0001-AGIPD04-S00000.h5") as handle:
        assert list(handle["INDEX/trainId"]) == [t.train_id for t in again.trains]
        np.testing.assert_array_equal(handle[f"INSTRUMENT/{DETECTOR}/DET/4CH0:xtdf/image/data"][()],
                                      module_frames(again.trains, 4))


def test_a_directory_outside_data_roots_is_refused_at_prepare(tmp_path: Path) -> None:
    params = SavingParams(directory=tmp_path / "elsewhere", data_roots=(tmp_path / "roots",))
    with pytest.raises(PathOutsideDataRoots):
        ExdfWriter(params).prepare(1)
    assert not (tmp_path / "elsewhere").exists()


def test_files_are_named_after_the_prepared_run_then_the_given_run_number_then_the_series_id(tmp_path: Path) -> None:
    writer = make_writer(tmp_path, run_number=42)
    for series_id, expected in ((3, "r0042"), (4, "r0004"), (5, "r0017")):
        if series_id == 5:
            writer.prepare(17)
        writer.start_series(SeriesStart(series_id))
        writer.process(make_train(0, frames=1, run=series_id))
        writer.finish(EndOfSeries(series_id))
        assert writer.run_directory == tmp_path / "raw" / expected
        with h5py.File(writer.run_directory / f"RAW-R{expected[1:]}-AGIPD00-S00000.h5") as handle:
            assert handle["METADATA/runNumber"][0] == int(expected[1:])

"""The NXmx writer stores the detector's chunks unchanged and every file reads back pixel for pixel."""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import tracemalloc
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import nxmx
import pytest

from detpipe.pipeline.core.errors import FrameRejected, TargetFileExists
from detpipe.pipeline.core.frame import Encoding, Frame
from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.core.saving_target import OverwritePolicy, SavingParams
from detpipe.pipeline.core.series import EndOfSeries, EndReason
from detpipe.pipeline.core.stage_runner import StageRunner
from detpipe.pipeline.writers.nxmx_writer import NxmxWriter
from tests.pipeline.frames_for_writer_tests import SMALL, config, frame, pixels, read_stack, start

MASKED_16 = 2**16 - 1


def make_writer(root: Path, **extra: object) -> NxmxWriter:
    extra.setdefault("frames_per_file", 10)
    return NxmxWriter(SavingParams(directory=root / "run", data_roots=(root,), **extra))  # type: ignore[arg-type]


def write_series(writer: NxmxWriter, indices: list[int], *, series_id: int = 1, nimages: int | None = 25,
                 encoding: Encoding = Encoding.BSLZ4, dtype: str = "uint16", reason: EndReason = EndReason.END_MESSAGE,
                 shape: tuple[int, int] = SMALL) -> dict[int, np.ndarray]:
    cfg = config(shape, dtype, nimages) if nimages is not None else None
    writer.start_series(start(series_id, cfg))
    images = {i: pixels(i, shape, dtype, seed=series_id) for i in indices}
    for i in indices:
        writer.process(frame(i, images[i], encoding, series_id))
    writer.finish(EndOfSeries(series_id, reason))
    return images


def data_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "run").glob("*_data_*.h5"))


@pytest.mark.parametrize("encoding", list(Encoding))
def test_every_pixel_reads_back_from_data_files_and_master_vds(tmp_path: Path, encoding: Encoding) -> None:
    writer = make_writer(tmp_path)
    images = write_series(writer, list(range(25)), encoding=encoding)
    stacks = [read_stack(tmp_path / "run" / name) for name in data_files(tmp_path)]
    expected = np.stack([images[i] for i in range(25)])
    np.testing.assert_array_equal(np.concatenate(stacks), expected)
    np.testing.assert_array_equal(read_stack(writer.master_path), expected)
    with h5py.File(tmp_path / "run" / "series_1_data_000001.h5") as handle:
        plist = handle["/entry/data/data"].id.get_create_plist()
        filters = [plist.get_filter(k)[::2] for k in range(plist.get_nfilters())]
    # 32008 stores the bitshuffle version and the element size (2 bytes) before the user options (bitshuffle's filter)
    expected_filters = {Encoding.BSLZ4: [(32008, (2, *hdf5plugin.Bitshuffle(nelems=0, cname="lz4").filter_options))],
                        Encoding.LZ4: [(32004, hdf5plugin.LZ4().filter_options)], Encoding.RAW: []}[encoding]
    skip_version = 2 if encoding is Encoding.BSLZ4 else 0
    assert [(fid, options[skip_version:]) for fid, options in filters] == expected_filters


def test_chunks_on_disk_are_the_detector_blobs_byte_for_byte(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    writer.start_series(start(1, config(nimages=4)))
    frames = [frame(i, pixels(i)) for i in range(4)]
    for item in frames:
        writer.process(item)
    writer.finish(EndOfSeries(1))
    with h5py.File(tmp_path / "run" / "series_1_data_000001.h5") as handle:
        dataset = handle["/entry/data/data"]
        assert [dataset.id.read_direct_chunk((i, 0, 0)) for i in range(4)] == [(0, item.blob) for item in frames]


def test_raw_frame_in_a_compressed_series_is_stored_with_the_filter_skipped(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    writer.start_series(start(1, config(nimages=3)))
    images = [pixels(i) for i in range(3)]
    for i, encoding in enumerate([Encoding.BSLZ4, Encoding.RAW, Encoding.BSLZ4]):
        writer.process(frame(i, images[i], encoding))
    writer.finish(EndOfSeries(1))
    with h5py.File(tmp_path / "run" / "series_1_data_000001.h5") as handle:
        assert handle["/entry/data/data"].id.read_direct_chunk((1, 0, 0)) == (1, images[1].tobytes())
    np.testing.assert_array_equal(read_stack(writer.master_path), np.stack(images))


def test_frames_are_split_into_files_of_frames_per_file_with_image_numbers(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    write_series(writer, list(range(25)))
    assert data_files(tmp_path) == [f"series_1_data_00000{k}.h5" for k in (1, 2, 3)]
    ranges = []
    for name in data_files(tmp_path):
        with h5py.File(tmp_path / "run" / name) as handle:
            dataset = handle["/entry/data/data"]
            ranges.append((dataset.shape[0], int(dataset.attrs["image_nr_low"]), int(dataset.attrs["image_nr_high"])))
            assert dataset.maxshape == dataset.shape and dataset.chunks == (1, *SMALL)
    assert ranges == [(10, 1, 10), (10, 11, 20), (5, 21, 25)]
    with h5py.File(writer.master_path) as handle:
        links = [handle["/entry/data"].get(f"data_00000{k}", getlink=True) for k in (1, 2, 3)]
        assert [(link.filename, link.path) for link in links] == [
            (name, "/entry/data/data") for name in data_files(tmp_path)]
        assert handle["/entry/data/data_000003"].shape == (5, *SMALL)


def test_stop_after_13_of_25_frames_keeps_exactly_frames_0_to_12(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    images = write_series(writer, list(range(13)), reason=EndReason.STOP)
    assert data_files(tmp_path) == ["series_1_data_000001.h5", "series_1_data_000002.h5"]
    second = read_stack(tmp_path / "run" / "series_1_data_000002.h5")
    np.testing.assert_array_equal(second, np.stack([images[i] for i in range(10, 13)]))
    with h5py.File(tmp_path / "run" / "series_1_data_000002.h5") as handle:
        assert int(handle["/entry/data/data"].attrs["image_nr_high"]) == 13
    np.testing.assert_array_equal(read_stack(writer.master_path), np.stack([images[i] for i in range(13)]))
    assert writer.stats.frames_written == 13 and writer.stats.files_closed == 2


def test_lost_frames_read_as_masked_and_are_not_counted(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    kept = [i for i in range(23) if i not in (5, 9, 10, 11)]  # 9: last row of file 1; 10, 11: head of file 2
    images = write_series(writer, kept)
    vds = read_stack(writer.master_path)
    assert vds.shape == (23, *SMALL)
    for i in range(23):
        np.testing.assert_array_equal(vds[i], images[i] if i in images else np.full(SMALL, MASKED_16))
    with h5py.File(tmp_path / "run" / "series_1_data_000001.h5") as handle:
        dataset = handle["/entry/data/data"]
        assert dataset.shape[0] == 10 and dataset.id.get_num_chunks() == 8  # no padding chunk on disk
    assert writer.stats.frames_written == len(kept) and writer.stats.last_image_saved == 22


def test_abort_mid_file_leaves_every_file_valid_and_trimmed(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    writer.start_series(start(1, config()))
    images = [pixels(i) for i in range(14)]
    for i, image in enumerate(images):
        writer.process(frame(i, image))
    writer.abort("disk on fire")
    np.testing.assert_array_equal(read_stack(tmp_path / "run" / "series_1_data_000002.h5"), np.stack(images[10:]))
    np.testing.assert_array_equal(read_stack(writer.master_path), np.stack(images))
    assert writer.stats.current_file == ""


def test_a_failing_writer_is_aborted_by_the_runner_and_its_files_stay_valid(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    inbox: FrameQueue = FrameQueue(64, FullPolicy.BLOCK)
    failed = threading.Event()
    runner = StageRunner("writer", writer, inbox, on_failure=lambda reason: failed.set())
    runner.start()
    images = [pixels(i) for i in range(12)]
    inbox.put(start(1, config()))
    for i, image in enumerate(images):
        inbox.put(frame(i, image))
    inbox.put(dataclasses.replace(frame(12, pixels(12)), blob=12345))  # not a buffer: an unexpected TypeError
    inbox.put(EndOfSeries(1))
    assert runner.series_done.wait(5.0) and failed.is_set()
    runner.close()
    assert "frame 12" in (runner.failure or "")
    np.testing.assert_array_equal(read_stack(writer.master_path), np.stack(images))


def test_a_viewer_holding_the_master_open_does_not_stop_the_series(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    writer.start_series(start(1, config()))
    images = [pixels(i) for i in range(25)]
    with h5py.File(writer.master_path, "r"):  # HDF5 refuses the writer's r+ open while this is held
        for i in range(20):
            writer.process(frame(i, images[i]))
    for i in range(20, 25):
        writer.process(frame(i, images[i]))
    writer.finish(EndOfSeries(1))
    with h5py.File(writer.master_path) as handle:
        assert sorted(handle["/entry/data"]) == ["data", "data_000001", "data_000002", "data_000003"]
    np.testing.assert_array_equal(read_stack(writer.master_path), np.stack(images))


def test_bit_depth_comes_from_each_series_frames_not_an_earlier_config(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    first = write_series(writer, list(range(3)), series_id=1, dtype="uint16")
    writer.start_series(start(2, config(dtype="uint16", nimages=3)))  # a stale header: frames say 32 bits
    second = {i: pixels(i, dtype="uint32", seed=2) * 70_000 for i in range(2)}
    for i, image in second.items():
        writer.process(frame(i, image, series_id=2))
    writer.finish(EndOfSeries(2))
    np.testing.assert_array_equal(read_stack(tmp_path / "run" / "series_1_master.h5"), np.stack(list(first.values())))
    with h5py.File(tmp_path / "run" / "series_2_master.h5") as handle:
        assert handle["/entry/data/data"].dtype == np.uint32
        assert handle["/entry/instrument/detector/bit_depth_image"][()] == 32
        np.testing.assert_array_equal(handle["/entry/data/data"][()], np.stack(list(second.values())))
    with h5py.File(tmp_path / "run" / "series_2_data_000001.h5") as handle:
        assert handle["/entry/data/data"].fillvalue == 2**32 - 1


@pytest.mark.parametrize(
    ("bad", "reason"),
    [(frame(3, pixels(3, (32, 96))), "shape_mismatch"), (frame(3, pixels(3, dtype="uint32")), "shape_mismatch"),
     (frame(25, pixels(25)), "index_beyond_series"), (frame(1, pixels(1)), "duplicate_frame"),
     (frame(3, pixels(3), Encoding.LZ4), "encoding_mismatch"), (frame(3, pixels(3), series_id=9), "series_mismatch")],
)
def test_bad_frames_are_rejected_with_a_reason_and_the_series_goes_on(tmp_path: Path, bad: Frame, reason: str) -> None:
    writer = make_writer(tmp_path)
    writer.start_series(start(1, config()))
    for i in range(3):
        writer.process(frame(i, pixels(i, seed=1)))
    with pytest.raises(FrameRejected) as caught:
        writer.process(bad)
    assert caught.value.reason == reason
    writer.process(frame(3, pixels(3, seed=1)))
    writer.finish(EndOfSeries(1))
    np.testing.assert_array_equal(read_stack(writer.master_path), np.stack([pixels(i, seed=1) for i in range(4)]))


def test_a_frame_for_a_file_already_closed_is_rejected_as_late(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    writer.start_series(start(1, config()))
    for i in (0, 1, 10):
        writer.process(frame(i, pixels(i)))
    with pytest.raises(FrameRejected, match="late_frame"):
        writer.process(frame(2, pixels(2)))
    writer.finish(EndOfSeries(1))


def test_master_is_valid_nxmx_and_its_data_reads_back(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    mask = np.zeros(SMALL, np.uint32)
    mask[0, :] = 1
    writer.start_series(start(1, config(), pixel_mask=mask))
    images = [pixels(i) for i in range(25)]
    for i, image in enumerate(images):
        writer.process(frame(i, image))
    writer.finish(EndOfSeries(1))
    with h5py.File(writer.master_path) as handle:
        entry = nxmx.NXmx(handle).entries[0]
        detector = entry.instruments[0].detectors[0]
        assert entry.definition == "NXmx" and entry.end_time is not None
        assert list(detector.modules[0].data_size) == list(SMALL)
        assert detector.sensor_material == "Si" and detector.bit_depth_image == 16
        assert detector.modules[0].fast_pixel_direction.vector.tolist() == [-1, 0, 0]
        assert entry.instruments[0].beams[0].incident_wavelength.to("angstrom").magnitude == pytest.approx(1.0)
        assert entry.samples[0].depends_on.path == "/entry/sample/transformations/omega"
        np.testing.assert_array_equal(detector.pixel_mask[()], mask)
        np.testing.assert_array_equal(entry.data[0]["data"][()], np.stack(images))
        assert "eiger_fw_version" not in handle["/entry/instrument/detector/detectorSpecific"]
        assert handle.attrs["default"] == "entry" and handle["/entry"].attrs["default"] == "data"
        assert handle["/entry/data"].attrs["signal"] == "data" and handle.attrs["creator"] == "detpipe"


def test_without_a_config_unknown_values_are_omitted_and_files_hold_fpf_frames(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    images = write_series(writer, list(range(12)), nimages=None)
    with h5py.File(writer.master_path) as handle:
        detector = handle["/entry/instrument/detector"]
        assert "count_time" not in detector and "incident_wavelength" not in handle["/entry/instrument/beam"]
        assert detector["bit_depth_image"][()] == 16 and list(detector["module/data_size"][()]) == list(SMALL)
        assert "end_time_estimated" in handle["/entry"]
        np.testing.assert_array_equal(handle["/entry/data/data"][()], np.stack(list(images.values())))
    assert [read_stack(tmp_path / "run" / n).shape[0] for n in data_files(tmp_path)] == [10, 2]


def test_vds_reads_from_another_directory_and_after_the_directory_moves(tmp_path: Path, monkeypatch) -> None:
    writer = make_writer(tmp_path)
    images = np.stack(list(write_series(writer, list(range(25))).values()))
    with h5py.File(writer.master_path) as handle:  # HDF5 would also find moved files from absolute names
        assert sorted(m.file_name for m in handle["/entry/data/data"].virtual_sources()) == data_files(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    np.testing.assert_array_equal(read_stack(writer.master_path), images)
    moved = shutil.move(tmp_path / "run", tmp_path / "moved")
    np.testing.assert_array_equal(read_stack(Path(moved) / "series_1_master.h5"), images)
    with h5py.File(Path(moved) / "series_1_master.h5") as handle:
        np.testing.assert_array_equal(handle["/entry/data/data_000002"][()], images[10:20])


def test_stats_count_exact_bytes_and_compression_ratio(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    writer.start_series(start(1, config()))
    assert writer.stats.last_image_saved == -1 and writer.stats.compression_ratio == 0
    frames = [frame(i, pixels(i)) for i in range(12)]
    for item in frames:
        writer.process(item)
    assert writer.stats.current_file.endswith("series_1_data_000002.h5")
    assert writer.stats.rates()[0] > 0
    writer.finish(EndOfSeries(1))
    stats, encoded = writer.stats, sum(len(item.blob) for item in frames)
    assert (stats.frames_written, stats.frames_expected, stats.files_closed) == (12, 25, 2)
    assert (stats.bytes_written, stats.bytes_uncompressed) == (encoded, 12 * SMALL[0] * SMALL[1] * 2)
    assert stats.compression_ratio == pytest.approx(12 * SMALL[0] * SMALL[1] * 2 / encoded)
    assert stats.last_image_saved == 11 and stats.current_file == ""
    writer.prepare(2)
    assert stats.frames_written == 0 and stats.last_image_saved == -1


def test_abort_policy_never_overwrites_and_overwrite_policy_replaces(tmp_path: Path) -> None:
    write_series(make_writer(tmp_path), list(range(12)))
    before = read_stack(tmp_path / "run" / "series_1_data_000002.h5")
    with pytest.raises(TargetFileExists, match="series_1_master.h5 already exists"):
        make_writer(tmp_path).prepare(1)
    np.testing.assert_array_equal(read_stack(tmp_path / "run" / "series_1_data_000002.h5"), before)
    writer = make_writer(tmp_path, overwrite_policy=OverwritePolicy.OVERWRITE)
    images = write_series(writer, list(range(4)), nimages=4)
    assert data_files(tmp_path) == ["series_1_data_000001.h5"]
    np.testing.assert_array_equal(read_stack(writer.master_path), np.stack(list(images.values())))


def test_a_4m_series_round_trips(tmp_path: Path) -> None:
    writer = make_writer(tmp_path)
    images = write_series(writer, list(range(3)), nimages=3, shape=(2162, 2068))
    np.testing.assert_array_equal(read_stack(writer.master_path), np.stack(list(images.values())))


def test_prepare_refuses_a_directory_outside_the_data_roots(tmp_path: Path) -> None:
    writer = NxmxWriter(SavingParams(directory=tmp_path / "run", data_roots=(tmp_path / "data",)))
    with pytest.raises(ValueError, match="not below any DataRoots"):
        writer.prepare(1)
    assert not (tmp_path / "run").exists() and os.listdir(tmp_path) == []


def test_per_frame_metadata_grows_with_frames_written_not_frames_announced(tmp_path: Path) -> None:
    """A series announcing 10**8 frames used to cost ~760 MB at its start (one omega angle per announced frame)."""
    writer = make_writer(tmp_path)
    tracemalloc.start()
    try:
        images = write_series(writer, [0, 1, 2], nimages=10**8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50e6
    with h5py.File(writer.master_path) as handle:
        omega = handle["/entry/sample/transformations/omega"]
        np.testing.assert_allclose(omega[()], [10.0, 10.1, 10.2])
        assert omega.attrs["units"] == "degree" and handle["/entry/data/data"].shape[0] == len(images)

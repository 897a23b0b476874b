"""One master over the files two receivers wrote in their own folders (blocks of frames alternating between them):
every frame reads back in index order through the VDS, with its triage row, whichever receiver wrote it; frames a
receiver lost read as the fill value with ``written`` 0, and a data file its receiver never closed is left out.
The receivers' files are written by the real NxmxWriter, ground truth is the pixels and peaks given to it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers filter 32008 for reading back
import numpy as np
import nxmx

from detpipe.pipeline.core.peak_list import FrameTriage, PeakList
from detpipe.pipeline.core.saving_target import SavingParams
from detpipe.pipeline.core.series import EndOfSeries, EndReason
from detpipe.pipeline.core.triage_params import TriageParams
from detpipe.pipeline.nexus.series_stitching import WRITTEN_PATH, ReceiverShare, stitch_series
from detpipe.pipeline.writers.nxmx_writer import NxmxWriter
from tests.pipeline.frames_for_writer_tests import config, frame, pixels, start
from tests.pipeline.nexus.test_nexus_validation import validation_errors

FRAMES, BLOCK = 10, 2
PARAMS = TriageParams(max_num_peaks=4, min_peaks=2)


def triage_of(index: int) -> FrameTriage:
    """Frame ``index`` has index % 4 peaks at (index + k, 2k): its row names its frame."""
    n = index % 4
    fs, ss = (index + np.arange(n)).astype(np.float32), (2 * np.arange(n)).astype(np.float32)
    peaks = PeakList(fs, ss, fs * 10, fs / 4, np.full(n, 3, np.float32), fs + 0.5)
    return FrameTriage(n, peaks, lit_pixels=10 * index, is_hit=n >= 2)


def receiver_share(root: Path, name: str, blocks: list[int], *, ends: bool = True) -> ReceiverShare:
    """A receiver that wrote ``blocks`` (each BLOCK frames) of series 1; one that ``ends`` not died after them."""
    params = SavingParams(directory=root / name, data_roots=(root,), prefix="scan_$id", frames_per_file=BLOCK,
                          free_space_margin_bytes=0)
    writer = NxmxWriter(params)
    master = writer.prepare(1)
    writer.start_series(start(1, config(nimages=FRAMES), triage=PARAMS))
    for block in blocks:
        for index in range(block * BLOCK, (block + 1) * BLOCK):
            writer.process(replace(frame(index, pixels(index)), triage=triage_of(index)))
    if ends:
        writer.finish(EndOfSeries(1, EndReason.END_MESSAGE))
    return ReceiverShare(name, master)


def test_the_stitched_master_reads_every_frame_with_its_triage_whichever_receiver_wrote_it(tmp_path: Path) -> None:
    shares = [receiver_share(tmp_path, "r1", [0, 2, 4]), receiver_share(tmp_path, "r2", [1, 3])]
    master = tmp_path / "scan_1_master.h5"
    stitched = stitch_series(master, start(1, config(nimages=FRAMES)), shares, FRAMES, instrument_name="test",
                             source_name="test source", end_s=1.7e9 + 1)
    assert stitched.frames_written == FRAMES and stitched.written_by == {"r1": 6, "r2": 4}
    assert not stitched.left_out
    with h5py.File(master) as handle:
        stack = handle["/entry/data/data"]
        for index in range(FRAMES):
            np.testing.assert_array_equal(stack[index], pixels(index))
        assert sorted(source.file_name for source in stack.virtual_sources()) == [
            "r1/scan_1_data_000001.h5", "r1/scan_1_data_000003.h5", "r1/scan_1_data_000005.h5",
            "r2/scan_1_data_000002.h5", "r2/scan_1_data_000004.h5"]  # relative: the tree can move
        assert handle[WRITTEN_PATH][()].tolist() == [1] * FRAMES
        results = handle["/entry/process_01/results"]
        assert results["n_peaks"][()].tolist() == [i % 4 for i in range(FRAMES)]
        assert results["lit_pixels"][()].tolist() == [10 * i for i in range(FRAMES)]
        n_peaks, peak_x = handle["/entry_1/result_1/nPeaks"][()], handle["/entry_1/result_1/peakXPosRaw"][()]
        for index in range(FRAMES):
            assert n_peaks[index] == index % 4
            np.testing.assert_array_equal(peak_x[index, : index % 4], index + np.arange(index % 4))
    with h5py.File(master) as handle:  # DIALS' reader: the metadata and the whole stack
        entry = nxmx.NXmx(handle).entries[0]
        assert entry.definition == "NXmx" and entry.end_time is not None
        assert entry.samples[0].depends_on.path == "/entry/sample/transformations/omega"
        np.testing.assert_array_equal(entry.data[0]["data"][()], np.stack([pixels(i) for i in range(FRAMES)]))
    assert validation_errors(master, "NXmx") == []


def test_a_receiver_that_died_leaves_fill_and_written_zero_for_its_lost_frames(tmp_path: Path) -> None:
    alive = receiver_share(tmp_path, "r1", [0, 2, 4])
    died = receiver_share(tmp_path, "r2", [1], ends=False)  # wrote block 1, died before block 3 was closed
    unclosed = died.files.data_file(4)
    unclosed.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))  # what a killed writer leaves: not a valid file
    master = tmp_path / "scan_1_master.h5"
    stitched = stitch_series(master, start(1, config(nimages=FRAMES)), [alive, died], FRAMES,
                             instrument_name="test", source_name="test source", end_s=1.7e9 + 1)
    lost = [6, 7]
    assert stitched.frames_written == FRAMES - len(lost) and stitched.written_by == {"r1": 6, "r2": 2}
    assert stitched.left_out == {str(unclosed): "r2 never closed it (it stopped while writing it)"}
    with h5py.File(master) as handle:
        stack = handle["/entry/data/data"]
        assert handle[WRITTEN_PATH][()].tolist() == [0 if i in lost else 1 for i in range(FRAMES)]
        for index in range(FRAMES):
            expected = np.full(pixels(0).shape, 65535, np.uint16) if index in lost else pixels(index)
            np.testing.assert_array_equal(stack[index], expected)
        assert handle["/entry/process_01/results/n_peaks"][()].tolist() == [
            -1 if i in lost else i % 4 for i in range(FRAMES)]

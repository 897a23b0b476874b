"""The writer stage as the writer device runs it: every chunk verified on the frame-check thread, then written."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.core.peak_list import FrameTriage, PeakList
from detpipe.pipeline.core.saving_target import SavingParams
from detpipe.pipeline.core.series import EndOfSeries, SeriesStart
from detpipe.pipeline.core.stage_stats import StageStats
from detpipe.pipeline.writers import checked_writer
from detpipe.pipeline.writers.checked_writer import CheckedWriter
from detpipe.pipeline.writers.nxmx_writer import NxmxWriter
from tests.pipeline.agipd_trains import make_train
from tests.pipeline.frames_for_writer_tests import config, frame, pixels, read_stack
from tests.pipeline.stream_messages import corrupt_first_match
from tests.waiting import wait_until

FRAMES = 10


def started_chain(root: Path) -> tuple[CheckedWriter, NxmxWriter, FrameQueue]:
    writer = NxmxWriter(SavingParams(directory=root, data_roots=(root,)))
    inbox: FrameQueue = FrameQueue(64, FullPolicy.DROP)
    chain = CheckedWriter(writer, inbox)
    chain.start()
    writer.prepare(1)
    return chain, writer, inbox


def corrupted(good):
    return replace(good, blob=corrupt_first_match(bytes(good.blob)))


def test_a_chunk_that_does_not_decode_is_rejected_before_it_is_written_and_the_rest_are_stored(
        tmp_path: Path) -> None:
    """Issue 14 case 5 behind the header-only receiver: frames 3 and 7 carry a flipped LZ4 match offset. They are
    counted as ``corrupt_payload``, never written; the other 8 read back pixel-equal through the HDF5 filter."""
    chain, writer, inbox = started_chain(tmp_path)
    images = [pixels(i) for i in range(FRAMES)]
    try:
        inbox.put(SeriesStart(series_id=1, config=config(nimages=FRAMES)))
        for i, image in enumerate(images):
            inbox.put(corrupted(frame(i, image)) if i in (3, 7) else frame(i, image))
        inbox.put(EndOfSeries(1))
        assert chain.series_done.wait(10)
    finally:
        chain.close()
    assert chain.rejected == {"corrupt_payload": 2} and chain.failure is None
    assert writer.stats.frames_written == FRAMES - 2
    stack = read_stack(writer.master_path)
    for i in set(range(FRAMES)) - {3, 7}:
        np.testing.assert_array_equal(stack[i], images[i], err_msg=f"frame {i}")


def test_a_frame_a_triage_worker_decoded_is_not_parsed_a_second_time(tmp_path: Path, monkeypatch) -> None:
    checked: list[int] = []
    real = checked_writer.verify_payload
    monkeypatch.setattr(checked_writer, "verify_payload", lambda *a: (checked.append(1), real(*a)))
    chain, writer, inbox = started_chain(tmp_path)
    triage = FrameTriage(n_peaks=0, peaks=PeakList.empty(), lit_pixels=0, is_hit=False)
    try:
        inbox.put(SeriesStart(series_id=1, config=config(nimages=2)))
        inbox.put(replace(frame(0, pixels(0)), triage=triage))
        inbox.put(frame(1, pixels(1)))
        inbox.put(EndOfSeries(1))
        assert chain.series_done.wait(10)
    finally:
        chain.close()
    assert len(checked) == 1 and writer.stats.frames_written == 2


def test_a_check_that_fails_unexpectedly_rejects_that_frame_only(tmp_path: Path, monkeypatch) -> None:
    real = checked_writer.verify_payload

    def failing_on_frame_1(encoding, blob, nbytes, itemsize):
        if bytes(blob) == bytes(frame(1, pixels(1)).blob):
            raise MemoryError("a check bug")
        real(encoding, blob, nbytes, itemsize)

    monkeypatch.setattr(checked_writer, "verify_payload", failing_on_frame_1)
    chain, writer, inbox = started_chain(tmp_path)
    try:
        inbox.put(SeriesStart(series_id=1, config=config(nimages=3)))
        for i in range(3):
            inbox.put(frame(i, pixels(i)))
        inbox.put(EndOfSeries(1))
        assert chain.series_done.wait(10)
    finally:
        chain.close()
    assert chain.rejected == {"undecodable": 1} and chain.failure is None
    assert writer.stats.frames_written == 2


def test_a_series_ended_early_reaches_the_writer_once_after_the_frames_queued(tmp_path: Path) -> None:
    """``end_series_now`` (Init or Reset of the writer while its source is gone) ends the series at the head of
    the chain: the writer closes it after the frames already queued, once, and the next series is written."""
    chain, writer, inbox = started_chain(tmp_path)
    try:
        inbox.put(SeriesStart(series_id=1, config=config(nimages=FRAMES)))
        for i in range(4):
            inbox.put(frame(i, pixels(i)))
        wait_until(lambda: chain.in_series, lambda v: v, 10, "in_series")
        assert chain.end_series_now("writer Init")
        assert chain.series_done.wait(10) and not chain.in_series
        assert writer.stats.frames_written == 4 and chain.last_end is not None and chain.last_end.series_id == 1
        writer.prepare(2)
        chain.reset_counters()
        inbox.put(SeriesStart(series_id=2, config=config(nimages=1)))
        inbox.put(frame(0, pixels(0), series_id=2))
        inbox.put(EndOfSeries(2))
        wait_until(lambda: chain.last_end.series_id, lambda v: v == 2, 10, "last_end")
    finally:
        chain.close()
    assert chain.failure is None and writer.stats.frames_written == 1


@pytest.mark.parametrize("where", ["check", "writer"])
def test_either_thread_failing_is_the_chains_failure(tmp_path: Path, monkeypatch, where: str) -> None:
    chain, writer, inbox = started_chain(tmp_path)
    broken = chain.check if where == "check" else writer

    def fail(item):
        raise RuntimeError(f"{where} bug")

    monkeypatch.setattr(broken, "process", fail)
    try:
        inbox.put(SeriesStart(series_id=1, config=config(nimages=1)))
        inbox.put(frame(0, pixels(0)))
        inbox.put(EndOfSeries(1))
        assert chain.series_done.wait(10)
    finally:
        chain.close()
    assert chain.failure is not None and f"{where} bug" in chain.failure
    assert chain.rejected == {"stage_failed": 1}
    chain.reset()
    assert chain.failure is None


def test_agipd_trains_wait_in_the_inbox_not_between_the_check_and_a_slow_writer(tmp_path: Path) -> None:
    """A train has nothing to check and weighs ~270 MB: at most ``TRAINS_AHEAD`` wait for the writer past the
    check, so the inbox's BufferFrames stays the bound on what a slow writer holds in memory."""
    writer = SlowSink()
    inbox: FrameQueue = FrameQueue(64, FullPolicy.DROP)
    chain = CheckedWriter(writer, inbox)
    chain.start()
    try:
        inbox.put(SeriesStart(series_id=1))
        for i in range(6):
            inbox.put(make_train(i))
        wait_until(lambda: writer.seen, lambda n: n >= 1, 10, "first train at the writer")
        time.sleep(0.3)  # time for the check to forward everything it may
        assert inbox.size >= 6 - 1 - checked_writer.TRAINS_AHEAD - 1  # in the writer, past the check, being checked
        writer.release.set()
        inbox.put(EndOfSeries(1))
        assert chain.series_done.wait(10)
    finally:
        writer.release.set()
        chain.close()
    assert writer.seen == 6


class SlowSink:
    """A writer that holds its first train until released."""

    def __init__(self) -> None:
        self.stats = StageStats()
        self.seen = 0
        self.release = threading.Event()

    def start_series(self, start) -> None:
        """Nothing to open."""

    def process(self, item) -> None:
        self.seen += 1
        self.release.wait(10)

    def finish(self, end) -> None:
        """Nothing to close."""

    def abort(self, reason: str) -> None:
        """Nothing to close."""

"""The generic stage loop: timing, counted rejections, failures that leave files valid, sentinels in order."""

from __future__ import annotations

import numpy as np

from detpipe.pipeline.core.errors import FrameRejected
from detpipe.pipeline.core.frame import Encoding, Frame
from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.core.series import EndOfSeries, SeriesStart
from detpipe.pipeline.core.stage_runner import StageRunner
from detpipe.pipeline.core.stage_stats import StageStats


def frame(index: int) -> Frame:
    return Frame(series_id=1, index=index, shape=(2, 2), dtype=np.dtype("u2"), encoding=Encoding.RAW,
                 blob=bytes(8), received_s=0.0)


class RecordingStage:
    """Rejects odd frames, fails on frame 4, records every call."""

    def __init__(self) -> None:
        self.stats = StageStats()
        self.calls: list[str] = []

    def start_series(self, start: SeriesStart) -> None:
        self.calls.append("start")

    def process(self, f: Frame) -> Frame:
        if f.index == 4:
            raise OSError("disk full")
        if f.index % 2:
            raise FrameRejected("odd_frame", f"frame {f.index}")
        self.stats.processed += 1
        self.calls.append(f"frame {f.index}")
        return f

    def finish(self, end: EndOfSeries) -> None:
        self.calls.append("finish")

    def abort(self, reason: str) -> None:
        self.calls.append(f"abort: {reason}")


def run(items: list, stage: RecordingStage) -> tuple[StageRunner, list]:
    inbox: FrameQueue = FrameQueue(32, FullPolicy.BLOCK)
    outbox: FrameQueue = FrameQueue(32, FullPolicy.BLOCK)
    failures: list[str] = []
    runner = StageRunner("test", stage, inbox, outbox, on_failure=failures.append)
    runner.start()
    for item in items:
        inbox.put(item)
    assert runner.series_done.wait(5)
    runner.close()
    forwarded = [outbox.get(timeout_s=1) for _ in range(outbox.size)]
    return runner, forwarded


def test_rejected_frames_are_counted_by_reason_and_the_rest_forwarded_in_order() -> None:
    stage = RecordingStage()
    runner, forwarded = run([SeriesStart(1), frame(0), frame(1), frame(2), frame(3), EndOfSeries(1)], stage)
    assert stage.calls == ["start", "frame 0", "frame 2", "finish"]
    assert stage.stats.rejected == {"odd_frame": 2}
    assert [getattr(i, "index", type(i).__name__) for i in forwarded] == ["SeriesStart", 0, 2, "EndOfSeries"]
    assert stage.stats.time_max_ms >= stage.stats.time_mean_ms > 0
    assert runner.failure is None and not runner.in_series


def test_a_stage_failure_aborts_the_stage_and_counts_the_rest_of_the_series() -> None:
    stage = RecordingStage()
    runner, forwarded = run([SeriesStart(1), frame(0), frame(4), frame(6), EndOfSeries(1)], stage)
    assert stage.calls[:2] == ["start", "frame 0"]
    assert stage.calls[2].startswith("abort: test failed on frame 4 of series 1: OSError: disk full")
    assert "finish" not in stage.calls
    assert stage.stats.rejected == {"stage_failed": 2}
    assert "disk full" in (runner.failure or "")
    assert isinstance(forwarded[-1], EndOfSeries)  # downstream still sees the end


def test_reset_clears_a_failure_so_the_next_series_is_processed() -> None:
    stage = RecordingStage()
    runner, _ = run([SeriesStart(1), frame(4), EndOfSeries(1)], stage)
    runner.reset()
    assert runner.failure is None

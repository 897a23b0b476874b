"""Queues state their full policy: ingress drops and counts frames, never series markers."""

from __future__ import annotations

import queue

import numpy as np
import pytest

from detpipe.pipeline.core.frame import Encoding, Frame
from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.core.series import EndOfSeries


def frame(index: int) -> Frame:
    return Frame(series_id=1, index=index, shape=(1, 1), dtype=np.dtype("u2"), encoding=Encoding.RAW,
                 blob=bytes(2), received_s=0.0)


def test_drop_policy_counts_frames_that_find_the_queue_full() -> None:
    q: FrameQueue = FrameQueue(2, FullPolicy.DROP)
    assert [q.put(frame(i)) for i in range(4)] == [True, True, False, False]
    assert q.frames_dropped == 2 and q.fill_percent == 100.0 and q.free == 0


def test_series_markers_are_never_dropped_they_wait_for_room() -> None:
    q: FrameQueue = FrameQueue(1, FullPolicy.DROP)
    q.put(frame(0))
    with pytest.raises(queue.Full):  # it blocked for the timeout instead of dropping
        q.put(EndOfSeries(1), timeout_s=0.05)
    assert q.frames_dropped == 0


def test_capacity_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        FrameQueue(0, FullPolicy.BLOCK)

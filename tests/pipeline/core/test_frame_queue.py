"""Queues state their full policy: ingress drops and counts frames, never series markers."""

from __future__ import annotations

import queue
import threading

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


@pytest.mark.parametrize(("policy", "item", "wait_for_room"), [
    (FullPolicy.BLOCK, "frame", False), (FullPolicy.DROP, "frame", True), (FullPolicy.DROP, "end", False)],
    ids=["block_policy", "wait_for_room", "series_marker"])
def test_a_put_waiting_for_room_goes_on_when_a_get_frees_some(policy: FullPolicy, item: str,
                                                               wait_for_room: bool) -> None:
    """The consumer's get wakes the waiting producer (it does not sleep out its timeout), and the queue
    never holds more than its capacity."""
    q: FrameQueue = FrameQueue(2, policy)
    q.put(frame(0))
    q.put(frame(1))
    waiting = EndOfSeries(1) if item == "end" else frame(2)
    producer = threading.Thread(target=q.put, args=(waiting,),
                                kwargs={"timeout_s": 60, "wait_for_room": wait_for_room})
    producer.start()
    producer.join(0.2)
    assert producer.is_alive() and q.size == 2
    assert q.get().index == 0
    producer.join(30)
    assert not producer.is_alive()
    assert [q.get(timeout_s=1), q.size] == [frame(1), 1]
    assert q.get(timeout_s=1) == waiting and q.frames_dropped == 0


def test_many_producers_waiting_for_room_all_get_in_as_the_consumer_drains() -> None:
    q: FrameQueue = FrameQueue(1, FullPolicy.BLOCK)
    producers = [threading.Thread(target=q.put, args=(frame(i),), kwargs={"timeout_s": 60}) for i in range(50)]
    for producer in producers:
        producer.start()
    received = [q.get(timeout_s=30).index for _ in range(50)]
    for producer in producers:
        producer.join(30)
    assert sorted(received) == list(range(50)) and q.size == 0

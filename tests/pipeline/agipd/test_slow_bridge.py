"""A REQ client against a bridge slower than its trains (issue 15): detpipe's AGIPD simulator answers each
request ``reply_delay_s`` after it came. A request is never given up for time alone, so nothing is lost; a
request the bridge never answers ends the run as timed out and its train is counted, the first one too."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import zmq

from detpipe.pipeline.agipd.acquisition import AgipdAcquisition
from detpipe.pipeline.agipd.receiver import AgipdReceiver
from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.core.series import EndOfSeries, EndReason, SeriesStart
from detpipe.pipeline.core.train import Train
from detpipe.simulators.agipd_simulator import AgipdSimulator

CELLS = 2
STREAM_TIMEOUT_S = 0.3  # the slow bridge below answers well after this: it must not count as silence


@contextmanager
def acquisition(endpoint: str, *, request_timeout_s: float) -> Iterator[AgipdAcquisition]:
    receiver = AgipdReceiver(endpoint, socket_type="REQ", request_timeout_s=request_timeout_s)
    receiver.start()
    try:
        yield AgipdAcquisition(receiver, stream_timeout_s=STREAM_TIMEOUT_S)
    finally:
        receiver.close()


def drained(outbox: FrameQueue) -> list[Any]:
    items = []
    while outbox.size:
        items.append(outbox.get(timeout_s=1.0))
    return items


def test_a_bridge_slower_than_the_stream_timeout_loses_no_train() -> None:
    """Each reply comes 0.5 s after its request, the first one too (the old receiver gave a request up
    after a fixed time and lost the train the bridge had already taken off its queue)."""
    with AgipdSimulator(cells=CELLS, paced=False, seed=7, reply_delay_s=0.5) as sim:
        outbox: FrameQueue = FrameQueue(16, FullPolicy.BLOCK)
        with acquisition(sim.endpoint, request_timeout_s=10.0) as acq:
            acq.prepare(1, 3, lambda run: outbox)
            end = acq.acquire()
            stats = acq.receiver.stats
        items = drained(outbox)
        sent = [sim.train(index) for index in range(3)]
    assert end.reason is EndReason.END_MESSAGE
    assert isinstance(items[0], SeriesStart) and isinstance(items[-1], EndOfSeries)
    trains = [item for item in items if isinstance(item, Train)]
    assert [t.train_id for t in trains] == [truth.train_id for truth in sent]
    for train, truth in zip(trains, sent, strict=True):
        np.testing.assert_array_equal(train.data, truth.data)
    assert (stats.trains_received, stats.trains_missing, stats.requests_unanswered) == (3, 0, 0)


def test_a_request_never_answered_ends_the_run_and_counts_the_first_train_lost() -> None:
    """A bridge that takes a request and never answers: after RequestTimeout the run ends as timed out,
    naming the unanswered request, and the train it took is counted even though it was the run's first."""
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    try:
        outbox: FrameQueue = FrameQueue(4, FullPolicy.BLOCK)
        with acquisition(f"tcp://127.0.0.1:{port}", request_timeout_s=0.6) as acq:
            acq.prepare(2, 3, lambda run: outbox)
            with pytest.raises(TimeoutError, match="left a request for a train unanswered for"):
                acq.acquire()
            assert router.poll(0)
            requests = [router.recv_multipart()]
            while router.poll(0):
                requests.append(router.recv_multipart())
            stats = acq.receiver.stats
        items = drained(outbox)
    finally:
        router.close(linger=0)
    assert len(requests) == 1 and requests[0][-1] == b"next"  # asked once, never again on a new socket
    assert stats.requests_unanswered == 1 and stats.trains_received == 0
    assert isinstance(items[-1], EndOfSeries) and items[-1].reason is EndReason.TIMEOUT


def test_the_train_asked_for_before_stop_is_awaited_from_a_slow_bridge() -> None:
    """Stop after the first train: the bridge, 0.8 s per reply (longer than an aborted run waits), still
    delivers the train requested ahead, and the run keeps it."""
    with AgipdSimulator(cells=CELLS, paced=False, seed=8, reply_delay_s=0.8) as sim:
        outbox: FrameQueue = FrameQueue(16, FullPolicy.BLOCK)
        with acquisition(sim.endpoint, request_timeout_s=10.0) as acq:
            acq.prepare(3, 10, lambda run: outbox)

            def stop_after_first_train() -> None:
                while acq.receiver.stats.trains_received < 1:
                    time.sleep(0.02)
                acq.stop()

            stopper = threading.Thread(target=stop_after_first_train)
            stopper.start()
            end = acq.acquire()
            stopper.join()
            stats = acq.receiver.stats
        items = drained(outbox)
        first = sim.train(0).train_id
    trains = [item.train_id for item in items if isinstance(item, Train)]
    assert end.reason is EndReason.STOP
    assert trains == [first, first + 1] and stats.requests_unanswered == 0

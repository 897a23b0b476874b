"""Bounded queue between stages; each instance states what happens when it is full."""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from typing import Generic, TypeVar

from .series import EndOfSeries, EndReason, SeriesStart

T = TypeVar("T")

log = logging.getLogger(__name__)


class FullPolicy(enum.Enum):
    BLOCK = "block"  # backpressure between engine stages (odin-data's WorkQueue)
    DROP = "drop"  # at ingress: the socket reader must never stall, so drop and count


class FrameQueue(Generic[T]):
    """A bounded FIFO of frames and series markers.

    With ``FullPolicy.DROP`` a data item (an Eiger frame or an AGIPD train) that finds the queue full is
    dropped and counted in ``frames_dropped``; series markers always block instead,
    because losing a start or end marker would corrupt the series rather than lose one frame.
    Fill is read from the queue itself, never stored twice.

    Every frame passes through here between two threads, so a put and a get are one C call each
    (``queue.SimpleQueue``: 0.2 µs against ``queue.Queue``'s 2 µs of Python locking, which was a sixth of the
    receive thread's own work on a V1 frame). The bound is kept by the producer, which checks the fill before
    putting: with several producers (a stage and a thread ending its series) it can be exceeded by one
    item per producer, never more. A producer that waits for room is woken by the consumer's next get;
    a get looks at the waiters' count only, so it costs nothing while nobody waits.
    """

    def __init__(self, capacity: int, policy: FullPolicy) -> None:
        if capacity < 1:
            raise ValueError(f"queue capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.policy = policy
        self.frames_dropped = 0
        self._queue: queue.SimpleQueue[T] = queue.SimpleQueue()
        self._room = threading.Condition(threading.Lock())
        self._waiting_for_room = 0

    def put(self, item: T, timeout_s: float | None = None, *, wait_for_room: bool = False) -> bool:
        """Enqueue; returns False only when a data item was dropped by the DROP policy. A put that has to
        wait raises ``queue.Full`` after ``timeout_s`` (None: waits for room however long it takes).

        ``wait_for_room=True`` blocks whatever the policy: an engine stage forwarding into a queue whose
        DROP policy guards the socket reader (the writer's ingress behind the hit finder) applies
        backpressure instead, so frames are only ever dropped at the first queue they enter.
        """
        if self._queue.qsize() < self.capacity:
            self._queue.put(item)
            return True
        droppable = not wait_for_room and not isinstance(item, (SeriesStart, EndOfSeries))
        if self.policy is FullPolicy.DROP and droppable:
            self.frames_dropped += 1
            return False
        self._wait_for_room(timeout_s)
        self._queue.put(item)
        return True

    def put_abort_end(self, series_id: int | None, detail: str, timeout_s: float = 1.0) -> bool:
        """Queue an ``EndOfSeries(ABORT)`` behind the items already queued: how a stage whose source was
        re-initialised or died ends the series it would otherwise wait on forever. False without a series,
        or when the queue stayed full for ``timeout_s`` (the consumer is stuck too)."""
        if series_id is None:
            return False
        try:
            self.put(EndOfSeries(series_id, EndReason.ABORT, detail=detail), timeout_s)  # type: ignore[arg-type]
        except queue.Full:
            log.error("no room to end series %d (%s): the queue stayed full", series_id, detail)
            return False
        return True

    def get(self, timeout_s: float | None = None) -> T:
        """Raises ``queue.Empty`` after ``timeout_s``."""
        item = self._queue.get(timeout=timeout_s)
        if self._waiting_for_room:
            with self._room:
                self._room.notify()
        return item

    def _wait_for_room(self, timeout_s: float | None) -> None:
        """Returns once the queue has room; ``queue.Full`` after ``timeout_s``. The count of waiters is raised
        before the fill is read, under the lock a get notifies under, so no get can free room unseen."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._room:
            self._waiting_for_room += 1
            try:
                while self._queue.qsize() >= self.capacity:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise queue.Full
                    self._room.wait(remaining)
            finally:
                self._waiting_for_room -= 1

    @property
    def size(self) -> int:
        return self._queue.qsize()

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.size)

    @property
    def fill_percent(self) -> float:
        return min(100.0, 100.0 * self.size / self.capacity)

    def reset_counters(self) -> None:
        self.frames_dropped = 0

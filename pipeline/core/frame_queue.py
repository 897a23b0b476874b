"""Bounded queue between stages; each instance states what happens when it is full."""

from __future__ import annotations

import enum
import logging
import queue
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
    """

    def __init__(self, capacity: int, policy: FullPolicy) -> None:
        if capacity < 1:
            raise ValueError(f"queue capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.policy = policy
        self.frames_dropped = 0
        self._queue: queue.Queue[T] = queue.Queue(maxsize=capacity)

    def put(self, item: T, timeout_s: float | None = None, *, wait_for_room: bool = False) -> bool:
        """Enqueue; returns False only when a data item was dropped by the DROP policy.

        ``wait_for_room=True`` blocks whatever the policy: an engine stage forwarding into a queue whose
        DROP policy guards the socket reader (the writer's ingress behind the hit finder) applies
        backpressure instead, so frames are only ever dropped at the first queue they enter.
        """
        droppable = not wait_for_room and not isinstance(item, (SeriesStart, EndOfSeries))
        if self.policy is FullPolicy.DROP and droppable:
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self.frames_dropped += 1
                return False
            return True
        self._queue.put(item, timeout=timeout_s)
        return True

    def put_abort_end(self, series_id: int | None, detail: str, timeout_s: float = 1.0) -> bool:
        """Queue an ``EndOfSeries(ABORT)`` behind the items already queued: how a stage whose source was
        re-initialised or died ends the series it would otherwise wait on forever. False without a series,
        or when the queue stayed full for ``timeout_s`` (the consumer is stuck too)."""
        if series_id is None:
            return False
        try:
            self._queue.put(EndOfSeries(series_id, EndReason.ABORT, detail=detail), timeout=timeout_s)  # type: ignore[arg-type]
        except queue.Full:
            log.error("no room to end series %d (%s): the queue stayed full", series_id, detail)
            return False
        return True

    def get(self, timeout_s: float | None = None) -> T:
        """Raises ``queue.Empty`` after ``timeout_s``."""
        return self._queue.get(timeout=timeout_s)

    @property
    def size(self) -> int:
        return self._queue.qsize()

    @property
    def free(self) -> int:
        return self.capacity - self.size

    @property
    def fill_percent(self) -> float:
        return 100.0 * self.size / self.capacity

    def reset_counters(self) -> None:
        self.frames_dropped = 0

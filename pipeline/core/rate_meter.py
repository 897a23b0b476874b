"""Frames/s and MB/s over a sliding time window, as users read them on a live panel."""

from __future__ import annotations

import collections
import threading
import time


class RateMeter:
    """Rates over the last ``window_s`` seconds; 0 when nothing arrived in the window.

    A window (not a since-start average) is what operators expect: the number drops to 0 within
    ``window_s`` when the stream stops. Thread-safe: one thread adds, another reads. ``add`` is on the
    receive thread's path for every frame, so it only appends (a deque append is atomic): old events are
    expired by the reader, or by ``add`` once ``MAX_EVENTS`` are kept while nobody reads.
    """

    MAX_EVENTS = 2**16  # over a 1 s window: 65,536 frames/s, beyond any detector's frame rate

    def __init__(self, window_s: float = 1.0) -> None:
        self.window_s = window_s
        self._events: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()

    def add(self, nbytes: int, now: float | None = None) -> None:
        self._events.append((time.monotonic() if now is None else now, nbytes))
        if len(self._events) > self.MAX_EVENTS:
            with self._lock:
                self._expire(self._events[-1][0])
                while len(self._events) > self.MAX_EVENTS:
                    self._events.popleft()

    def _expire(self, now: float) -> None:
        while self._events and now - self._events[0][0] > self.window_s:
            self._events.popleft()

    def rates(self, now: float | None = None) -> tuple[float, float]:
        """(frames per second, megabytes per second; 1 MB = 1e6 bytes)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._expire(now)
            if not self._events:
                return 0.0, 0.0
            events = list(self._events)  # one C call: no append can come between, unlike iterating
        span = max(now - events[0][0], self.window_s / 10)
        n = len(events)
        total = sum(b for _, b in events)
        return n / span, total / span / 1e6

    def reset(self) -> None:
        with self._lock:
            self._events.clear()

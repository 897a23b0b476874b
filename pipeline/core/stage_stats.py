"""Exact per-stage counters and timings, published by the devices under odin-data's and LImA's names."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class StageStats:
    """Counters of one stage for one acquisition; ``reset()`` on Prepare.

    ``time_mean_ms`` is a true running mean over every processed item (odin-data's "mean" is
    ``(mean + d) / 2``, which forgets history). Written by the stage's own thread only.
    """

    processed: int = 0
    bytes_processed: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    time_last_ms: float = 0.0
    time_mean_ms: float = 0.0
    time_max_ms: float = 0.0
    _time_total_ms: float = 0.0
    _timed_calls: int = 0

    @contextmanager
    def timed(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.record_time((time.perf_counter() - t0) * 1e3)

    def record_time(self, ms: float) -> None:
        self._timed_calls += 1
        self._time_total_ms += ms
        self.time_last_ms = ms
        self.time_mean_ms = self._time_total_ms / self._timed_calls
        self.time_max_ms = max(self.time_max_ms, ms)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def reset(self) -> None:
        self.processed = 0
        self.bytes_processed = 0
        self.rejected.clear()
        self.time_last_ms = self.time_mean_ms = self.time_max_ms = 0.0
        self._time_total_ms = 0.0
        self._timed_calls = 0

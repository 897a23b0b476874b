"""Hit-finder counters for one series, under the names odin-data, LImA and OM use (frames, hits, hit rate)."""

from __future__ import annotations

import collections
import threading
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..core.peak_list import FrameTriage

HISTOGRAM_BINS = 64  # peaks per frame 0 … 62, the last bin counts 63 and more


@dataclass
class TriageStats:
    """Written by the dispatcher thread, read by the device; ``reset()`` at every series start.

    Every image that reaches the hit finder ends in exactly one of ``frames_triaged`` or
    ``frames_not_triaged[reason]`` (reasons: ``backlog`` when triage fell behind and the image went on
    untriaged, ``uncorrected`` for raw AGIPD data without constants, ``triage_error``, ``worker_died``).
    ``hit_rate`` is over the last ``hit_rate_window`` triaged images (OM's running average, default 200).
    ``latency_*`` is from handing an image to the workers to having its result; ``time_mean_ms`` is the
    workers' own time per image (decoding included).
    """

    hit_rate_window: int = 200
    frames_triaged: int = 0
    hits: int = 0
    vetoed: int = 0
    saturated_frames: int = 0  # frames with at least one saturated peak
    frames_not_triaged: Counter[str] = field(default_factory=Counter)
    last_n_peaks: int = -1
    time_mean_ms: float = 0.0
    latency_last_ms: float = 0.0
    latency_mean_ms: float = 0.0
    latency_max_ms: float = 0.0
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(HISTOGRAM_BINS, dtype=np.int64))
    _recent: collections.deque[bool] = field(default_factory=collections.deque)
    _recent_hits: int = 0
    _time_total_ms: float = 0.0
    _latency_total_ms: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def misses(self) -> int:
        return self.frames_triaged - self.hits

    @property
    def not_triaged_total(self) -> int:
        return sum(self.frames_not_triaged.values())

    @property
    def hit_rate(self) -> float:
        """Percent of hits over the running window; 0 before the first triaged image."""
        with self._lock:
            return 100.0 * self._recent_hits / len(self._recent) if self._recent else 0.0

    def record(self, result: FrameTriage, latency_ms: float) -> None:
        with self._lock:
            self.frames_triaged += 1
            self.hits += result.is_hit
            self.vetoed += result.vetoed
            self.saturated_frames += result.n_saturated > 0
            self.last_n_peaks = result.n_peaks
            self.histogram[min(result.n_peaks, HISTOGRAM_BINS - 1)] += 1
            self._time_total_ms += result.time_ms
            self.time_mean_ms = self._time_total_ms / self.frames_triaged
            self._latency_total_ms += latency_ms
            self.latency_last_ms = latency_ms
            self.latency_mean_ms = self._latency_total_ms / self.frames_triaged
            self.latency_max_ms = max(self.latency_max_ms, latency_ms)
            self._recent.append(result.is_hit)
            self._recent_hits += result.is_hit
            while len(self._recent) > self.hit_rate_window:
                self._recent_hits -= self._recent.popleft()

    def record_not_triaged(self, reason: str, frames: int = 1) -> None:
        with self._lock:
            self.frames_not_triaged[reason] += frames

    def reset(self) -> None:
        with self._lock:
            self.frames_triaged = self.hits = self.vetoed = self.saturated_frames = 0
            self.frames_not_triaged.clear()
            self.last_n_peaks = -1
            self.time_mean_ms = self.latency_last_ms = self.latency_mean_ms = self.latency_max_ms = 0.0
            self._time_total_ms = self._latency_total_ms = 0.0
            self.histogram[:] = 0
            self._recent.clear()
            self._recent_hits = 0

"""Receiver counters (odin-data's frames received/dropped/timed-out, LImA's progress)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .rate_meter import RateMeter
from .stage_stats import StageStats


@dataclass
class ReceiverStats(StageStats):
    """Per-acquisition counters of the stream receiver; reset when an acquisition is prepared.

    Every frame message is accounted for exactly once: forwarded (``frames_received`` minus drops),
    ``frames_dropped`` by reason (the ingress queue was full), or ``rejected`` by reason (malformed,
    from another series…). ``frames_missing`` counts holes in the frame numbering (frames the detector
    sent that never arrived, e.g. taken by a second PULL client on the PUSH socket). ``late_messages`` counts
    leftovers of an earlier series, read and discarded: not an error. ``frames_rejected`` counts the rejected
    messages that were recognisably images of the armed series (a subset of ``rejected``): received plus
    rejected frames is how many of the series' frames arrived, never mixed with messages of other series,
    whose ids are kept (the first few) in ``other_series_ids``.
    """

    frames_received: int = 0
    messages_received: int = 0
    late_messages: int = 0
    bytes_received: int = 0
    frames_missing: int = 0
    last_image_acquired: int = -1
    frames_dropped: Counter[str] = field(default_factory=Counter)
    frames_rejected: int = 0
    other_series_ids: set[int] = field(default_factory=set)
    rate_meter: RateMeter = field(default_factory=RateMeter)

    def rates(self) -> tuple[float, float]:
        """(frames/s, MB/s) over the last second."""
        return self.rate_meter.rates()

    @property
    def frames_dropped_total(self) -> int:
        return sum(self.frames_dropped.values())

    def reset(self) -> None:
        super().reset()
        self.frames_received = self.messages_received = self.bytes_received = self.frames_missing = 0
        self.late_messages = self.frames_rejected = 0
        self.other_series_ids.clear()
        self.last_image_acquired = -1
        self.frames_dropped.clear()
        self.rate_meter.reset()

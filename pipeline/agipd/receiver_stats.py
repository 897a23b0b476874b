"""AGIPD receiver counters: the Eiger receiver's (odin-data/LImA names) plus trains, modules and accepted quirks."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..core.rate_meter import RateMeter
from ..core.receiver_stats import ReceiverStats


@dataclass
class AgipdReceiverStats(ReceiverStats):
    """Per-acquisition counters; reset on Prepare. ``rejected`` counts messages by reason,
    ``frames_dropped["queue_full"]`` the frames of trains the full outbox refused. ``modules_missing[m]``
    counts trains without module m; ``trains_missing`` the gaps in train ids within a run;
    ``requests_unanswered`` the REQ requests a run ended without a reply to (the bridge had taken their trains
    off its queue, so they are lost, a run's first train too); ``notes`` the
    quirks accepted (``gain_shape_quirk``, ``raw_without_gain_axis``, ``train_id_not_increasing``…).
    ``bytes_received`` counts every message on the wire, ``bytes_processed`` the canonical train bytes.
    ``rates()`` gives (frames/s, MB/s), ``train_rate()`` trains/s, over the last second.
    """

    trains_received: int = 0
    trains_missing: int = 0
    modules_missing: Counter[int] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    last_train_id: int = -1
    requests_unanswered: int = 0
    train_rate_meter: RateMeter = field(default_factory=RateMeter)

    def train_rate(self) -> float:
        return self.train_rate_meter.rates()[0]

    def reset(self) -> None:
        super().reset()
        self.trains_received = self.trains_missing = self.requests_unanswered = 0
        self.last_train_id = -1
        self.modules_missing.clear()
        self.notes.clear()
        self.train_rate_meter.reset()

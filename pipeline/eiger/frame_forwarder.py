"""The end of the receive thread: counts each frame of the armed series and puts it in the engine's queue.

Frame accounting (received, missing, out of range, duplicate) happens here, in arrival order, on the socket
thread, and this is the only producer into the outbox, so a series' end always arrives after its last frame.

The receive thread checks a frame's message and chunk header only (shape, type, declared sizes: the
decoder's checks), which keeps it within a few percent of a bare ZMQ loop. Whether the compressed payload
decodes is verified by whoever reads it next: the writer's frame-check thread before storing it
(``writers/checked_writer.py``), and every decoder (triage, RED, live view) through ``decode_chunk_pixels``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..core.frame import Frame
from ..core.receiver_stats import ReceiverStats
from ..core.series import EndOfSeries, SeriesStart
from ..core.stage import Item

Reject = Callable[[str, str], None]


class ItemSink(Protocol):
    """Where the receive thread puts the series' items: the engine's ``FrameQueue``, or a fan-out's receivers.
    ``put`` returns False when the item could not be taken (a full queue)."""

    def put(self, item: Item) -> bool: ...


class FrameForwarder:
    """Counts and forwards what the socket thread decoded; ``latest`` and ``series_start`` feed the live view."""

    def __init__(self, stats: ReceiverStats, reject: Reject, on_series_end: Callable[[EndOfSeries], None]) -> None:
        self.stats = stats
        self._reject = reject
        self._on_series_end = on_series_end
        self._series_id: int | None = None
        self._expected_index = 0
        self._frames_expected = 0  # of the forwarded series header; 0 while unknown
        self._seen: dict[str, bytearray] = {}  # per channel, a bit per frame index forwarded
        self.latest: Frame | None = None  # the newest frame forwarded, for the live view: a reference, no copy
        self.series_start: SeriesStart | None = None  # of the newest series (its pixel mask), for the live view

    def forward(self, outbox: ItemSink, item: Item) -> None:
        if isinstance(item, Frame):
            self._forward_frame(outbox, item)
        elif isinstance(item, SeriesStart):
            self._forward_start(outbox, item)
        else:
            self._forward_end(outbox, item)

    def _forward_start(self, outbox: ItemSink, start: SeriesStart) -> None:
        self._enter(start.series_id)
        self.series_start = start
        self._frames_expected = start.config.frames_expected if start.config is not None else 0
        outbox.put(start)

    def _enter(self, series_id: int) -> None:
        """Counting starts afresh with each series (its header, or its first frame if the header was lost)."""
        self._series_id = series_id
        self._expected_index = 0
        self._frames_expected = 0
        self._seen = {}

    def _forward_end(self, outbox: ItemSink, end: EndOfSeries) -> None:
        self._series_id = None
        outbox.put(end)
        self._on_series_end(end)

    def _forward_frame(self, outbox: ItemSink, frame: Frame) -> None:
        if frame.series_id != self._series_id:
            self._enter(frame.series_id)
        if self._frames_expected and frame.index >= self._frames_expected:
            self._reject("index_out_of_range", f"frame {frame.index} of a {self._frames_expected}-frame series")
            return
        if self._frames_expected and not self._first_time(frame):
            self._reject("duplicate_frame", f"frame {frame.index} ({frame.channel}) came a second time")
            return
        stats = self.stats
        stats.frames_received += 1
        stats.processed += 1
        stats.bytes_received += frame.nbytes_encoded
        stats.bytes_processed += frame.nbytes_encoded
        stats.rate_meter.add(frame.nbytes_encoded)
        if frame.index > self._expected_index:
            stats.frames_missing += frame.index - self._expected_index
        self._expected_index = max(self._expected_index, frame.index + 1)
        stats.last_image_acquired = max(stats.last_image_acquired, frame.index)
        self.latest = frame
        if not outbox.put(frame):
            stats.frames_dropped["queue_full"] += 1

    def _first_time(self, frame: Frame) -> bool:
        """Marks the frame's index as forwarded; False if it already was. A bit per index, grown to the
        highest index seen, which the series' frame count bounds (1e8 frames: 12.5 MB)."""
        seen = self._seen.setdefault(frame.channel, bytearray())
        byte, bit = divmod(frame.index, 8)
        if byte >= len(seen):
            seen.extend(bytes(byte + 1 - len(seen)))
        if seen[byte] >> bit & 1:
            return False
        seen[byte] |= 1 << bit
        return True

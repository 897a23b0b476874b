"""The stream receiver's second thread: verifies every frame's payload, then forwards the series in order.

Parsing every LZ4 sequence of a chunk (``chunk_framing.verify_payload``) costs ~0.36 ms per 4M frame,
about a third of what the NXmx writer spends on the frame and more than a bare ZMQ receive loop spends on
it. On the socket thread it would slow reading; on the writer thread it would slow writing. Here, in a
thread of its own (the kernel releases the GIL), it overlaps both, and a corrupt chunk is rejected at the
detector, before triage or writing ever decode or store it.

The socket thread hands over every item of the armed series with the queue it goes to; this thread is then
the only producer into that queue, so a series' end still arrives after its last frame. Frame accounting
(received, missing, out of range, duplicate) happens here, in arrival order, after the payload check, so a
corrupt frame counts as rejected only.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable

from ..core.chunk_framing import verify_payload
from ..core.errors import FrameRejected
from ..core.frame import Frame
from ..core.frame_queue import FrameQueue
from ..core.receiver_stats import ReceiverStats
from ..core.series import EndOfSeries, EndReason, SeriesStart
from ..core.stage import Item
from ..core.thread_names import pipeline_thread

log = logging.getLogger(__name__)

HANDOVER_CAPACITY = 64  # frames read but not yet checked; beyond it the socket thread waits (the ZMQ buffer fills)
_WAIT_S = 0.1  # how often a waiting hand-over looks whether the receiver is closing

Reject = Callable[[str, str], None]


class FrameForwarder:
    """Checks and forwards what the socket thread read; ``failure`` names why its thread died, if it did."""

    def __init__(self, stats: ReceiverStats, reject: Reject, on_series_end: Callable[[EndOfSeries], None]) -> None:
        self.stats = stats
        self.failure = ""
        self._reject = reject
        self._on_series_end = on_series_end
        self._handover: queue.Queue[tuple[FrameQueue[Item], Item] | None] = queue.Queue(HANDOVER_CAPACITY)
        self._outbox: FrameQueue[Item] | None = None
        self._series_id: int | None = None
        self._expected_index = 0
        self._frames_expected = 0  # of the forwarded series header; 0 while unknown
        self._seen: dict[str, bytearray] = {}  # per channel, a bit per frame index forwarded
        self.latest: Frame | None = None  # the newest frame forwarded, for the live view: a reference, no copy
        self.series_start: SeriesStart | None = None  # of the newest series (its pixel mask), for the live view
        self._thread = pipeline_thread(self._loop, "frame-check")

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout_s: float) -> None:
        """Stop after the items handed over so far."""
        self._hand_over(None, lambda: False)
        self._thread.join(timeout_s)

    def submit(self, outbox: FrameQueue[Item], item: Item, closing: Callable[[], bool]) -> None:
        """Hand ``item`` over, waiting while the check is behind; gives up only when ``closing()`` or the
        thread is dead (then a frame is counted as dropped, and the end the thread could not forward is
        reported to the acquisition directly)."""
        if self._hand_over((outbox, item), closing):
            return
        if isinstance(item, Frame):
            self.stats.frames_dropped["receiver_failed"] += 1
        elif isinstance(item, EndOfSeries):
            outbox.put(item, timeout_s=_WAIT_S)
            self._on_series_end(item)

    def _hand_over(self, entry: tuple[FrameQueue[Item], Item] | None, closing: Callable[[], bool]) -> bool:
        while self._thread.is_alive():
            try:
                self._handover.put(entry, timeout=_WAIT_S)
                return True
            except queue.Full:
                if closing():
                    break
        return False

    def _loop(self) -> None:
        try:
            while (entry := self._handover.get()) is not None:
                outbox, item = entry
                self._outbox = outbox
                if isinstance(item, Frame):
                    self._forward_frame(outbox, item)
                elif isinstance(item, SeriesStart):
                    self._forward_start(outbox, item)
                else:
                    self._forward_end(outbox, item)
        except Exception as err:
            self.failure = f"frame check thread died: {type(err).__name__}: {err}"
            log.exception("frame check thread stopped")
            self._end_open_series()

    def _forward_start(self, outbox: FrameQueue[Item], start: SeriesStart) -> None:
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

    def _forward_end(self, outbox: FrameQueue[Item], end: EndOfSeries) -> None:
        self._series_id = None
        outbox.put(end)
        self._on_series_end(end)

    def _forward_frame(self, outbox: FrameQueue[Item], frame: Frame) -> None:
        if frame.series_id != self._series_id:
            self._enter(frame.series_id)
        try:
            verify_payload(frame.encoding, frame.blob, frame.nbytes_uncompressed, frame.dtype.itemsize)
        except FrameRejected as err:
            self._reject_frame(err.reason, f"frame {frame.index}: {err.detail}")
            return
        except Exception as err:  # a check bug or an input no check foresaw: this frame only
            log.exception("the payload of frame %d could not be checked", frame.index)
            self._reject_frame("undecodable", f"frame {frame.index}: {type(err).__name__}: {err}")
            return
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

    def _reject_frame(self, reason: str, detail: str) -> None:
        """One of the series' frames, unusable: it arrived (so the wait for the series' frames counts it)."""
        self.stats.frames_rejected += 1
        self._reject(reason, detail)

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

    def _end_open_series(self) -> None:
        """After this thread died: end the series it was forwarding, so the stages after it close their files."""
        if self._outbox is not None and self._series_id is not None:
            end = EndOfSeries(self._series_id, EndReason.ERROR, detail=self.failure)
            self._outbox.put(end, timeout_s=_WAIT_S)
            self._on_series_end(end)

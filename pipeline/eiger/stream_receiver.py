"""ZMQ PULL receiver: socket → decoder → frame accounting → the engine's ingress queue, in one thread.

The receiver forwards only the series its acquisition armed (``listen``). Until then messages are read
into a buffer bounded in bytes (``IDLE_BUFFER_BYTES``, oldest discarded first), so the writer is prepared
for a series id before its header is read, and a peer streaming while nothing is armed cannot grow the
process without bound. ZMQ refuses any message part over ``MAX_MESSAGE_BYTES`` (``StreamSocket``). Messages of an
earlier series are leftovers, counted as ``late_messages``; those of any other series are counted as
``rejected["other_series"]``. Neither is ever forwarded. The one thread reads, decodes, counts
(``FrameForwarder``) and is the only producer into the outbox, so even a synthetic end (Stop, Abort,
silence, closing) arrives after the last frame. Per frame it does what a bare ZMQ loop does, plus the
decoder's message and chunk-header checks, the accounting and a queue put: the payload is verified by the
writer's frame-check thread (``writers/checked_writer.py``), off this thread.

One message never stops the stream: whatever decoding one raises, expected (``FrameRejected``) or not
(a decoder bug, an exotic input), is counted by reason and the next message is read. Should the thread
die anyway, ``failure`` names the cause and the active series ends as an error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import zmq

from ..core.errors import FrameRejected
from ..core.frame import Frame
from ..core.frame_memory import keep_freed_frames_mapped
from ..core.receiver_stats import ReceiverStats
from ..core.series import DetectorConfig, EndOfSeries, EndReason, SeriesStart
from ..core.stage import Item
from ..core.thread_names import pipeline_thread
from .frame_forwarder import FrameForwarder, ItemSink
from .stream_decoder import EigerStreamDecoder, ForeignSeries
from .stream_socket import StreamSocket

log = logging.getLogger(__name__)

POLL_MS = 20  # receive timeout: how promptly a requested end or close is honoured
# The largest part a DCU sends is one uncompressed frame: EIGER2 16M, 32 bit, is 72 MB; with two thresholds
# in one Stream V2 message 145 MB.
MAX_MESSAGE_BYTES = 512 * 2**20
IDLE_BUFFER_BYTES = 256 * 2**20  # messages read while no series is armed (a series header comes at arm)
MAX_OTHER_SERIES_IDS = 8  # ids of other series kept to name in Status


class StreamReceiver:
    """Receives one detector stream. Thread-safe control methods; one internal thread owns the socket."""

    def __init__(
        self,
        endpoint: str,
        *,
        receive_buffer_messages: int = 1000,
        on_series_end: Callable[[EndOfSeries], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.decoder = EigerStreamDecoder(verify_block_chain=False)  # the writer's frame check walks it
        self.stats = ReceiverStats()
        self.on_series_end = on_series_end
        self._forwarder = FrameForwarder(self.stats, self._reject, self._series_ended)
        self.last_message_monotonic = 0.0
        self._receive_buffer_messages = receive_buffer_messages
        self._outbox: ItemSink | None = None
        self._series_id: int | None = None
        self._fallback_config: DetectorConfig | None = None
        self._fallback_pixel_mask: np.ndarray | None = None
        self._pending_end: EndOfSeries | None = None
        self._idle: deque[list[zmq.Frame]] = deque()  # read while not listening, oldest first
        self._idle_bytes = 0
        self.idle_messages_discarded = 0  # beyond IDLE_BUFFER_BYTES while nothing was armed
        self._failure = ""  # why the socket thread died; empty while it runs
        self._listening = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._logged_reasons: set[str] = set()
        self._thread = pipeline_thread(self._loop, "receiver")

    def start(self) -> None:
        keep_freed_frames_mapped()
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        self._closing.set()
        self._thread.join(timeout_s)

    @property
    def failure(self) -> str:
        """Why the receive thread died; empty while it runs."""
        return self._failure

    @property
    def forwarder(self) -> FrameForwarder:
        """The frame accounting; its ``latest`` frame and ``series_start`` feed the live view."""
        return self._forwarder

    @property
    def thread_id(self) -> int | None:
        """The receive thread's kernel id, once started (to read its CPU time, name it in ``top -H``)."""
        return self._thread.native_id

    @property
    def active_series(self) -> int | None:
        return self._series_id

    def listen(self, series_id: int, outbox: ItemSink, fallback_config: DetectorConfig | None,
               fallback_pixel_mask: np.ndarray | None = None) -> None:
        """Forward series ``series_id`` to ``outbox``. ``fallback_config`` (read over REST) fills a series
        header that carries no config (V1 header_detail=none), so the master file still gets its metadata;
        ``fallback_pixel_mask`` (read over REST) fills a header without mask (header_detail basic or none)."""
        with self._lock:
            self._outbox = outbox
            self._series_id = series_id
            self._fallback_config = fallback_config
            self._fallback_pixel_mask = fallback_pixel_mask
            self.decoder.expect(series_id)
            self._pending_end = None
            self.last_message_monotonic = time.monotonic()
            self._listening.set()

    def end_series(self, reason: EndReason, detail: str = "") -> None:
        """Close the active series after the messages already read (Stop, Abort, silence, failure)."""
        with self._lock:
            if self._series_id is not None and self._pending_end is None:
                self._pending_end = EndOfSeries(self._series_id, reason, detail=detail)

    def _loop(self) -> None:
        socket = StreamSocket(self.endpoint, receive_buffer_messages=self._receive_buffer_messages,
                              max_message_bytes=MAX_MESSAGE_BYTES, poll_ms=POLL_MS, on_drop=self._connection_dropped)
        try:
            while not self._closing.is_set():
                if self._pending_end is not None:
                    self._emit_end(self._pending_end)
                    continue
                parts = socket.recv()
                if not self._listening.is_set():
                    if parts is not None:
                        self._hold_while_idle(parts)
                    continue
                while self._idle and self._listening.is_set():
                    self._handle_message(self._take_idle())
                if parts is not None:
                    self._handle_message(parts)
        except Exception as err:
            self._failure = f"receive thread died: {type(err).__name__}: {err}"
            log.exception("stream receiver of %s stopped", self.endpoint)
            self.end_series(EndReason.ERROR, self.failure)
        finally:
            self._end_on_close()
            socket.close()

    def _connection_dropped(self) -> None:
        """Messages in flight on a dropped connection are lost (an oversized one is bad input): rejected."""
        self.stats.rejected["connection_dropped"] += 1

    def _hold_while_idle(self, parts: list[zmq.Frame]) -> None:
        """Keep a message read before ``listen`` (it may be the header of the series being armed), within
        ``IDLE_BUFFER_BYTES``: the oldest go first, counted and logged."""
        self._idle.append(parts)
        self._idle_bytes += _nbytes(parts)
        while self._idle_bytes > IDLE_BUFFER_BYTES and len(self._idle) > 1:
            self._take_idle()
            self.idle_messages_discarded += 1
            if "idle" not in self._logged_reasons:
                self._logged_reasons.add("idle")
                log.warning("stream messages arrive while no series is armed: the oldest beyond %d MB are "
                            "discarded (idle_messages_discarded)", IDLE_BUFFER_BYTES // 2**20)

    def _take_idle(self) -> list[zmq.Frame]:
        parts = self._idle.popleft()
        self._idle_bytes -= _nbytes(parts)
        return parts

    def _end_on_close(self) -> None:
        """A receiver closed while a series is armed (the device's Init) ends it, so every stage after it
        closes its files instead of waiting for frames that will never come."""
        with self._lock:
            series_id, pending = self._series_id, self._pending_end
        if series_id is not None:
            self._emit_end(pending or EndOfSeries(series_id, EndReason.ABORT, detail="receiver closed"))

    def _handle_message(self, parts: list[zmq.Frame]) -> None:
        received_s = time.time()
        self.last_message_monotonic = time.monotonic()
        stats = self.stats
        stats.messages_received += 1
        t0 = time.perf_counter()
        try:
            items = self.decoder.decode([p.buffer for p in parts], received_s)
        except ForeignSeries as err:
            self._not_this_series(err.series_id)
            return
        except FrameRejected as err:
            self._reject(err.reason, err.detail)
            if err.image_of_series is not None and err.image_of_series == self._series_id:
                stats.frames_rejected += 1
            return
        except Exception as err:  # a decoder bug or an input no check foresaw: this message only
            if "undecodable" not in self._logged_reasons:
                log.exception("stream message could not be decoded")
            self._reject("undecodable", f"{type(err).__name__}: {err}")
            return
        finally:
            stats.record_time((time.perf_counter() - t0) * 1e3)
        for item in items:
            if item.series_id != self._series_id:
                self._not_this_series(item.series_id)
            elif isinstance(item, Frame):
                self._put(item)
            elif isinstance(item, SeriesStart):
                self._forward_start(item)
            else:
                self._emit_end(item)

    def _forward_start(self, start: SeriesStart) -> None:
        """The header goes on with the settings this series was armed with where it lacks or contradicts
        them: no config at all (V1 header_detail=none), or another number of frames than was armed. (A second
        header of the series never gets here: the decoder refuses it as ``repeated_header``.)"""
        fallback = self._fallback_config
        if fallback is not None:
            if start.config is None:
                start = replace(start, config=fallback)
            elif start.config.frames_expected != fallback.frames_expected:
                log.warning("series %d header announces %d frames, %d were armed: the armed number is kept",
                            start.series_id, start.config.frames_expected, fallback.frames_expected)
                start = replace(start, config=replace(start.config, nimages=fallback.nimages,
                                                      ntrigger=fallback.ntrigger))
        if start.pixel_mask is None and self._fallback_pixel_mask is not None:
            start = replace(start, pixel_mask=self._fallback_pixel_mask)
        self._put(start)

    def _put(self, item: Item) -> None:
        assert self._outbox is not None
        self._forwarder.forward(self._outbox, item)

    def _emit_end(self, end: EndOfSeries) -> None:
        with self._lock:
            self._pending_end = None
            self._listening.clear()
            self._series_id = None
        if self._outbox is not None:
            self._put(end)
        else:
            self._series_ended(end)

    def _series_ended(self, end: EndOfSeries) -> None:
        """Called once the end went out after the series' last frame."""
        if self.on_series_end is not None:
            self.on_series_end(end)

    def _not_this_series(self, series_id: int) -> None:
        """A message of an earlier series is a leftover (of a series aborted, refused at Prepare, or ended before
        its last message was read; some DCUs send a second end at disarm): counted, not an error. Any other
        series id is rejected: a second detector or stream on this endpoint."""
        listening = self._series_id
        if listening is not None and series_id < listening:
            self.stats.late_messages += 1
            if "late" not in self._logged_reasons:
                self._logged_reasons.add("late")
                log.info("message of the earlier series %d discarded while listening to %d; further ones counted "
                         "only (late_messages)", series_id, listening)
            return
        if len(self.stats.other_series_ids) < MAX_OTHER_SERIES_IDS:
            self.stats.other_series_ids.add(series_id)
        self._reject("other_series", f"series {series_id} while listening to {listening}")

    def _reject(self, reason: str, detail: str) -> None:
        self.stats.rejected[reason] += 1
        if reason not in self._logged_reasons:
            self._logged_reasons.add(reason)
            log.warning("stream message rejected (%s): %s; further ones counted only", reason, detail)



def _nbytes(parts: list[zmq.Frame]) -> int:
    return sum(len(p.buffer) for p in parts)

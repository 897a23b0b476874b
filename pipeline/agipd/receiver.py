"""Karabo bridge receiver for AGIPD: socket → decoder → train assembler → the next stage's queue, in one thread.

Like the Eiger ``StreamReceiver``, it forwards only the run its acquisition armed (``listen``): until
then it asks for nothing (REQ) or leaves trains in the ZMQ buffer (PULL, SUB), and every run is framed by
a ``SeriesStart`` and an ``EndOfSeries`` that this thread puts, so the end always follows the last train.
A REQ client asks the bridge with ``b"next"`` and gets one train per request (Karabo bridge protocol). ZMQ's REQ
socket is a strict send/recv state machine, and the bridge takes a train off its queue when it is asked:
a request given up (a new socket asking again) loses the train it was answered with. So a pending request
is never abandoned for time alone while the run goes on: a slow bridge is waited for, however long each
train takes. ``request_timeout_s`` is how long the acquisition lets one request wait before it takes the
bridge as gone and ends the run (``pending_request_s``). A request still unanswered when a run ends is
counted in ``stats.requests_unanswered`` (its train is lost, the run's first one too) and only then is the
socket replaced. The next request is sent as soon as a reply arrives, before that train is decoded, so the
bridge's send overlaps our transposition (one extra train in flight).

Flow control follows the socket. REQ asks only while the outbox has room (for two trains when asking
ahead), so a slow pipeline makes the bridge skip trains, which shows as ``trains_missing`` (gaps in
the ids), and REQ never drops; while it holds back, the silence clock (``last_message_monotonic``) is
kept fresh. PULL and SUB read at once and drop a train the full outbox refuses, counting its frames
in ``frames_dropped["queue_full"]`` (the socket reader never stalls).
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import zmq

from ..core.errors import FrameRejected
from ..core.frame_queue import FrameQueue, FullPolicy
from ..core.series import EndOfSeries, EndReason, SeriesStart
from ..core.stage import Item
from ..core.thread_names import pipeline_thread
from ..core.train import AGIPD_MODULES, Train
from .bridge_decoder import decode_bridge_message
from .layout import Layout
from .receiver_stats import AgipdReceiverStats
from .train_assembler import AgipdTrainAssembler, AssembledTrain

log = logging.getLogger(__name__)

POLL_MS = 20  # how promptly a requested end or close is honoured while waiting for a train
NEXT_REQUEST = b"next"  # the bridge's only valid request (Karabo bridge protocol, karabo-bridge-py documentation)
# A raw 352-cell AGIPD-1M train is 1.5 GB in one array part. Over this, ZMQ drops the connection and never
# reconnects it (a protocol error): set on REQ only, whose unanswered request opens a new socket anyway.
MAX_MESSAGE_BYTES = 4 * 2**30
LOOK_AHEAD_WAIT_S = 0.5  # at an aborted run's end, how long the reply to the request sent ahead is awaited


class BridgeSocket(enum.Enum):
    """Client socket; the bridge must run the matching server socket (REP, PUSH, PUB)."""

    REQ = "REQ"
    PULL = "PULL"
    SUB = "SUB"


@dataclass
class _Run:
    """One armed run, owned by the receiver thread once ``listen`` has handed it over."""

    series_id: int
    outbox: FrameQueue[Item]
    max_trains: int | None
    trains: int = 0
    frames: int = 0
    last_train_id: int | None = None
    started: bool = False
    end: EndOfSeries | None = None


class AgipdReceiver:
    """Receives AGIPD trains from a Karabo bridge. Thread-safe control methods; one thread owns the socket.

    ``socket_type`` is a ``BridgeSocket`` or its name ("REQ", "PULL", "SUB"). ``layout`` and
    ``detector_id`` go to the ``AgipdTrainAssembler``. ``last_message_monotonic`` (``time.monotonic``)
    lets the acquisition detect a silent bridge, as with the Eiger receiver. A message that is not a usable
    train is counted in ``stats.rejected`` under the decoder's or the assembler's reason (bad_msgpack,
    odd_part_count, unknown_content, missing_key, bad_array_header, bad_dtype, truncated_array,
    unknown_source, wrong_shape, wrong_dtype, train_id_mismatch) and the next one is read. ``modules`` are those
    this receiver's bridge serves (a module group's, docs/scale_out.md): only their absence counts as missing.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        socket_type: BridgeSocket | str = BridgeSocket.REQ,
        request_timeout_s: float = 30.0,
        layout: Layout = Layout.AUTO,
        detector_id: str | None = None,
        receive_buffer_messages: int = 1,
        on_series_end: Callable[[EndOfSeries], None] | None = None,
        modules: Sequence[int] = tuple(range(AGIPD_MODULES)),
    ) -> None:
        self.endpoint = endpoint
        self.socket_type = BridgeSocket(socket_type.upper() if isinstance(socket_type, str) else socket_type)
        self.request_timeout_s = request_timeout_s
        self.assembler = AgipdTrainAssembler(layout=layout, detector_id=detector_id)
        self.stats = AgipdReceiverStats()
        self.modules = tuple(modules)
        self.on_series_end = on_series_end
        self.last_message_monotonic = 0.0
        self._receive_buffer_messages = receive_buffer_messages
        self.failure = ""  # why the receive thread died; empty while it runs
        self.latest: Train | None = None  # the newest train forwarded, for the live view: a reference, no copy
        self._run: _Run | None = None
        self._superseded: list[_Run] = []
        self._awaiting_reply = False
        self._request_sent_monotonic = 0.0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._logged_reasons: set[str] = set()
        self._thread = pipeline_thread(self._loop, "agipd-receiver")

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout_s)

    @property
    def active_series(self) -> int | None:
        run = self._run
        return None if run is None else run.series_id

    def listen(self, run_number: int, outbox: FrameQueue[Item], *, max_trains: int | None = None) -> None:
        """Forward run ``run_number`` to ``outbox``: a ``SeriesStart(run_number, config=None)``, then trains
        until ``end_series`` or, with ``max_trains``, until that many trains were received (then an
        ``EndOfSeries(END_MESSAGE, frames_sent=frames of those trains)``). A run still open is ended first
        (reason STOP, "superseded")."""
        if max_trains is not None and max_trains < 1:
            raise ValueError(f"max_trains must be >= 1 or None, got {max_trains}")
        with self._lock:
            if self._run is not None:
                old = self._run
                old.end = old.end or EndOfSeries(old.series_id, EndReason.STOP, detail=f"superseded by {run_number}")
                self._superseded.append(old)
            self._run = _Run(run_number, outbox, max_trains)
            self.last_message_monotonic = time.monotonic()
        self._wake.set()

    def pending_request_s(self) -> float | None:
        """Seconds the REQ request in flight has waited for its train; None when none is in flight."""
        if not self._awaiting_reply:
            return None
        return time.monotonic() - self._request_sent_monotonic

    def end_series(self, reason: EndReason, detail: str = "") -> None:
        """End the active run after the trains already read (Stop, Abort, silence, failure)."""
        with self._lock:
            if self._run is not None and self._run.end is None:
                self._run.end = EndOfSeries(self._run.series_id, reason, detail=detail)
        self._wake.set()

    # --- the receiver thread ---
    def _open_socket(self) -> zmq.Socket:
        socket = zmq.Context.instance().socket(getattr(zmq, self.socket_type.value))
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.RCVHWM, self._receive_buffer_messages)
        if self.socket_type is BridgeSocket.SUB:
            socket.setsockopt(zmq.SUBSCRIBE, b"")
        if self.socket_type is BridgeSocket.REQ:
            socket.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        socket.connect(self.endpoint)
        self._awaiting_reply = False
        return socket

    def _loop(self) -> None:
        socket = self._open_socket()
        try:
            while not self._closing.is_set():
                with self._lock:
                    superseded, self._superseded = self._superseded, []
                    run = self._run
                for old in superseded:
                    socket = self._finish(old, socket)
                if run is None:
                    self._wake.wait(0.05)
                    self._wake.clear()
                    continue
                if not run.started:
                    run.outbox.put(SeriesStart(series_id=run.series_id, config=None, received_s=time.time()))
                    run.started = True
                if run.end is not None:
                    socket = self._finish(run, socket)
                    continue
                socket = self._receive_one(run, socket)
        except Exception as err:
            self.failure = f"receive thread died: {type(err).__name__}: {err}"
            log.exception("bridge receiver of %s stopped", self.endpoint)
            self.end_series(EndReason.ERROR, self.failure)
        finally:
            self._end_on_close()
            socket.close(linger=0)

    def _end_on_close(self) -> None:
        """A receiver closed during a run (the device's Init) ends it, so the writer closes its files
        instead of waiting for trains that will never come."""
        with self._lock:
            runs, self._superseded = [*self._superseded, *([self._run] if self._run else [])], []
        if runs and self._awaiting_reply:
            self._count_unanswered()
        for run in runs:
            run.end = run.end or EndOfSeries(run.series_id, EndReason.ABORT, detail="receiver closed")
            self._emit_end(run)

    def _receive_one(self, run: _Run, socket: zmq.Socket) -> zmq.Socket:
        if self.socket_type is BridgeSocket.REQ and not self._awaiting_reply:
            if run.outbox.free < 1:
                # Holding the bridge back, not waiting on it: the silence clock must not run.
                self.last_message_monotonic = time.monotonic()
                self._closing.wait(POLL_MS / 1e3)
                return socket
            self._request(socket)
        if not socket.poll(POLL_MS):
            return socket
        parts = socket.recv_multipart(copy=False)
        self._awaiting_reply = False
        if self.socket_type is BridgeSocket.REQ and run.end is None:
            room = run.outbox.free >= 2  # for this train and the next
            if room and (run.max_trains is None or run.trains + 1 < run.max_trains):
                self._request(socket)  # the bridge sends the next train while this one is assembled
        self._handle(run, parts)
        return socket

    def _request(self, socket: zmq.Socket) -> None:
        try:
            socket.send(NEXT_REQUEST, zmq.NOBLOCK)
        except zmq.Again:  # no peer yet; ask again on the next pass
            return
        self._awaiting_reply = True
        self._request_sent_monotonic = time.monotonic()

    def _handle(self, run: _Run, parts: list[zmq.Frame]) -> None:
        received_s = time.time()
        self.last_message_monotonic = time.monotonic()
        stats = self.stats
        stats.messages_received += 1
        t0 = time.perf_counter()
        try:
            buffers = [p.buffer for p in parts]
            stats.bytes_received += sum(b.nbytes for b in buffers)
            message = decode_bridge_message(buffers)
            assembled = self.assembler.assemble(
                message, series_id=run.series_id, index=run.trains, received_s=received_s
            )
        except FrameRejected as err:
            self._reject(err.reason, err.detail)
            return
        except Exception as err:  # a decoder bug or an input no check foresaw: this message only
            if "undecodable" not in self._logged_reasons:
                log.exception("bridge message could not be decoded")
            self._reject("undecodable", f"{type(err).__name__}: {err}")
            return
        finally:
            stats.record_time((time.perf_counter() - t0) * 1e3)
        self._forward(run, assembled)

    def _forward(self, run: _Run, assembled: AssembledTrain) -> None:
        train, stats = assembled.train, self.stats
        stats.trains_received += 1
        stats.frames_received += train.frames
        stats.processed += 1
        stats.bytes_processed += train.nbytes
        stats.notes.update(assembled.notes)
        stats.modules_missing.update(m for m in self.modules if not train.modules_present[m])
        if run.last_train_id is not None:
            if train.train_id > run.last_train_id + 1:
                stats.trains_missing += train.train_id - run.last_train_id - 1
            elif train.train_id <= run.last_train_id:
                stats.notes["train_id_not_increasing"] += 1
        run.last_train_id = stats.last_train_id = train.train_id
        stats.last_image_acquired = stats.frames_received - 1
        now = time.monotonic()
        stats.train_rate_meter.add(train.nbytes, now)
        for _ in range(train.frames):
            stats.rate_meter.add(train.nbytes // max(train.frames, 1), now)
        run.trains += 1
        run.frames += train.frames
        self.latest = train
        if not _offer(run.outbox, train):
            stats.frames_dropped["queue_full"] += train.frames
        if run.max_trains is not None and run.trains >= run.max_trains:
            with self._lock:
                if run.end is None:
                    run.end = EndOfSeries(run.series_id, EndReason.END_MESSAGE, frames_sent=run.frames,
                                          detail=f"{run.trains} trains received")

    def _finish(self, run: _Run, socket: zmq.Socket) -> zmq.Socket:
        """Emit the run's end (after its start, if that never went out), leaving no request in flight, so
        the next run does not begin with a train requested for this one. The bridge took that train off
        its queue when it got the request: its reply is the run's last train, not lost. After Stop it is
        awaited as long as any request (``request_timeout_s``: a slow bridge loses nothing), after Abort,
        a timeout or a failure ``LOOK_AHEAD_WAIT_S``. Only an unanswered request closes the socket, and
        its train is counted lost."""
        if self._awaiting_reply:
            assert run.end is not None
            graceful = run.end.reason in (EndReason.STOP, EndReason.END_MESSAGE)
            remaining_s = self.request_timeout_s - (self.pending_request_s() or 0.0)
            wait_s = max(remaining_s, LOOK_AHEAD_WAIT_S) if graceful else LOOK_AHEAD_WAIT_S
            if self._poll_unless_closing(socket, wait_s):
                parts = socket.recv_multipart(copy=False)
                self._awaiting_reply = False
                self._handle(run, parts)
        if self._awaiting_reply:
            self._count_unanswered()
        self._emit_end(run)
        if self._awaiting_reply:
            socket.close(linger=0)
            socket = self._open_socket()
        return socket

    def _poll_unless_closing(self, socket: zmq.Socket, wait_s: float) -> bool:
        """Poll for a reply up to ``wait_s``, giving up at once when the receiver is closed (Init)."""
        deadline = time.monotonic() + wait_s
        while not self._closing.is_set():
            if socket.poll(POLL_MS):
                return True
            if time.monotonic() >= deadline:
                return False
        return False

    def _count_unanswered(self) -> None:
        self.stats.requests_unanswered += 1
        log.warning("the request for a train to %s was never answered (%.1fs): that train is lost", self.endpoint,
                    self.pending_request_s() or 0.0)

    def _emit_end(self, run: _Run) -> None:
        """The run's start (if it never went out), then its end, downstream; the acquisition is told."""
        assert run.end is not None
        if not run.started:
            run.outbox.put(SeriesStart(series_id=run.series_id, config=None, received_s=time.time()))
            run.started = True
        run.outbox.put(run.end)
        with self._lock:
            if self._run is run:
                self._run = None
        if self.on_series_end is not None:
            self.on_series_end(run.end)

    def _reject(self, reason: str, detail: str) -> None:
        self.stats.rejected[reason] += 1
        if reason not in self._logged_reasons:
            self._logged_reasons.add(reason)
            log.warning("bridge message rejected (%s): %s; further ones counted only", reason, detail)


def _offer(outbox: FrameQueue[Item], train: Train) -> bool:
    """Put ``train``; False when a DROP-policy outbox is full. The explicit zero timeout keeps the socket
    thread from stalling even on a queue that only drops Eiger ``Frame``s; a BLOCK outbox blocks."""
    try:
        return outbox.put(train, timeout_s=0 if outbox.policy is FullPolicy.DROP else None)
    except queue.Full:
        return False

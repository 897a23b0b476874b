"""A Karabo bridge server socket (karabo-bridge-py protocol docs) and the one thread that owns it.

REP answers each ``b"next"`` with one train and any other request with ``b"Error: bad request <req>"``,
as karabo_bridge's server does; PUSH deals trains to the connected pullers. Trains are built by a
callback on the socket thread, by index from 0, so what goes out is whatever the callback encodes.

Pacing: train k is not sent before ``start + k × period_s`` (10 Hz at EuXFEL). A server
that falls behind (slow generation, slow client) restarts the schedule instead of bursting to catch up,
as a detector whose trains are simply gone. With ``n_trains`` the server stops after that many trains:
REP leaves later requests unanswered (a client sees its timeout, as with a bridge that has no data) and
PUSH sends nothing more; both keep the socket open until ``stop()`` so queued trains still arrive.
``reply_delay_s`` makes REP a slow bridge (one behind a busy correction pipeline, or a loaded host): each
train is sent no sooner than that long after its request, the first one too.

The send high-water mark is 1, as karabo_bridge sets it: a 64-cell raw train is 268 MB, and ZMQ queues
whole messages, so a deeper queue would only hold memory.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Sequence

import zmq

from .karabo_bridge_messages import Part
from .zmq_binding import bind_socket

log = logging.getLogger(__name__)

_POLL_MS = 20
NEXT_REQUEST = b"next"


class BridgeSocketType(enum.Enum):
    """Server-side ZMQ pattern; clients use REQ and PULL respectively (PUB is not simulated)."""

    REP = "REP"
    PUSH = "PUSH"

    @classmethod
    def of(cls, value: BridgeSocketType | str) -> BridgeSocketType:
        return value if isinstance(value, cls) else cls(str(value).upper())


TrainEncoder = Callable[[int], Sequence[Part]]


class KaraboBridgeServer:
    """Binds at construction (a busy port fails before any thread starts); ``start``/``stop`` the thread."""

    def __init__(
        self,
        encode_train: TrainEncoder,
        *,
        socket_type: BridgeSocketType | str = BridgeSocketType.REP,
        host: str = "127.0.0.1",
        port: int = 0,
        paced: bool = True,
        period_s: float = 0.1,
        n_trains: int | None = None,
        reply_delay_s: float = 0.0,
    ) -> None:
        if not reply_delay_s >= 0:
            raise ValueError(f"reply_delay_s must be >= 0, got {reply_delay_s}")
        self.socket_type = BridgeSocketType.of(socket_type)
        self.reply_delay_s = reply_delay_s
        self.paced = paced
        self.period_s = period_s
        self.n_trains = n_trains
        self.trains_sent = 0
        self.error: BaseException | None = None
        self._encode_train = encode_train
        kind = zmq.REP if self.socket_type is BridgeSocketType.REP else zmq.PUSH
        self._context, self._socket, self.endpoint = bind_socket(kind, host, port, what="Karabo bridge", send_hwm=1)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"karabo-bridge {self.endpoint}", daemon=True)
        self._closed = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop at once (a train being built is dropped, queued ones too), join the thread, close; idempotent."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        if not self._closed:
            self._closed = True
            self._socket.close(linger=0)
            self._context.term()

    @property
    def finished(self) -> bool:
        """True once ``n_trains`` were sent (never for an endless server)."""
        return self.n_trains is not None and self.trains_sent >= self.n_trains

    def _run(self) -> None:
        try:
            if self.socket_type is BridgeSocketType.REP:
                self._serve_requests()
            else:
                self._push_trains()
        except Exception as err:  # the thread ends; the owner sees ``error`` and the log says why
            log.exception("Karabo bridge %s stopped after %d trains", self.endpoint, self.trains_sent)
            self.error = err

    def _serve_requests(self) -> None:
        schedule = _Schedule(self.period_s)
        while not self._stopping.is_set() and not self.finished:
            if not self._socket.poll(_POLL_MS, zmq.POLLIN):
                continue
            request = self._socket.recv()
            if request != NEXT_REQUEST:
                log.warning("bad request %r on %s", request[:64], self.endpoint)
                self._socket.send(b"Error: bad request " + request)
                continue
            due_s = max(schedule.wait_s(self.trains_sent) if self.paced else 0.0, self.reply_delay_s)
            if due_s and self._stopping.wait(due_s):
                return
            if self._send(self._encode_train(self.trains_sent)):
                self.trains_sent += 1
        self._stopping.wait()

    def _push_trains(self) -> None:
        schedule = _Schedule(self.period_s)
        while not self._stopping.is_set() and not self.finished:
            parts = self._encode_train(self.trains_sent)
            if self.paced and self._stopping.wait(schedule.wait_s(self.trains_sent)):
                return
            if self._send(parts):
                self.trains_sent += 1
        self._stopping.wait()

    def _send(self, parts: Sequence[Part]) -> bool:
        """Send without blocking the stop request: False when stopping before ZMQ took the message."""
        while not self._stopping.is_set():
            try:
                self._socket.send_multipart(list(parts), flags=zmq.NOBLOCK, copy=False)
                return True
            except zmq.Again:
                self._socket.poll(_POLL_MS, zmq.POLLOUT)
        return False


class _Schedule:
    """Due times of trains ``period_s`` apart, re-anchored when the sender is late by a period or more."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self._anchor: float | None = None
        self._anchor_index = 0

    def wait_s(self, index: int) -> float:
        now = time.monotonic()
        if self._anchor is None:
            self._anchor, self._anchor_index = now, index
        due = self._anchor + (index - self._anchor_index) * self.period_s
        if now - due >= self.period_s:
            self._anchor, self._anchor_index = now, index
            return 0.0
        return max(0.0, due - now)

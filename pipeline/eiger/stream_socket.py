"""The PULL socket a stream receiver reads the DCU through, bounded in message size and kept connected.

ZMQ refuses a message part over ``ZMQ_MAXMSGSIZE`` by dropping the connection, and libzmq treats that as a
protocol error: the connecting side never reconnects on its own, so one oversized message would silence
the stream for good. The socket's monitor reports the drop; the next idle poll then replaces the socket with
a fresh one connected to the same endpoint. A DCU that restarts causes the same drop and the same cure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import zmq

log = logging.getLogger(__name__)


class StreamSocket:
    """One PULL connection to ``endpoint``; ``on_drop`` is told of each dropped connection it replaces."""

    def __init__(self, endpoint: str, *, receive_buffer_messages: int, max_message_bytes: int, poll_ms: int,
                 on_drop: Callable[[], None]) -> None:
        self.endpoint = endpoint
        self._on_drop = on_drop
        self._options = (
            (zmq.RCVHWM, receive_buffer_messages),
            (zmq.MAXMSGSIZE, max_message_bytes),
            (zmq.LINGER, 0),
            (zmq.RCVTIMEO, poll_ms),
        )
        self._max_message_bytes = max_message_bytes
        self._socket, self._monitor = self._connect()

    def recv(self) -> list[zmq.Frame] | None:
        """The next message, or None after ``poll_ms`` without one (when a dropped connection is replaced)."""
        try:
            return self._socket.recv_multipart(copy=False)
        except zmq.Again:
            if self._dropped():
                self._replace()
            return None

    def close(self) -> None:
        self._socket.disable_monitor()
        self._monitor.close(linger=0)
        self._socket.close(linger=0)

    def _connect(self) -> tuple[zmq.Socket, zmq.Socket]:
        socket = zmq.Context.instance().socket(zmq.PULL)
        for option, value in self._options:
            socket.setsockopt(option, value)
        monitor = socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        socket.connect(self.endpoint)
        return socket, monitor

    def _dropped(self) -> bool:
        dropped = False
        while self._monitor.poll(0):
            self._monitor.recv_multipart()
            dropped = True
        return dropped

    def _replace(self) -> None:
        self._on_drop()
        log.warning("the stream connection to %s dropped (a message part over %d MB, or the detector went "
                    "away); connecting again", self.endpoint, self._max_message_bytes // 2**20)
        self.close()
        self._socket, self._monitor = self._connect()

"""The sending end of a detector stream for tests: a PUSH socket on a free loopback port, as a DCU or a
Karabo bridge binds one. Used as a fixture by the receiver, hostile-stream and fuzz tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq


@pytest.fixture
def push() -> Iterator[tuple[zmq.Socket, str]]:
    """(socket, endpoint); no send limit, so a test's burst of messages never blocks on the receiver."""
    socket = zmq.Context.instance().socket(zmq.PUSH)
    socket.setsockopt(zmq.SNDHWM, 0)
    port = socket.bind_to_random_port("tcp://127.0.0.1")
    yield socket, f"tcp://127.0.0.1:{port}"
    socket.close(linger=0)

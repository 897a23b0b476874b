"""The EIGER stream receiver on the test's PUSH socket, started and closed around each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq

from detpipe.pipeline.eiger.stream_receiver import StreamReceiver


@pytest.fixture
def receiver(push: tuple[zmq.Socket, str]) -> Iterator[StreamReceiver]:
    """A running receiver; its thread must still be alive when the test ends (no ``failure``)."""
    r = StreamReceiver(push[1])
    r.start()
    yield r
    r.close()
    assert r.failure == ""

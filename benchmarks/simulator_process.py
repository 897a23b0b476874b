"""The EIGER simulator in its own process, as a real DCU is: it must not share a GIL with the receiver measured."""

from __future__ import annotations

import sys

from detpipe.devices.cli.embedded_database import free_tcp_port
from detpipe.devices.cli.managed_process import ManagedProcess

from .frames import DISTINCT_FRAMES

# A loaded machine can leave the receiver measured without a turn for a few seconds; the simulator then waits for
# it (ZMQ backpressure, as the stream of a DCU does up to its buffer) instead of dropping a message after 2 s.
SEND_TIMEOUT_S = 60.0


def unpaced_simulator(model: str = "4M") -> ManagedProcess:
    """A started-on-enter simulator streaming cached frames as fast as it can; see ``.rest_url`` and
    ``.stream_endpoint``."""
    rest_port, stream_port = free_tcp_port(), free_tcp_port()
    process = ManagedProcess(
        [sys.executable, "-m", "detpipe.simulators.eiger_cli", "--model", model, "--unpaced", "--seed", "3",
         "--distinct-frames", str(DISTINCT_FRAMES), "--rest-port", str(rest_port), "--stream-port", str(stream_port),
         "--send-timeout", str(SEND_TIMEOUT_S)],
        ready_marker="EIGER simulator ready",
    )
    process.rest_url = f"http://127.0.0.1:{rest_port}"  # type: ignore[attr-defined]
    process.stream_endpoint = f"tcp://127.0.0.1:{stream_port}"  # type: ignore[attr-defined]
    return process

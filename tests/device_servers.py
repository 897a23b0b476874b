"""detpipe device servers for the tests: a real server process on 127.0.0.1 without a database (pytango's
MultiDeviceTestContext, process=True, as pytango's testing documentation advises), always stopped by the end of
the test, and checked to have listened on 127.0.0.1 only (requests and events).

pytango's start-up handshake can fail when its first connection to the new server's admin device races the
server's export ("The connection request was delayed"); the context then never stops the process it forked,
which goes on running, and listening, behind every later test. Here a failed start is stopped for certain
and tried once more; a second failure is the test's failure.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import tango
from tango.test_context import MultiDeviceTestContext

from tests.listening import listening, on_wildcards

START_ATTEMPTS = 2


@contextmanager
def device_server(devices: Sequence[dict[str, Any]], *, timeout_s: float = 60) -> Iterator[MultiDeviceTestContext]:
    for attempt in range(1, START_ATTEMPTS + 1):
        context = MultiDeviceTestContext(devices, process=True, host="127.0.0.1", timeout=timeout_s)
        try:
            context.start()
        except (tango.DevFailed, RuntimeError):
            context.server = None  # its Kill would fail the same way: stop() then kills the process itself
            context.stop()
            if attempt == START_ATTEMPTS:
                raise
            continue
        try:
            yield context
            wildcards = on_wildcards(listening(context.thread.pid))  # events have been used by now
            assert not wildcards, f"a test's device server listens beyond 127.0.0.1: {wildcards}"
        finally:
            context.stop()
        return

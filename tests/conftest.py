"""Suite-wide guards: a test that leaves threads running fails."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

# bitshuffle uses OpenMP, and libgomp hangs in a forked child once the parent process has used it. The
# device servers under test are forked from this process (MultiDeviceTestContext(process=True)), and the
# HitFinder decodes bslz4 in the server (last_hit_image): one OpenMP thread keeps the fork safe. It must
# be set before bitshuffle is first imported, hence here. Real servers start as fresh processes.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Every ORB of this test process (its clients) and of the servers forked from it listens on loopback only:
# a server forked after a client call here inherits this process's ORB, which would otherwise keep omniORB's
# default endpoint (every interface) beside the -ORBendPoint the test context gives it. omniORB reads ORB*
# parameters from the environment; subprocess servers (demo, Sardana) inherit it too.
os.environ.setdefault("ORBendPoint", "giop:tcp:127.0.0.1:")

pytest_plugins = ["tests.stream_sockets"]  # the `push` fixture of the stream tests


def _new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    # pyzmq's process-wide garbage collector thread (started by the first zero-copy send) is no leak.
    return [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and type(t).__name__ != "GarbageCollectorThread"
    ]


@pytest.fixture(autouse=True)
def fail_test_on_leaked_threads() -> Iterator[None]:
    """Every thread a test starts (simulator servers, receivers, runners) must be joined by the end of the test:
    a leaked socket thread in this process would be inherited by the next forked device server."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    while (leaked := _new_threads(before)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not leaked, f"threads left running: {[t.name for t in leaked]}"

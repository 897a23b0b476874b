"""Fixtures for the simulator tests: simulators on loopback with OS-chosen ports, and a thread-leak guard."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from detpipe.simulators import EigerSimulator
from tests.simulators.eiger_sim_client import SimplonClient, StreamReceiver


def _new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    # pyzmq's process-wide garbage collector thread (started by the first zero-copy send) is no leak.
    return [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and type(t).__name__ != "GarbageCollectorThread"
    ]


@pytest.fixture(autouse=True)
def fail_test_on_leaked_threads() -> Iterator[None]:
    """Every simulator thread (HTTP server, handlers, stream sender) must be joined by stop()/kill()."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    while (leaked := _new_threads(before)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not leaked, f"threads left running: {[t.name for t in leaked]}"


@pytest.fixture
def make_sim() -> Iterator[Callable[..., EigerSimulator]]:
    """Starts simulators (500K unless told otherwise) and stops them after the test."""
    started: list[EigerSimulator] = []

    def make(model: str = "500K", **options: object) -> EigerSimulator:
        options.setdefault("seed", 7)
        sim = EigerSimulator(model, **options).start()  # type: ignore[arg-type]
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim: Callable[..., EigerSimulator]) -> EigerSimulator:
    return make_sim("500K", hit_fraction=0.5)


@pytest.fixture
def rest(sim: EigerSimulator) -> SimplonClient:
    return SimplonClient(sim.rest_url)


@pytest.fixture
def receiver(sim: EigerSimulator) -> Iterator[StreamReceiver]:
    pull = StreamReceiver(sim.stream_endpoint)
    yield pull
    pull.close()

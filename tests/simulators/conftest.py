"""Fixtures for the simulator tests: simulators on loopback with OS-chosen ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from detpipe.simulators import EigerSimulator
from tests.simulators.eiger_sim_client import SimplonClient, StreamReceiver


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

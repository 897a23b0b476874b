"""Fixtures that start a real EIGER simulator on 127.0.0.1 and a real detpipe server process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tango

from detpipe.devices.eiger_detector import EigerDetector
from detpipe.devices.nexus_writer import NexusWriter
from detpipe.simulators import EigerSimulator
from tests.device_servers import device_server

DETECTOR, WRITER = "test/eiger/1", "test/writer/1"


@pytest.fixture
def eiger_sim() -> Iterator[EigerSimulator]:
    with EigerSimulator(model="1M", host="127.0.0.1", rest_port=0, stream_port=0, seed=7, hit_fraction=0.2,
                        paced=False) as sim:
        yield sim


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


def server_devices(sim: EigerSimulator, data_root: Path, **detector_props: object) -> list[dict]:
    return [
        {"class": EigerDetector, "devices": [{"name": DETECTOR, "properties": {
            "DetectorUrl": sim.rest_url, "StreamEndpoint": sim.stream_endpoint, "WriterDevice": WRITER,
            "StreamTimeout": 3.0, **detector_props}}]},
        {"class": NexusWriter, "devices": [{"name": WRITER, "properties": {
            "DataRoots": [str(data_root)], "BufferFrames": 64}}]},
    ]


@pytest.fixture
def detpipe_server(request: pytest.FixtureRequest, eiger_sim: EigerSimulator,
                   data_root: Path) -> Iterator[tuple[tango.DeviceProxy, tango.DeviceProxy]]:
    """(detector, writer) proxies of a detpipe server process; ``indirect`` params set detector properties."""
    props = getattr(request, "param", {})
    with device_server(server_devices(eiger_sim, data_root, **props), timeout_s=30) as ctx:
        detector, writer = ctx.get_device(DETECTOR), ctx.get_device(WRITER)
        yield detector, writer

"""One EIGER stream spread over two receiver servers (config/demo-eiger-receivers.yaml, registered in a real
embedded Tango database): the controlling EigerDetector arms the simulated 4M, its fan-out sends blocks of
frames to each receiver's server, and the master it stitches reads back every frame equal to the simulator's,
for Stream V1 and V2. A receiver killed mid-series: the other goes on, its lost frames are counted, the master
stays valid with them as fill and ``written`` 0, and the controlling device ends in ALARM naming the receiver."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import h5py
import hdf5plugin  # noqa: F401 - registers filter 32008 for reading back
import numpy as np
import pytest
import tango

from detpipe.devices.cli.demo import DETECTOR, RECEIVER_WRITER, WRITER, config_file
from detpipe.devices.cli.embedded_database import EmbeddedTangoDatabase, free_tcp_port
from detpipe.devices.cli.managed_process import ManagedProcess
from detpipe.devices.state_wait import prepare, wait_until_saved
from detpipe.devices.tangodb.config_model import load_database_config
from detpipe.devices.tangodb.server_config import register
from detpipe.pipeline.nexus.series_stitching import WRITTEN_PATH
from detpipe.simulators import EigerSimulator
from detpipe.simulators.eiger_acquisition import DetectorState
from tests.waiting import wait_until

DETPIPE = [sys.executable, "-m", "detpipe.devices.cli"]
BLOCK = 4  # frames per data file, and per block of the fan-out
RECEIVERS = ("receiver-1", "receiver-2")


Simulator = TypeVar("Simulator")


@dataclass
class Topology(Generic[Simulator]):
    tango_host: str
    data: Path
    simulator: Simulator
    servers: dict[str, ManagedProcess] = field(default_factory=dict)

    def proxy(self, name: str) -> tango.DeviceProxy:
        """By full name: the Tango client keeps the first database it resolved a bare name through for the
        life of the process, and later tests bring databases of their own."""
        return tango.DeviceProxy(f"tango://{self.tango_host}/{name}")

    def database(self) -> tango.Database:
        host, port = self.tango_host.rsplit(":", 1)
        return tango.Database(host, int(port))


def start_server(instance: str, tango_host: str) -> ManagedProcess:
    return ManagedProcess([*DETPIPE, "server", instance, "--host", "127.0.0.1"],
                          ready_marker="Ready to accept request", env={"TANGO_HOST": tango_host}).start(120)


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology[EigerSimulator]]:
    root = tmp_path_factory.mktemp("receivers")
    data = root / "data"
    data.mkdir()
    with ExitStack() as stack:
        simulator = stack.enter_context(EigerSimulator("4M", seed=3, hit_fraction=0.2))
        db = stack.enter_context(EmbeddedTangoDatabase(root / "tango.db"))
        rest_port, stream_port = simulator.rest_url.rsplit(":", 1)[1], simulator.stream_endpoint.rsplit(":", 1)[1]
        register(db.client(), load_database_config(config_file("demo-eiger-receivers.yaml"), {
            "EIGER_REST_PORT": rest_port, "EIGER_STREAM_PORT": stream_port, "FAN_OUT_PORT_1": str(free_tcp_port()),
            "FAN_OUT_PORT_2": str(free_tcp_port()), "DATA_ROOT": str(data)}))
        found = Topology(db.tango_host, data, simulator)
        for instance in (*RECEIVERS, "demo"):
            found.servers[instance] = stack.enter_context(start_server(instance, db.tango_host))
        detector = found.proxy(DETECTOR)
        wait_until(detector.State, lambda state: state != tango.DevState.INIT, 60, "the detector connected")
        yield found


def set_up(topology: Topology, prefix: str, frames: int, expo_time_s: float) -> tango.DeviceProxy:
    detector, writer = topology.proxy(DETECTOR), topology.proxy(WRITER)
    for proxy, directory in [(writer, topology.data), *(
            (topology.proxy(RECEIVER_WRITER.format(k)), topology.data / f"receiver-{k}") for k in (1, 2))]:
        proxy.saving_directory, proxy.saving_prefix, proxy.saving_frame_per_file = str(directory), prefix, BLOCK
    detector.acq_nb_frames, detector.acq_expo_time = frames, expo_time_s
    return detector


def use_stream_format(topology: Topology, stream_format: str) -> None:
    """The controlling device's StreamFormat property, as Jive sets it: in the database, then Init."""
    topology.database().put_device_property(DETECTOR, {"StreamFormat": [stream_format]})
    detector = topology.proxy(DETECTOR)
    detector.Init()
    wait_until(detector.State, lambda state: state == tango.DevState.ON, 60, f"the detector on {stream_format}")


@pytest.mark.parametrize("stream_format", ["legacy", "cbor"], ids=["V1", "V2"])
def test_two_receivers_share_the_stream_and_the_master_reads_back_every_frame(
        topology: Topology, stream_format: str) -> None:
    frames = 3 * BLOCK + 2  # blocks to receiver 1, 2, 1, and a short last block to 2
    use_stream_format(topology, stream_format)
    detector = set_up(topology, f"{stream_format}_$id", frames, 0.005)
    prepare(detector, 300)
    detector.Start()
    assert wait_until_saved(detector, 120) == "Ready", detector.Status()
    assert detector.State() == tango.DevState.ON, detector.Status()
    assert detector.receivers_frames_written == frames and detector.frames_received == frames
    assert [line.split(",")[0] for line in detector.receivers_status] == [
        "eiger/receiver/1: ON", "eiger/receiver/2: ON"]
    assert "written by the receivers (eiger/receiver/1 8, eiger/receiver/2 6), 0 lost" in detector.Status()
    (master,) = topology.data.glob(f"{stream_format}_*_master.h5")
    for k in (1, 2):
        assert (topology.data / f"receiver-{k}" / master.name).exists()  # each receiver's own master beside its files
    with h5py.File(master) as handle:
        stack = handle["/entry/data/data"]
        assert stack.shape[0] == frames and handle[WRITTEN_PATH][()].all()
        for index in range(frames):
            np.testing.assert_array_equal(stack[index], topology.simulator.frames.pixels(index))
        hits = handle["/entry/process_01/results/is_hit"][()]
        assert (hits >= 0).all() and hits.sum() == detector.receivers_hits  # every frame triaged, by its receiver


def test_a_series_stopped_before_start_ends_on_every_receiver_and_gets_its_master(topology: Topology) -> None:
    detector = set_up(topology, "stopped_$id", 8, 0.005)
    prepare(detector, 300)
    detector.Stop()
    assert wait_until_saved(detector, 60) == "Ready", detector.Status()
    assert "ended before Start, 0 written by the receivers" in detector.Status()
    assert [line.split(",")[0] for line in detector.receivers_status] == [
        "eiger/receiver/1: ON", "eiger/receiver/2: ON"]
    (master,) = topology.data.glob("stopped_*_master.h5")
    with h5py.File(master) as handle:
        assert "end_time" in handle["/entry"] and handle[WRITTEN_PATH].shape == (0,)


def test_receivers_that_cannot_work_together_are_refused_by_name(topology: Topology) -> None:
    """A fan-out endpoint missing, then receivers whose files are split differently: FAULT with the reason,
    nothing armed; correcting them and Init or Reset brings the device back."""
    db, detector = topology.database(), topology.proxy(DETECTOR)
    endpoints = db.get_device_property(DETECTOR, "FanOutEndpoints")["FanOutEndpoints"]
    db.put_device_property(DETECTOR, {"FanOutEndpoints": list(endpoints)[:1]})
    detector.Init()
    assert detector.State() == tango.DevState.FAULT
    assert "FanOutEndpoints 1 endpoints: give one endpoint per receiver" in detector.Status()
    db.put_device_property(DETECTOR, {"FanOutEndpoints": list(endpoints)})
    detector.Init()
    wait_until(detector.State, lambda state: state == tango.DevState.ON, 60, "the detector back")
    set_up(topology, "refused_$id", 8, 0.005)
    topology.proxy(RECEIVER_WRITER.format(2)).saving_frame_per_file = BLOCK + 1
    detector.Prepare()
    wait_until(detector.State, lambda state: state == tango.DevState.FAULT, 60, "Prepare refused")
    assert "saving_frame_per_file is eiger/receiver/1 4, eiger/receiver/2 5" in detector.Status()
    detector.Reset()
    wait_until(detector.State, lambda state: state == tango.DevState.ON, 60, "the detector reset")
    assert [line.split(",")[0] for line in detector.receivers_status] == [
        "eiger/receiver/1: ON", "eiger/receiver/2: ON"]  # the receiver that took the series was aborted


def test_a_receiver_killed_mid_series_is_counted_lost_named_in_alarm_and_the_master_stays_valid(
        topology: Topology) -> None:
    frames = 40
    detector = set_up(topology, "killed_$id", frames, 0.05)
    prepare(detector, 300)
    detector.Start()
    first_writer = topology.proxy(RECEIVER_WRITER.format(2))
    wait_until(lambda: first_writer.frames_written, lambda n: n >= BLOCK + 1, 60, "receiver 2 writing its 2nd block")
    os.kill(topology.servers["receiver-2"].pid, signal.SIGKILL)
    assert wait_until_saved(detector, 120) == "Ready", detector.Status()
    status = detector.Status()
    assert detector.State() == tango.DevState.ALARM, status
    assert "eiger/receiver/2" in status and "lost" in status
    assert detector.frames_received == frames
    (master,) = topology.data.glob("killed_*_master.h5")
    with h5py.File(master) as handle:
        written = handle[WRITTEN_PATH][()].astype(bool)
        stack = handle["/entry/data/data"]
        assert stack.shape[0] == frames
        lost = np.flatnonzero(~written)
        assert len(lost) >= 1 and f"{len(lost)} lost" in status
        assert written[:BLOCK].all() and written[-BLOCK:].all()  # receiver 1's blocks, before and after the kill
        for index in range(frames):
            expected = topology.simulator.frames.pixels(index)
            if index in lost:
                expected = np.full_like(expected, np.iinfo(expected.dtype).max)  # the fill value
            np.testing.assert_array_equal(stack[index], expected)
    # The next Prepare needs every receiver: it fails at once naming the dead one, and nothing stays armed.
    detector.Prepare()
    wait_until(detector.State, lambda state: state == tango.DevState.FAULT, 60, "Prepare refused")
    assert "receiver eiger/receiver/2 refused series" in detector.Status()
    assert topology.simulator.state is DetectorState.IDLE  # disarmed again

"""Init (or Reset) of any device, in any step of an acquisition, leaves the whole server able to run the next
series: the series in progress is aborted with its files closed valid, and every device is released.

One server (EIGER simulator → EigerDetector → HitFinder → DataPolicy → NexusWriter) serves every case; each
case drives the acquisition into a step, re-initialises one device with the default 3 s client timeout, then
runs a complete series and checks its pixels against the simulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers the bitshuffle/LZ4 filters for reading
import numpy as np
import pytest
import tango

from detpipe.devices.data_policy import DataPolicy
from detpipe.devices.eiger_detector import EigerDetector
from detpipe.devices.hit_finder import HitFinder
from detpipe.devices.nexus_writer import NexusWriter
from detpipe.devices.state_wait import prepare, wait_until_saved, wait_while_state
from detpipe.simulators import EigerSimulator
from tests.device_servers import device_server
from tests.waiting import wait_until

DETECTOR, HIT_FINDER, POLICY, WRITER = "way/detector/1", "way/hitfinder/1", "way/policy/1", "way/writer/1"
DEVICES = (DETECTOR, HIT_FINDER, POLICY, WRITER)
BUSY = {tango.DevState.INIT, tango.DevState.MOVING, tango.DevState.RUNNING}
NEXT_SERIES_FRAMES = 12
WORKERS_START_S = 240.0


@dataclass
class Chain:
    sim: EigerSimulator
    data_root: Path
    proxies: dict[str, tango.DeviceProxy]

    def __getitem__(self, name: str) -> tango.DeviceProxy:
        return self.proxies[name]

    def settled(self) -> None:
        for name in DEVICES:
            wait_while_state(self[name], BUSY, WORKERS_START_S)

    def configure(self, frames: int, *, expo_s: float = 0.001, directory: Path | None = None) -> None:
        writer, detector = self[WRITER], self[DETECTOR]
        writer.saving_directory = str(directory or self.data_root)
        writer.saving_prefix = "series_$id"
        detector.acq_nb_frames = frames
        detector.acq_expo_time = expo_s


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    data_root = tmp_path_factory.mktemp("way_out")
    with EigerSimulator("1M", seed=5, hit_fraction=0.2, paced=True) as sim:
        devices = [
            {"class": EigerDetector, "devices": [{"name": DETECTOR, "properties": {
                "DetectorUrl": sim.rest_url, "StreamEndpoint": sim.stream_endpoint, "WriterDevice": WRITER,
                "HitFinderDevice": HIT_FINDER, "DataPolicyDevice": POLICY, "StreamTimeout": 5.0}}]},
            {"class": HitFinder, "devices": [{"name": HIT_FINDER, "properties": {"Workers": 1}}]},
            {"class": DataPolicy, "devices": [{"name": POLICY, "properties": {"WriterDevice": WRITER}}]},
            {"class": NexusWriter, "devices": [{"name": WRITER, "properties": {
                "DataRoots": [str(data_root)], "BufferFrames": 64}}]},
        ]
        with device_server(devices, timeout_s=60) as ctx:
            chain = Chain(sim, data_root, {name: ctx.get_device(name) for name in DEVICES})
            chain.settled()
            yield chain


# --- the steps an acquisition can be in when the operator re-initialises a device ---
def preparing(chain: Chain) -> None:
    chain.sim.arm_delay_s = 2.0
    chain.configure(400, expo_s=0.01)
    chain[DETECTOR].Prepare()
    assert chain[DETECTOR].State() == tango.DevState.MOVING


def armed(chain: Chain) -> None:
    chain.configure(400, expo_s=0.01)
    prepare(chain[DETECTOR])


def running(chain: Chain) -> None:
    armed(chain)
    chain[DETECTOR].Start()
    wait_until(lambda: chain[WRITER].frames_written, lambda n: n >= 5, 30, "frames_written")


def draining(chain: Chain) -> None:
    running(chain)
    chain[DETECTOR].Stop()


STEPS: dict[str, Callable[[Chain], None]] = {
    "preparing": preparing, "armed": armed, "running": running, "draining": draining}


def complete_series_runs(chain: Chain) -> None:
    """The next series: every frame written, pixels equal to the simulator's, every device idle afterwards."""
    chain.sim.arm_delay_s = 0.0
    chain.settled()
    detector, writer = chain[DETECTOR], chain[WRITER]
    assert detector.State() != tango.DevState.FAULT, detector.Status()
    chain.configure(NEXT_SERIES_FRAMES)
    prepare(detector)
    detector.Start()
    assert wait_until_saved(detector, 60) == "Ready", detector.Status()
    assert detector.frames_received == writer.frames_written == NEXT_SERIES_FRAMES
    with h5py.File(writer.master_file) as f:
        for i in (0, NEXT_SERIES_FRAMES - 1):
            np.testing.assert_array_equal(f["/entry/data/data"][i], chain.sim.frames.pixels(i))
    chain.settled()
    for name in DEVICES:
        assert chain[name].State() == tango.DevState.ON, f"{name}: {chain[name].Status()}"


def every_master_is_valid(chain: Chain) -> None:
    """Aborted series too: each master is a finished NXmx file, and the frames it links (none when the series
    was aborted before its first frame) read back."""
    for master in chain.data_root.rglob("*_master.h5"):
        with h5py.File(master) as f:
            assert f["/entry/definition"][()] == b"NXmx" and "end_time" in f["/entry"], master
            if "data" in f["/entry/data"]:
                stack = f["/entry/data/data"]
                if stack.shape[0]:
                    assert stack[-1].shape == stack.shape[1:], master


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("device", DEVICES)
def test_init_of_any_device_in_any_step_leaves_the_server_ready_for_a_complete_series(
        chain: Chain, device: str, step: str) -> None:
    STEPS[step](chain)

    chain[device].Init()

    if device != DETECTOR and step != "draining":
        wait_until(chain[DETECTOR].Status, lambda s: f"aborted by Init of {device}" in s, 30, "detector Status")
    complete_series_runs(chain)
    every_master_is_valid(chain)


@pytest.mark.parametrize("device", DEVICES)
def test_reset_of_any_device_mid_series_leaves_the_server_ready_for_a_complete_series(
        chain: Chain, device: str) -> None:
    running(chain)

    chain[device].Reset()

    if device != DETECTOR:
        wait_until(chain[DETECTOR].Status, lambda s: f"aborted by Reset of {device}" in s, 30, "detector Status")
    complete_series_runs(chain)
    every_master_is_valid(chain)


@pytest.mark.parametrize("command", ["Init", "Reset"])
def test_a_detector_in_fault_recovers_with_init_or_reset(chain: Chain, command: str) -> None:
    chain.configure(5)
    chain[WRITER].saving_prefix = "taken"
    (chain.data_root / "raw").mkdir(exist_ok=True)
    (chain.data_root / "raw" / "taken_master.h5").write_bytes(b"not ours")
    chain[DETECTOR].Prepare()
    assert wait_while_state(chain[DETECTOR], {tango.DevState.MOVING}, 30) == tango.DevState.FAULT

    chain[DETECTOR].command_inout(command)

    complete_series_runs(chain)
    assert (chain.data_root / "raw" / "taken_master.h5").read_bytes() == b"not ours"
    (chain.data_root / "raw" / "taken_master.h5").unlink()


@pytest.mark.parametrize("command", ["Init", "Reset"])
def test_a_writer_in_fault_after_a_failed_file_recovers_with_init_or_reset(chain: Chain, command: str) -> None:
    chain.configure(400, expo_s=0.01)
    prepare(chain[DETECTOR])
    blocker = chain.data_root / "raw" / f"series_{chain[DETECTOR].series_id}_data_000001.h5"
    blocker.mkdir()  # a directory where the first data file must go: the writer fails on the first frame
    chain[DETECTOR].Start()
    wait_until(chain[WRITER].State, lambda s: s == tango.DevState.FAULT, 30, "writer State")

    chain[WRITER].command_inout(command)

    complete_series_runs(chain)
    blocker.rmdir()


def test_frames_the_writer_could_not_write_are_counted_lost_on_the_detector(chain: Chain) -> None:
    """A writer that fails (here: its first data file cannot be created) used to leave the detector ON,
    "40 received, 0 dropped, 0 rejected", with nothing on disk."""
    chain.configure(40)
    prepare(chain[DETECTOR])
    blocker = chain.data_root / "raw" / f"series_{chain[DETECTOR].series_id}_data_000001.h5"
    blocker.mkdir()
    chain[DETECTOR].Start()
    wait_until(lambda: chain[DETECTOR].acq_status, lambda s: s != "Running", 60, "acq_status")
    assert chain[DETECTOR].State() == tango.DevState.ALARM, chain[DETECTOR].Status()
    assert "40 frames received but not written" in chain[DETECTOR].Status()
    chain[WRITER].Reset()
    blocker.rmdir()
    complete_series_runs(chain)


@pytest.mark.parametrize("step", ["armed", "running", "draining"])
def test_abort_returns_once_the_series_is_closed(chain: Chain, step: str) -> None:
    """Issue 14: when Abort returns, every device is out of the series and the master is finished, so the next
    settings are accepted at once (they were refused for up to 0.5 s)."""
    STEPS[step](chain)
    chain[DETECTOR].Abort()
    for name in DEVICES:
        assert chain[name].State() not in BUSY, f"{name}: {chain[name].Status()}"
    chain[WRITER].saving_prefix = "after_abort_$id"  # refused while the writer is still in the series
    with h5py.File(chain[WRITER].master_file) as f:
        assert "end_time" in f["/entry"]
    complete_series_runs(chain)

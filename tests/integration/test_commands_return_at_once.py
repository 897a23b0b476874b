"""Every command answers inside Tango's default 3 s client timeout: Prepare arms in the background (MOVING, then
STANDBY or FAULT), wrong-state commands are refused with a one-line reason, and blank properties mean "not set".

Every proxy here keeps the default timeout, so a command that waited for the detector would fail the test."""

from __future__ import annotations

from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers the bitshuffle/LZ4 filters for reading
import numpy as np
import pytest
import tango

from detpipe.devices.eiger_detector import EigerDetector
from detpipe.devices.hit_finder import HitFinder
from detpipe.devices.nexus_writer import NexusWriter
from detpipe.devices.state_wait import prepare, wait_until_saved, wait_while_state
from detpipe.simulators import EigerSimulator
from tests.device_servers import device_server
from tests.integration.conftest import DETECTOR, WRITER, server_devices
from tests.integration.test_eiger_slice import configure
from tests.waiting import wait_until

HIT_FINDER = "test/hitfinder/1"
ARM_DELAY_S = 4.0  # longer than the 3 s client timeout: Prepare must not wait for it
DEFAULT_TIMEOUT_MS = 3000


def one_line_reason(err: tango.DevFailed) -> str:
    return err.args[0].desc.strip()


def test_prepare_answers_at_once_and_arms_in_the_background_while_the_device_shows_moving(
        eiger_sim: EigerSimulator, data_root: Path) -> None:
    eiger_sim.arm_delay_s = ARM_DELAY_S
    with device_server(server_devices(eiger_sim, data_root)) as ctx:
        detector, writer = ctx.get_device(DETECTOR), ctx.get_device(WRITER)
        assert detector.get_timeout_millis() == DEFAULT_TIMEOUT_MS
        configure(detector, writer, data_root, 10)

        detector.Prepare()

        assert detector.State() == tango.DevState.MOVING
        assert detector.acq_status == "Configuration"
        assert "Preparing" in detector.Status()
        with pytest.raises(tango.DevFailed) as second_prepare:
            detector.Prepare()
        assert "already in progress" in one_line_reason(second_prepare.value)
        with pytest.raises(tango.DevFailed) as early_start:
            detector.Start()
        assert "Start once State is STANDBY" in one_line_reason(early_start.value)
        assert "\n" not in one_line_reason(early_start.value)
        with pytest.raises(tango.DevFailed, match="settings apply at Prepare"):
            detector.acq_nb_frames = 20

        assert wait_while_state(detector, {tango.DevState.MOVING}, 30) == tango.DevState.STANDBY
        detector.Start()
        assert wait_until_saved(detector, 60) == "Ready", detector.Status()
        assert detector.State() == tango.DevState.ON and writer.frames_written == 10
        with h5py.File(writer.master_file) as f:
            np.testing.assert_array_equal(f["/entry/data/data"][9], eiger_sim.frames.pixels(9))


def test_a_prepare_that_fails_ends_in_fault_with_the_reason_and_reset_leads_to_a_complete_series(
        detpipe_server, eiger_sim: EigerSimulator, data_root: Path) -> None:
    detector, writer = detpipe_server
    configure(detector, writer, data_root, 5, prefix="fixed")
    existing = data_root / "fixed_master.h5"
    existing.write_bytes(b"precious")

    detector.Prepare()

    state = wait_while_state(detector, {tango.DevState.MOVING}, 30)
    assert state == tango.DevState.FAULT
    assert "Prepare failed" in detector.Status() and "already exists" in detector.Status()
    assert existing.read_bytes() == b"precious"
    with pytest.raises(tango.DevFailed, match="Reset first"):
        detector.Prepare()
    detector.Reset()
    wait_while_state(detector, {tango.DevState.INIT}, 30)
    writer.saving_prefix = "series_$id"
    prepare(detector)
    detector.Start()
    assert wait_until_saved(detector, 60) == "Ready", detector.Status()
    assert writer.frames_written == 5 and existing.read_bytes() == b"precious"


def test_a_second_prepare_of_an_armed_series_ends_it_and_arms_the_next(detpipe_server, eiger_sim: EigerSimulator,
                                                                         data_root: Path) -> None:
    detector, writer = detpipe_server
    configure(detector, writer, data_root, 4)
    prepare(detector)
    first = detector.series_id

    prepare(detector)

    assert detector.series_id != first
    detector.Start()
    assert wait_until_saved(detector, 60) == "Ready", detector.Status()
    assert writer.frames_written == 4 and detector.State() == tango.DevState.ON, detector.Status()
    with h5py.File(data_root / f"series_{first}_master.h5") as f:  # the first series, closed without frames
        assert "end_time" in f["/entry"]


def test_stop_and_abort_answer_at_once_are_safe_to_repeat_and_end_the_series_with_every_frame_received(
        eiger_sim: EigerSimulator, data_root: Path) -> None:
    eiger_sim.paced = True
    with device_server(server_devices(eiger_sim, data_root)) as ctx:
        detector, writer = ctx.get_device(DETECTOR), ctx.get_device(WRITER)
        detector.Stop()  # nothing to stop: not an error
        detector.Abort()
        configure(detector, writer, data_root, 400, expo_s=0.02)
        prepare(detector)
        detector.Start()
        wait_until(lambda: detector.frames_received, lambda n: n >= 10, 30, "frames_received")
        detector.Stop()
        detector.Stop()
        detector.Abort()  # escalates the drain: files closed with what was queued
        assert wait_until_saved(detector, 30) == "Ready", detector.Status()
        received = detector.frames_received
        assert 10 <= received < 400 and writer.frames_written == received
        with h5py.File(writer.master_file) as f:
            assert f["/entry/data/data"].shape[0] == received


@pytest.mark.parametrize("blank", ["", " ", "   "], ids=["empty", "space", "spaces"])
def test_blank_device_properties_mean_not_set(eiger_sim: EigerSimulator, data_root: Path, blank: str) -> None:
    devices = server_devices(eiger_sim, data_root, HitFinderDevice=blank, DataPolicyDevice=blank)
    devices[1]["devices"][0]["properties"]["DataRoots"] = [str(data_root), blank]
    with device_server(devices) as ctx:
        detector, writer = ctx.get_device(DETECTOR), ctx.get_device(WRITER)
        configure(detector, writer, data_root, 5)
        prepare(detector)
        detector.Start()
        assert wait_until_saved(detector, 60) == "Ready", detector.Status()
        assert writer.frames_written == 5


def test_the_hit_finder_builds_the_detectors_geometry_before_the_first_prepare(
        eiger_sim: EigerSimulator, data_root: Path) -> None:
    devices = [
        *server_devices(eiger_sim, data_root, HitFinderDevice=HIT_FINDER),
        {"class": HitFinder, "devices": [{"name": HIT_FINDER, "properties": {"Workers": 1}}]},
    ]
    with device_server(devices) as ctx:
        detector, finder = ctx.get_device(DETECTOR), ctx.get_device(HIT_FINDER)
        wait_until(lambda: finder.geometry_ready, bool, 240, "geometry_ready")  # no Prepare was ever called
        assert detector.State() == tango.DevState.ON
        finder.min_res = 20.0  # a parameter that shapes the geometry: rebuilt at once, in the background
        wait_until(lambda: finder.geometry_ready, bool, 60, "geometry_ready after a parameter change")
        prepare(detector)
        assert detector.State() == tango.DevState.STANDBY


def test_every_class_answers_a_prepare_of_a_detector_that_never_connects(data_root: Path) -> None:
    """A DCU that is down: the device reports it (FAULT after its connection attempt), Prepare is refused at once."""
    devices = [
        {"class": EigerDetector, "devices": [{"name": DETECTOR, "properties": {
            "DetectorUrl": "http://127.0.0.1:9", "StreamEndpoint": "tcp://127.0.0.1:9", "WriterDevice": WRITER,
            "HttpTimeout": 1.0}}]},
        {"class": NexusWriter, "devices": [{"name": WRITER, "properties": {"DataRoots": [str(data_root)]}}]},
    ]
    with device_server(devices) as ctx:
        detector = ctx.get_device(DETECTOR)
        assert wait_while_state(detector, {tango.DevState.INIT}, 30) == tango.DevState.FAULT
        assert "unreachable" in detector.Status()
        with pytest.raises(tango.DevFailed, match="Reset first"):
            detector.Prepare()
        detector.Reset()  # reconnects in the background: answers at once even though the DCU stays down
        assert wait_while_state(detector, {tango.DevState.INIT}, 30) == tango.DevState.FAULT

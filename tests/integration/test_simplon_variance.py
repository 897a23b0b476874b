"""A detpipe server against SIMPLON DCUs that deviate from the documented API (issue 15, items 1, 2, 3 and 5):
side-effect keys that cannot be read, HTTP 5xx answers, no version endpoint, and the pixel mask every NXmx
master must carry whatever the header detail."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
import tango

from detpipe.devices.state_wait import prepare
from detpipe.simulators import EigerSimulator
from tests.device_servers import device_server
from tests.integration.conftest import DETECTOR, WRITER, server_devices
from tests.integration.test_eiger_slice import acquire, configure
from tests.waiting import wait_until

FRAMES = 6
UNREADABLE = {"threshold/2/energy": 404, "countrate_correction_count_cutoff": 500}


@pytest.fixture
def dcu(eiger_sim: EigerSimulator) -> Iterator[EigerSimulator]:
    """The shared simulator, its REST deviations back to the documented behaviour after the test."""
    yield eiger_sim
    eiger_sim.rest_deviations(version_endpoint=True, unreadable_changed_keys={}, failing_requests={})


def started(sim: EigerSimulator, data_root: Path, **detector_props: object):
    return device_server(server_devices(sim, data_root, **detector_props), timeout_s=30)


def connected(detector: tango.DeviceProxy) -> tango.DevState:
    return wait_until(detector.State, lambda s: s != tango.DevState.INIT, 20, "State")


def complete_series(detector: tango.DeviceProxy, writer: tango.DeviceProxy, data_root: Path, prefix: str) -> Path:
    configure(detector, writer, data_root, FRAMES, prefix=prefix)
    assert acquire(detector) == "Ready", detector.Status()
    assert writer.frames_written == FRAMES
    return Path(writer.master_file)


def test_prepare_succeeds_against_a_dcu_listing_changed_keys_it_cannot_read(dcu, data_root: Path) -> None:
    dcu.rest_deviations(unreadable_changed_keys=UNREADABLE)
    with started(dcu, data_root) as ctx:
        detector, writer = ctx.get_device(DETECTOR), ctx.get_device(WRITER)
        assert connected(detector) == tango.DevState.ON, detector.Status()
        configure(detector, writer, data_root, FRAMES, prefix="unreadable_$id")
        prepare(detector)
        assert sorted(detector.unreadable_keys) == sorted(UNREADABLE)
        assert "2 changed keys unreadable on the DCU (countrate_correction_count_cutoff, threshold/2/energy)" \
            in detector.Status()
        detector.Start()
        assert wait_until(lambda: detector.acq_status, lambda s: s != "Running", 60, "acq_status") == "Ready"
        assert writer.frames_written == FRAMES
        assert detector.State() == tango.DevState.ON and "changed keys unreadable" in detector.Status()


def test_a_5xx_answer_reads_as_answered_with_its_message_not_unreachable(dcu, data_root: Path) -> None:
    dcu.rest_deviations(failing_requests={"arm": "high voltage not ready"})
    with started(dcu, data_root) as ctx:
        detector, writer = ctx.get_device(DETECTOR), ctx.get_device(WRITER)
        assert connected(detector) == tango.DevState.ON, detector.Status()
        configure(detector, writer, data_root, FRAMES, prefix="failed_arm_$id")
        detector.Prepare()
        state = wait_until(detector.State, lambda s: s != tango.DevState.MOVING, 20, "State")
        status = detector.Status()
        assert state == tango.DevState.FAULT
        assert "answered HTTP 500: high voltage not ready" in status
        assert "unreachable" not in status and "DetectorUrl" not in status
        dcu.rest_deviations(failing_requests={})
        detector.Reset()
        assert connected(detector) == tango.DevState.ON, detector.Status()
        complete_series(detector, writer, data_root, "after_failed_arm_$id")


def test_a_5xx_answer_at_start_up_names_the_status_and_message(dcu, data_root: Path) -> None:
    dcu.rest_deviations(failing_requests={"state": "detector module not ready"})
    with started(dcu, data_root) as ctx:
        detector = ctx.get_device(DETECTOR)
        assert connected(detector) == tango.DevState.FAULT
        assert "answered HTTP 500: detector module not ready" in detector.Status()
        assert "unreachable" not in detector.Status()
        assert detector.detector_state == "answered HTTP 500"


def test_start_up_against_a_dcu_without_version_endpoint_probes_the_version(dcu, data_root: Path) -> None:
    dcu.rest_deviations(version_endpoint=False)
    with started(dcu, data_root) as ctx:
        detector, writer = ctx.get_device(DETECTOR), ctx.get_device(WRITER)
        assert connected(detector) == tango.DevState.ON, detector.Status()
        assert f"SIMPLON API {dcu.api_version} (probed: the DCU has no /detector/api/version/)" in detector.Status()
        assert detector.api_version == dcu.api_version
        complete_series(detector, writer, data_root, "probed_$id")


@pytest.mark.parametrize("props", [{"HeaderDetail": "basic"}, {"HeaderDetail": "none"}, {}],
                         ids=["header_basic", "header_none", "default"])
def test_every_master_has_the_detectors_pixel_mask(dcu, data_root: Path, props: dict) -> None:
    with started(dcu, data_root, **props) as ctx:
        detector, writer = ctx.get_device(DETECTOR), ctx.get_device(WRITER)
        assert connected(detector) == tango.DevState.ON, detector.Status()
        master = complete_series(detector, writer, data_root, "mask_$id")
        with h5py.File(master) as f:
            mask = f["/entry/instrument/detector/pixel_mask"][()]
        np.testing.assert_array_equal(mask, dcu.frames.pixel_mask)
        assert mask.any()

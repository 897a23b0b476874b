"""Stream accounting against DCUs that deviate from the simulator's defaults (issue 15, items 6 and 7): frames
of the armed series are never mixed with messages of other series, and every end says where it came from."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tango

from detpipe.simulators import EigerSimulator
from tests.device_servers import device_server
from tests.integration.conftest import DETECTOR, WRITER, server_devices
from tests.integration.test_eiger_slice import acquire, configure

FRAMES = 12


@pytest.fixture
def chain(eiger_sim: EigerSimulator, data_root: Path) -> Iterator[tuple[tango.DeviceProxy, tango.DeviceProxy]]:
    with device_server(server_devices(eiger_sim, data_root), timeout_s=30) as ctx:
        yield ctx.get_device(DETECTOR), ctx.get_device(WRITER)
    eiger_sim.dcu_deviations(stream_id_offset=0, duplicate_end_at_disarm=False, end_message=True)


def complete_series(detector: tango.DeviceProxy, writer: tango.DeviceProxy, data_root: Path, prefix: str) -> None:
    configure(detector, writer, data_root, FRAMES, prefix=prefix)
    assert acquire(detector) == "Ready", detector.Status()
    assert writer.frames_written == FRAMES


def test_a_dcu_whose_stream_ids_differ_from_its_arm_ids_ends_in_fault_naming_both(
        chain, eiger_sim: EigerSimulator, data_root: Path) -> None:
    detector, writer = chain
    eiger_sim.dcu_deviations(stream_id_offset=1000)
    configure(detector, writer, data_root, FRAMES, prefix="mismatch_$id")
    acquire(detector)
    assert detector.State() == tango.DevState.FAULT
    armed = int(Path(writer.master_file).name.split("_")[1])
    assert f"arm answered series {armed} but the stream carries series {armed + 1000}" in detector.Status()
    assert detector.frames_received == 0 and writer.frames_written == 0
    assert not Path(writer.master_file).exists()  # no header of the armed series came: no file at all
    assert writer.State() == tango.DevState.ON, writer.Status()
    eiger_sim.dcu_deviations(stream_id_offset=0)
    detector.Reset()
    complete_series(detector, writer, data_root, "after_mismatch_$id")


def test_a_second_end_message_at_disarm_is_a_late_message_not_an_alarm(
        chain, eiger_sim: EigerSimulator, data_root: Path) -> None:
    detector, writer = chain
    eiger_sim.dcu_deviations(duplicate_end_at_disarm=True)
    complete_series(detector, writer, data_root, "first_$id")
    complete_series(detector, writer, data_root, "second_$id")
    assert detector.State() == tango.DevState.ON, detector.Status()
    assert detector.late_messages == 1 and detector.frames_rejected == 0
    assert "1 late messages of earlier series" in detector.Status()


def test_an_end_detpipe_makes_after_disarm_says_no_end_message_came(
        chain, eiger_sim: EigerSimulator, data_root: Path) -> None:
    detector, writer = chain
    eiger_sim.dcu_deviations(end_message=False)
    complete_series(detector, writer, data_root, "no_end_$id")
    assert "done (disarmed)" in detector.Status()
    eiger_sim.dcu_deviations(end_message=True)
    complete_series(detector, writer, data_root, "with_end_$id")
    assert "done (end_message)" in detector.Status()

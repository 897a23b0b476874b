"""Clients (Taurus, Sardana) rely on pushed events: State on every change, counters with their final value."""

from __future__ import annotations

import threading
from pathlib import Path

import tango

from tests.integration.test_eiger_slice import acquire, configure
from tests.waiting import wait_until

FRAMES = 30


class EventLog:
    def __init__(self) -> None:
        self.values: list = []
        self._lock = threading.Lock()

    def push_event(self, event: tango.EventData) -> None:
        if not event.err:
            with self._lock:
                self.values.append(event.attr_value.value)

    def snapshot(self) -> list:
        with self._lock:
            return list(self.values)


def test_state_changes_and_final_counters_are_pushed_as_change_events(detpipe_server, data_root: Path) -> None:
    detector, writer = detpipe_server
    configure(detector, writer, data_root, FRAMES)
    states, written, acquired, acq_status = EventLog(), EventLog(), EventLog(), EventLog()
    ids = [
        (detector, detector.subscribe_event("State", tango.EventType.CHANGE_EVENT, states)),
        (writer, writer.subscribe_event("frames_written", tango.EventType.CHANGE_EVENT, written)),
        (detector, detector.subscribe_event("last_image_acquired", tango.EventType.CHANGE_EVENT, acquired)),
        (detector, detector.subscribe_event("acq_status", tango.EventType.CHANGE_EVENT, acq_status)),
    ]
    try:
        assert acquire(detector) == "Ready"
        wait_until(written.snapshot, lambda v: v and v[-1] == FRAMES, 5, "frames_written events")
        wait_until(states.snapshot, lambda v: v and v[-1] == tango.DevState.ON, 5, "State events")
        seen = states.snapshot()
        assert {tango.DevState.MOVING, tango.DevState.STANDBY, tango.DevState.RUNNING} <= set(seen), seen
        moving = seen.index(tango.DevState.MOVING)  # Prepare in the background, the way a motor moves
        assert moving < seen.index(tango.DevState.STANDBY, moving) < seen.index(tango.DevState.RUNNING, moving)
        statuses = acq_status.snapshot()
        assert statuses[-1] == "Ready" and "Configuration" in statuses
        assert statuses.index("Configuration") < statuses.index("Running", statuses.index("Configuration"))
        assert acquired.snapshot()[-1] == FRAMES - 1
    finally:
        for device, event_id in ids:
            device.unsubscribe_event(event_id)


def test_every_attribute_is_self_describing_for_jive(detpipe_server) -> None:
    for device in detpipe_server:
        for config in device.get_attribute_config(device.get_attribute_list()):
            if config.name in ("State", "Status"):
                continue
            assert config.description and config.description != "No description", config.name
            if config.data_format == tango.AttrDataFormat.SCALAR and config.data_type in (
                tango.CmdArgType.DevLong, tango.CmdArgType.DevLong64
            ):
                assert config.format == "%d", config.name

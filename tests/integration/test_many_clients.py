"""Twenty clients polling a server as hard as they can do not starve the control plane: a fresh client is
answered within 1 s right after, on every device."""

from __future__ import annotations

import threading
import time

import tango


def test_a_fresh_client_is_answered_within_a_second_after_twenty_pollers(detpipe_server) -> None:
    detector, writer = detpipe_server
    names = [detector.dev_name(), writer.dev_name()]
    until = time.monotonic() + 5.0
    reads = [0] * 20

    def poll(k: int) -> None:
        proxy = tango.DeviceProxy(names[k % 2])
        attributes = ["frames_received", "acq_status", "State", "Status"] if k % 2 == 0 else \
            ["frames_written", "saving_directory", "State", "Status"]
        while time.monotonic() < until:
            proxy.read_attributes(attributes)
            reads[k] += 1

    pollers = [threading.Thread(target=poll, args=(k,)) for k in range(20)]
    for thread in pollers:
        thread.start()
    for thread in pollers:
        thread.join()
    assert all(reads), reads
    for name in names:
        fresh = tango.DeviceProxy(name)
        fresh.set_timeout_millis(1000)
        assert fresh.State() in (tango.DevState.ON, tango.DevState.STANDBY)
        fresh.read_attribute("Status")

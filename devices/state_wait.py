"""How a Tango client drives a detpipe detector: every command returns at once, and the client waits on State.

Prepare → MOVING while the detector is armed and the files claimed → STANDBY (or FAULT with the reason);
Start → RUNNING until the writer has saved the last frame → ON (or ALARM). The demo and the benchmarks use
these helpers with Tango's default 3 s client timeout; tests use them too, so they drive the devices exactly
as a user's script would.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import tango

POLL_S = 0.05
PREPARE_TIMEOUT_S = 600.0  # the first Prepare on a machine may wait for the hit finder to compile peakfinder8


class AcquisitionFailed(RuntimeError):
    """The detector ended a step in a state other than the expected one; the message is its Status."""

    def __init__(self, device: tango.DeviceProxy, step: str, state: tango.DevState, status: str) -> None:
        super().__init__(f"{device.name()} {step} ended in {state}: {status}")
        self.state, self.status = state, status


def wait_while_state(device: tango.DeviceProxy, states: set[tango.DevState], timeout_s: float,
                     on_status: Callable[[str], None] | None = None) -> tango.DevState:
    """Poll State until it is none of ``states``; ``on_status`` hears each new Status line meanwhile and the
    one it ends with, each once (a Status read just after State may already be the final one)."""
    deadline = time.monotonic() + timeout_s
    last_status = ""

    def report() -> None:
        nonlocal last_status
        if on_status is not None and (status := device.Status()) != last_status:
            on_status(status)
            last_status = status

    while (state := device.State()) in states:
        report()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{device.name()} still {state} after {timeout_s:.0f}s: {device.Status()}")
        time.sleep(POLL_S)
    report()
    return state


def prepare(device: tango.DeviceProxy, timeout_s: float = PREPARE_TIMEOUT_S,
            on_status: Callable[[str], None] | None = None) -> None:
    """Prepare and wait until armed (STANDBY); raises ``AcquisitionFailed`` with the Status otherwise."""
    device.Prepare()
    state = wait_while_state(device, {tango.DevState.MOVING}, timeout_s, on_status)
    if state != tango.DevState.STANDBY:
        raise AcquisitionFailed(device, "Prepare", state, device.Status())


def wait_until_saved(device: tango.DeviceProxy, timeout_s: float,
                     on_progress: Callable[[], None] | None = None, progress_every_s: float = 2.0) -> str:
    """Poll acq_status until the series is saved (Ready) or failed (Fault); returns it. ``on_progress`` is
    called every ``progress_every_s`` meanwhile."""
    deadline = time.monotonic() + timeout_s
    next_report = time.monotonic() + progress_every_s
    while (status := device.acq_status) in ("Running", "Configuration"):
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"{device.name()} still running after {timeout_s:.0f}s: {device.Status()}")
        if on_progress is not None and now > next_report:
            on_progress()
            next_report = now + progress_every_s
        time.sleep(POLL_S)
    return status

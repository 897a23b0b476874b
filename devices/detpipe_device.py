"""What every detpipe device shares: State/Status with events, and throttled counter events.

Each device subclass lists its event-carrying counters in ``EVENT_ATTRIBUTES`` and derives its State
from its engine in ``assess()``; one monitor task per device refreshes both every 40 ms (25 Hz).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from tango import DevState, GreenMode
from tango.server import Device

from .event_throttle import EventThrottle

log = logging.getLogger(__name__)

MONITOR_PERIOD_S = 0.04


class DetpipeDevice(Device):
    """Base of detpipe devices: asyncio green mode, real State and Status, pushed on every change."""

    green_mode = GreenMode.Asyncio
    DEVICE_CLASS_INITIAL_STATE = DevState.INIT
    EVENT_ATTRIBUTES: ClassVar[tuple[str, ...]] = ()

    async def init_device(self) -> None:
        await super().init_device()
        for name in ("State", "Status"):
            self.set_change_event(name, True, False)
        for name in self.EVENT_ATTRIBUTES:
            self.set_change_event(name, True, False)
        self._throttle = EventThrottle(self._push_value)
        self._fault: str | None = None
        self._monitor: asyncio.Task[None] | None = None

    def start_monitor(self) -> None:
        self._monitor = asyncio.create_task(self._monitor_loop(), name=f"{self.get_name()} monitor")
        self._monitor.add_done_callback(self._on_monitor_done)

    async def stop_monitor(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
            self._monitor = None

    def set_fault(self, reason: str) -> None:
        """Enter FAULT with ``reason`` as Status; only ``Reset`` leaves it."""
        log.error("%s FAULT: %s", self.get_name(), reason)
        self._fault = reason
        self.set_state_and_status(DevState.FAULT, reason)

    def clear_fault(self) -> None:
        self._fault = None

    def set_state_and_status(self, state: DevState, status: str) -> None:
        status = as_latin1(status)
        changed = state != self.get_state() or status != self.get_status()
        self.set_state(state)
        self.set_status(status)
        if changed:
            self.push_change_event("State", state)
            self.push_change_event("Status", status)

    def assess(self) -> tuple[DevState, str]:
        """(State, Status) derived from the engine; subclasses override it. FAULT is handled here."""
        return self.get_state(), self.get_status()

    def event_values(self) -> dict[str, Any]:
        """Current values of ``EVENT_ATTRIBUTES``, read from the engine."""
        return {}

    def refresh(self, *, force: bool = False) -> None:
        if self._fault is None:
            self.set_state_and_status(*self.assess())
        for name, value in self.event_values().items():
            self._throttle.offer(name, value, force=force)

    async def dev_state(self) -> DevState:
        """A State read is always current, not as old as the last monitor tick."""
        self.refresh()
        return self.get_state()

    async def dev_status(self) -> str:
        self.refresh()
        return self.get_status()

    def _push_value(self, name: str, value: Any) -> None:
        self.push_change_event(name, value)

    async def _monitor_loop(self) -> None:
        while True:
            self.refresh()
            await asyncio.sleep(MONITOR_PERIOD_S)

    def _on_monitor_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.set_fault(f"monitor stopped: {task.exception()!r}")


_LATIN1_SPELLINGS = str.maketrans({"…": "...", "≥": ">=", "≤": "<=", "×": "x", "—": "-", "–": "-", "→": "->"})


def as_latin1(text: str) -> str:
    """Tango strings are Latin-1; engine messages may quote file names or symbols that are not."""
    return text.translate(_LATIN1_SPELLINGS).encode("latin-1", "replace").decode("latin-1")

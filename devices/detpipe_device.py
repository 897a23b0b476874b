"""What every detpipe device shares: State/Status with events, throttled counter events, properties where a
blank value means "not set", and the way out of a series (Init/Reset) that every device offers.

Each device subclass lists its event-carrying counters in ``EVENT_ATTRIBUTES`` and derives its State
from its engine in ``assess()``; one monitor task per device refreshes both every 40 ms (25 Hz).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Protocol

from tango import DevState, GreenMode, Util
from tango.server import Device, device_property

from detpipe.pipeline.core.errors import one_line

from .event_throttle import EventThrottle

log = logging.getLogger(__name__)

MONITOR_PERIOD_S = 0.04
# Init and Reset must answer well inside Tango's 3 s client timeout, also on a loaded machine: this is what
# they may spend waiting for a series to end and for threads to stop; the rest finishes in the background.
RELEASE_BUDGET_S = 1.5
CLOSE_WAIT_S = 0.5  # an engine thread polls its socket or queue every 20-100 ms


class SeriesEngine(Protocol):
    """What Init/Reset needs of a device's engine thread (StageRunner, TriageDispatcher)."""

    in_series: bool

    def end_series_now(self, detail: str) -> bool: ...


class SeriesSource(Protocol):
    """What a downstream device needs of a detector device feeding it: Init/Reset abort its series; a hit
    finder rebuilds the geometry it last gave (kind, config)."""

    triage_geometry: tuple[Any, Any] | None

    def routes_through(self, device_name: str) -> bool: ...

    async def abort_series(self, cause: str, timeout_s: float) -> None: ...


async def wait_for(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.01) -> bool:
    """True once ``condition()`` holds, False if it still does not after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(poll_s)
    return True


async def settle(work: Iterable[asyncio.Future[Any]], timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for ``work`` to finish without cancelling it; True if all of it did."""
    pending = [w for w in work if not w.done()]
    if not pending:
        return True
    _, still = await asyncio.wait(pending, timeout=max(timeout_s, 0.0))
    return not still


def in_background(call: Callable[[], object]) -> asyncio.Future[object]:
    """A blocking engine call (joining a thread, closing files) on a worker thread, as an awaitable."""
    return asyncio.ensure_future(asyncio.to_thread(call))


class DetpipeDevice(Device):
    """Base of detpipe devices: asyncio green mode, real State and Status, pushed on every change."""

    green_mode = GreenMode.Asyncio
    DEVICE_CLASS_INITIAL_STATE = DevState.INIT
    EVENT_ATTRIBUTES: ClassVar[tuple[str, ...]] = ()

    async def init_device(self) -> None:
        await super().init_device()
        self._blank_properties_unset()
        for name in ("State", "Status"):
            self.set_change_event(name, True, False)
        for name in self.EVENT_ATTRIBUTES:
            self.set_change_event(name, True, False)
        self._throttle = EventThrottle(self._push_value)
        self._fault: str | None = None
        self._monitor: asyncio.Task[None] | None = None

    def _blank_properties_unset(self) -> None:
        """A blank property value means "not set", wherever it came from: the Tango database cannot store an
        empty string (Jive, dsconfig and registration store " "), and a test context passes "" as it is.
        Values are stripped; a blank one takes the property's default, blank list entries are dropped."""
        for cls in type(self).__mro__:
            for name, prop in vars(cls).items():
                if isinstance(prop, device_property) and name in self._tango_properties:
                    self._tango_properties[name] = _unblanked(name, self._tango_properties[name], prop)

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

    # --- the way out of a series: Init and Reset ---
    def feeding_detectors(self) -> list[SeriesSource]:
        """The detector devices of this server whose series pass through this device."""
        name = self.get_name()
        return [device for device in Util.instance().get_device_list("*")
                if hasattr(device, "routes_through") and device.routes_through(name)]

    def series_engines(self) -> list[SeriesEngine]:
        """This device's engine threads that carry a series; downstream devices override it."""
        return []

    async def release_series(self, cause: str, timeout_s: float = RELEASE_BUDGET_S) -> None:
        """Init/Reset of a downstream device: abort every series passing through it (files closed valid,
        the detector says why), then end whatever is still open here because its source vanished."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        why = f"{cause} of {self.get_name()}"
        for detector in self.feeding_detectors():
            await detector.abort_series(why, deadline - loop.time())
        engines = self.series_engines()
        if await wait_for(lambda: not any(e.in_series for e in engines), min(0.2, deadline - loop.time())):
            return
        for engine in engines:
            if engine.in_series and engine.end_series_now(why):
                log.warning("%s: ended a series nothing else would end (%s)", self.get_name(), why)
        await wait_for(lambda: not any(e.in_series for e in engines), deadline - loop.time())

    def _push_value(self, name: str, value: Any) -> None:
        self.push_change_event(name, value)

    async def _monitor_loop(self) -> None:
        """Never ends but by cancellation: a tick that raises is logged (its first time) and the next tick
        runs, so State, Status and events keep flowing whatever one odd value did."""
        failed: set[str] = set()
        while True:
            try:
                self.refresh()
            except Exception as err:  # noqa: BLE001 - the monitor outlives any one tick
                if type(err).__name__ not in failed:
                    failed.add(type(err).__name__)
                    log.exception("%s: monitor tick failed; the monitor goes on", self.get_name())
            await asyncio.sleep(MONITOR_PERIOD_S)

    def _on_monitor_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.set_fault(f"monitor stopped: {task.exception()!r}")


def _unblanked(name: str, value: Any, prop: device_property) -> Any:
    if isinstance(value, str):
        value = value.strip()
        if not value:
            if prop.mandatory:
                raise ValueError(f"property {name} is mandatory but empty; set it (Jive, detpipe register) and Init")
            return prop.default_value if prop.default_value is not None else ""
        return value
    if isinstance(value, Iterable) and all(isinstance(v, str) for v in value):  # StdStringVector, list…
        kept = [v.strip() for v in value if v.strip()]
        if not kept and prop.mandatory:
            raise ValueError(f"property {name} is mandatory but empty; set it (Jive, detpipe register) and Init")
        return kept if kept or prop.default_value is None else prop.default_value
    return value


_LATIN1_SPELLINGS = str.maketrans({"…": "...", "≥": ">=", "≤": "<=", "×": "x", "—": "-", "–": "-", "→": "->"})


def unusable_file(prop: str, path: str, err: BaseException) -> str:
    """Status of a device whose file property cannot be used: only this device is in FAULT, Init re-reads it."""
    return f"{prop} {path} cannot be used ({one_line(err)}); fix the file or the property, then Init"


def as_latin1(text: str) -> str:
    """Tango strings are Latin-1; engine messages may quote file names or symbols that are not."""
    return text.translate(_LATIN1_SPELLINGS).encode("latin-1", "replace").decode("latin-1")

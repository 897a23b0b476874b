"""The receivers a controlling device runs with its own acquisition, seen from that device: one Tango client per
receiver, wherever its server runs: the EigerReceivers an EigerDetector's fan-out feeds, or the AgipdDetectors of
the other module groups of an AGIPD run. Blocking calls are made from worker threads of the controlling device;
the waits are coroutines that read in worker threads.

A receiver that does not answer is named in the error (Prepare) or in its reading (counters, State): one
vanished receiver never makes the others' counters unreadable.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tango import DevFailed, DeviceProxy, DevState, GreenMode

from detpipe.pipeline.nexus.series_stitching import ReceiverShare

log = logging.getLogger(__name__)

CLIENT_TIMEOUT_MS = 2500  # every receiver command returns at once; a slower answer is a receiver in trouble
EIGER_COUNTERS = ("frames_received", "frames_written", "frames_dropped", "hits")
RECEIVER_READY_TIMEOUT_S = 600.0  # a receiver's first Prepare may wait for its hit finder to compile peakfinder8
RECEIVER_DRAIN_TIMEOUT_S = 120.0
POLL_S = 0.1
_BUSY = (DevState.MOVING, DevState.RUNNING)


def _reason(err: Exception) -> str:
    """One line: a DevFailed's first description line (its others are CORBA detail), else the message."""
    if isinstance(err, DevFailed) and err.args:
        return str(err.args[0].desc).strip().splitlines()[0]
    return str(err)


class ReceiverUnavailable(RuntimeError):
    def __init__(self, name: str, what: str, err: Exception) -> None:
        super().__init__(f"receiver {name} {what}: {_reason(err)}")
        self.name = name


@dataclass(frozen=True, slots=True)
class ReceiverReading:
    """One receiver's State and counters as last read; ``state`` None when it did not answer."""

    name: str
    state: DevState | None
    status: str
    counters: dict[str, int]

    def line(self) -> str:
        if self.state is None:
            return f"{self.name}: not answering ({self.status})"
        counts = ", ".join(f"{value} {name.replace('frames_', '')}" for name, value in self.counters.items())
        return f"{self.name}: {self.state}, {counts}"


class ReceiverGroup:
    """``counters`` are the integer attributes every receiver has and each reading carries."""

    def __init__(self, names: Sequence[str], counters: Sequence[str] = EIGER_COUNTERS) -> None:
        self.names = list(names)
        self.counters = tuple(counters)
        self._proxies: dict[str, DeviceProxy] = {}

    def _proxy(self, name: str) -> DeviceProxy:
        if name not in self._proxies:
            proxy = DeviceProxy(name, green_mode=GreenMode.Synchronous)
            proxy.set_timeout_millis(CLIENT_TIMEOUT_MS)
            self._proxies[name] = proxy
        return self._proxies[name]

    def prepare(self, series_id: int) -> tuple[list[ReceiverShare], int]:
        """``PrepareSeries`` on every receiver: their masters, and the one block length their data files share
        (each receiver's writer ``saving_frame_per_file``); raises ``ReceiverUnavailable`` naming the first
        receiver that refused or did not answer, or whose files are split differently."""
        shares, lengths = [], {}
        for name in self.names:
            try:
                reply = json.loads(self._proxy(name).command_inout("PrepareSeries", series_id))
            except (DevFailed, ValueError) as err:
                raise ReceiverUnavailable(name, f"refused series {series_id}", err) from None
            shares.append(ReceiverShare(name, Path(reply["master_file"])))
            lengths[name] = int(reply["frames_per_file"])
        if len(set(lengths.values())) > 1:
            split = ", ".join(f"{name} {n}" for name, n in lengths.items())
            raise ReceiverUnavailable(self.names[0], "and the others split files differently",
                                      ValueError(f"saving_frame_per_file is {split}: set the same on every "
                                                 "receiver's writer, so each data file is one block of frames"))
        return shares, lengths[self.names[0]]

    def configure_and_prepare(self, settings: dict[str, int]) -> None:
        """Write ``settings`` (attribute: value) and Prepare on every receiver; raises ``ReceiverUnavailable``
        naming the first that refused or did not answer."""
        for name in self.names:
            try:
                proxy = self._proxy(name)
                proxy.write_attributes(list(settings.items()))
                proxy.command_inout("Prepare")
            except DevFailed as err:
                raise ReceiverUnavailable(name, "refused Prepare", err) from None

    def command_all(self, command: str) -> None:
        """``command`` (Start, Stop, Abort) on every receiver; raises naming the first that refused."""
        for name in self.names:
            try:
                self._proxy(name).command_inout(command)
            except DevFailed as err:
                raise ReceiverUnavailable(name, f"refused {command}", err) from None

    def command_quietly(self, command: str) -> None:
        """``command`` on every receiver that answers, logging those that do not: cleanup after a failed Prepare
        (which already has its error), or passing on a Stop or Abort (a receiver gone is named at the end)."""
        for name in self.names:
            try:
                self._proxy(name).command_inout(command)
            except DevFailed as err:
                log.warning("receiver %s: %s failed: %s", name, command, err)

    async def wait_armed(self, on_step: Callable[[str], None]) -> None:
        """Until every receiver is listening (STANDBY); raises with the Status of one that failed."""
        for name in self.names:
            on_step(f"waiting for receiver {name} to be ready")
            reading = await self.reading_when(name, lambda r: r.state not in (DevState.MOVING, DevState.ON),
                                              RECEIVER_READY_TIMEOUT_S)
            if reading is None:
                raise TimeoutError(f"receiver {name} not ready after {RECEIVER_READY_TIMEOUT_S:.0f}s")
            if reading.state != DevState.STANDBY:
                raise ReceiverUnavailable(name, "could not prepare", RuntimeError(reading.status))
        on_step("")

    async def wait_finished(self) -> list[str]:
        """Until each receiver has closed its files (or is gone); returns those that did not finish, as
        "name (why)"."""
        unfinished = []
        for name in self.names:
            reading = await self.reading_when(name, lambda r: r.state not in (*_BUSY, DevState.STANDBY),
                                              RECEIVER_DRAIN_TIMEOUT_S)
            if reading is None:
                unfinished.append(f"{name} (still writing after {RECEIVER_DRAIN_TIMEOUT_S:.0f}s)")
            elif reading.state is None:
                unfinished.append(f"{name} ({reading.status})")
        return unfinished

    async def reading_when(self, name: str, done: Callable[[ReceiverReading], bool],
                           timeout_s: float) -> ReceiverReading | None:
        """Receiver ``name``'s reading once ``done`` holds for it or it does not answer (its state None);
        None after ``timeout_s``. The Tango reads run in a worker thread."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            reading = await asyncio.to_thread(self.reading, name)
            if reading.state is None or done(reading):
                return reading
            await asyncio.sleep(POLL_S)
        return None

    def readings(self) -> list[ReceiverReading]:
        return [self.reading(name) for name in self.names]

    def reading(self, name: str) -> ReceiverReading:
        try:
            proxy = self._proxy(name)
            state, status = proxy.State(), proxy.Status()
            values = proxy.read_attributes(list(self.counters))
        except DevFailed as err:
            return ReceiverReading(name, None, _reason(err), {})
        counters = {c: int(v.value) for c, v in zip(self.counters, values) if not v.has_failed and v.value is not None}
        if unread := [c for c in self.counters if c not in counters]:
            log.warning("receiver %s: %s not readable", name, ", ".join(unread))
        return ReceiverReading(name, state, status, counters)

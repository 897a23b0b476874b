"""The receivers an EigerDetector's fan-out feeds, seen from the controlling device: one Tango client per
EigerReceiver, wherever its server runs. Blocking calls, made from worker threads of the controlling device.

A receiver that does not answer is named in the error (Prepare) or in its reading (counters, State): one
vanished receiver never makes the others' counters unreadable.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tango import DevFailed, DeviceProxy, DevState, GreenMode

from detpipe.pipeline.nexus.series_stitching import ReceiverShare

log = logging.getLogger(__name__)

CLIENT_TIMEOUT_MS = 2500  # every receiver command returns at once; a slower answer is a receiver in trouble
COUNTERS = ("frames_received", "frames_written", "frames_dropped", "hits")


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
    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
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

    def command_all(self, command: str) -> None:
        """``command`` (Start, Stop, Abort) on every receiver; raises naming the first that refused."""
        for name in self.names:
            try:
                self._proxy(name).command_inout(command)
            except DevFailed as err:
                raise ReceiverUnavailable(name, f"refused {command}", err) from None

    def abort_quietly(self) -> None:
        """Abort on every receiver that answers: cleanup after a failed Prepare, which already has its error."""
        for name in self.names:
            try:
                self._proxy(name).command_inout("Abort")
            except DevFailed as err:
                log.warning("receiver %s: Abort during cleanup failed: %s", name, err)

    def readings(self) -> list[ReceiverReading]:
        return [self.reading(name) for name in self.names]

    def reading(self, name: str) -> ReceiverReading:
        try:
            proxy = self._proxy(name)
            state, status = proxy.State(), proxy.Status()
            values = proxy.read_attributes(list(COUNTERS))
        except DevFailed as err:
            return ReceiverReading(name, None, _reason(err), {})
        counters = {c: int(v.value) for c, v in zip(COUNTERS, values) if not v.has_failed and v.value is not None}
        if unread := [c for c in COUNTERS if c not in counters]:
            log.warning("receiver %s: %s not readable", name, ", ".join(unread))
        return ReceiverReading(name, state, status, counters)

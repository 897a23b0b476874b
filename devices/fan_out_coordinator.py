"""How an EigerDetector with ``Receivers`` runs one series over several receivers (docs/scale_out.md): its
stream goes to a fan-out, each receiver is prepared and started with the detector, and once every receiver
has closed its files the one master is stitched over them. The detector device keeps the SIMPLON sequence;
this keeps the receivers in step with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tango import DevState

from detpipe.pipeline.core.file_clock import file_time_s
from detpipe.pipeline.core.series import EndOfSeries, SeriesStart
from detpipe.pipeline.core.stage import Item
from detpipe.pipeline.eiger.stream_fan_out import StreamFanOut
from detpipe.pipeline.nexus.series_stitching import ReceiverShare, StitchedSeries, stitch_series

from .nexus_writer import NexusWriter
from .receiver_group import ReceiverGroup, ReceiverReading, ReceiverUnavailable

log = logging.getLogger(__name__)

RECEIVER_READY_TIMEOUT_S = 600.0  # a receiver's first Prepare may wait for its hit finder to compile peakfinder8
RECEIVER_DRAIN_TIMEOUT_S = 120.0
POLL_S = 0.1
_BUSY = (DevState.MOVING, DevState.RUNNING)


class SeriesBoundaries:
    """The fan-out's local outbox: it keeps the series start and end it saw (the frames went to the receivers)."""

    def __init__(self) -> None:
        self.start: SeriesStart | None = None
        self.end: EndOfSeries | None = None

    def put(self, item: Item) -> bool:
        if isinstance(item, SeriesStart):
            self.start = item
        elif isinstance(item, EndOfSeries):
            self.end = item
        return True


@dataclass
class _Series:
    series_id: int
    master: Path
    shares: list[ReceiverShare]
    boundaries: SeriesBoundaries


class FanOutCoordinator:
    def __init__(self, fan_out: StreamFanOut, receivers: Sequence[str]) -> None:
        self.fan_out = fan_out
        self.group = ReceiverGroup(receivers)
        self._series: _Series | None = None
        self.last: StitchedSeries | None = None
        self.unanswered: list[str] = []  # receivers that did not finish the last series: "name (why)"

    def claim(self, series_id: int, writer: NexusWriter) -> SeriesBoundaries:
        """In the engine's thread, once the detector is armed: the master's name here, every receiver's files
        and the block length (their data files' length). Raises naming the receiver that refused."""
        master = writer.prepare(series_id)
        try:
            shares, block_frames = self.group.prepare(series_id)
        except ReceiverUnavailable:
            self.group.abort_quietly()  # those that took the series stop listening for it
            raise
        self.fan_out.distribute(block_frames)
        self._series = _Series(series_id, master, shares, SeriesBoundaries())
        self.last, self.unanswered = None, []
        return self._series.boundaries

    async def wait_armed(self, on_step: Callable[[str], None]) -> None:
        """Until every receiver is listening (STANDBY); raises with the Status of one that failed."""
        for name in self.group.names:
            on_step(f"waiting for receiver {name} to be ready")
            reading: list[ReceiverReading] = []

            def armed(name: str = name) -> bool:
                reading[:] = [r for r in self.group.readings() if r.name == name]
                return reading[0].state not in (DevState.MOVING, DevState.ON)

            if not await _polled(armed, RECEIVER_READY_TIMEOUT_S):
                raise TimeoutError(f"receiver {name} not ready after {RECEIVER_READY_TIMEOUT_S:.0f}s")
            if reading[0].state != DevState.STANDBY:
                raise ReceiverUnavailable(name, "could not prepare", RuntimeError(reading[0].status))
        on_step("")

    async def start(self) -> None:
        await asyncio.to_thread(self.group.command_all, "Start")

    async def finish(self, writer: NexusWriter) -> StitchedSeries:
        """After the detector's series ended: wait until each receiver has closed its files (or is gone),
        then stitch the master; returns what it holds."""
        series = self._series
        assert series is not None
        for name in self.group.names:
            done = await _polled(lambda name=name: self._finished(name), RECEIVER_DRAIN_TIMEOUT_S)
            if not done:
                self.unanswered.append(f"{name} (still writing after {RECEIVER_DRAIN_TIMEOUT_S:.0f}s)")
        stats, boundaries = self.fan_out.stats, series.boundaries
        start = boundaries.start or SeriesStart(series.series_id)
        params = writer.saving_params
        self.last = await asyncio.to_thread(
            stitch_series, series.master, start, series.shares, stats.last_image_acquired + 1,
            instrument_name=params.instrument_name, source_name=params.source_name, end_s=file_time_s())
        return self.last

    def _finished(self, name: str) -> bool:
        reading = next(r for r in self.group.readings() if r.name == name)
        if reading.state is None:
            if not any(u.startswith(f"{name} ") for u in self.unanswered):
                self.unanswered.append(f"{name} ({reading.status})")
            return True
        return reading.state not in _BUSY and reading.state != DevState.STANDBY

    def losses(self) -> str:
        """The receivers that lost frames and why, for Status; empty when none did."""
        gone = [f"{link.name} {link.gone}, {link.frames_lost} frames of its blocks not sent"
                for link in self.fan_out.gone]
        gone += [f"{entry} did not finish the series" for entry in self.unanswered]
        return "; ".join(gone)


async def _polled(condition: Callable[[], bool], timeout_s: float) -> bool:
    """``condition`` (blocking Tango reads) polled in a worker thread until true or ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(condition):
            return True
        await asyncio.sleep(POLL_S)
    return False

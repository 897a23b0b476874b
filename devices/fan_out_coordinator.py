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
from detpipe.pipeline.core.series import SeriesStart
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
    """The fan-out's local outbox: it keeps the series start for the master (the frames went to the receivers;
    the end reaches the acquisition through the receive thread's callback)."""

    def __init__(self) -> None:
        self.start: SeriesStart | None = None

    def put(self, item: Item) -> bool:
        if isinstance(item, SeriesStart):
            self.start = item
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
        self.unanswered = []
        return self._series.boundaries

    async def wait_armed(self, on_step: Callable[[str], None]) -> None:
        """Until every receiver is listening (STANDBY); raises with the Status of one that failed."""
        for name in self.group.names:
            on_step(f"waiting for receiver {name} to be ready")
            reading = await self._reading_when(name, lambda r: r.state not in (DevState.MOVING, DevState.ON),
                                               RECEIVER_READY_TIMEOUT_S)
            if reading is None:
                raise TimeoutError(f"receiver {name} not ready after {RECEIVER_READY_TIMEOUT_S:.0f}s")
            if reading.state != DevState.STANDBY:
                raise ReceiverUnavailable(name, "could not prepare", RuntimeError(reading.status))
        on_step("")

    async def start(self) -> None:
        await asyncio.to_thread(self.group.command_all, "Start")

    async def finish(self, writer: NexusWriter) -> StitchedSeries:
        """After the detector's series ended: wait until each receiver has closed its files (or is gone),
        then stitch the master; returns what it holds."""
        series = self._series
        assert series is not None
        for name in self.group.names:
            reading = await self._reading_when(name, lambda r: r.state not in (*_BUSY, DevState.STANDBY),
                                               RECEIVER_DRAIN_TIMEOUT_S)
            if reading is None:
                self.unanswered.append(f"{name} (still writing after {RECEIVER_DRAIN_TIMEOUT_S:.0f}s)")
            elif reading.state is None:
                self.unanswered.append(f"{name} ({reading.status})")
        stats, boundaries = self.fan_out.stats, series.boundaries
        start = boundaries.start or SeriesStart(series.series_id)
        params = writer.saving_params
        return await asyncio.to_thread(
            stitch_series, series.master, start, series.shares, stats.last_image_acquired + 1,
            instrument_name=params.instrument_name, source_name=params.source_name, end_s=file_time_s())

    async def _reading_when(self, name: str, done: Callable[[ReceiverReading], bool],
                            timeout_s: float) -> ReceiverReading | None:
        """Receiver ``name``'s reading once ``done`` holds for it or it does not answer (its state None);
        None after ``timeout_s``. The Tango reads run in a worker thread."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            reading = await asyncio.to_thread(self.group.reading, name)
            if reading.state is None or done(reading):
                return reading
            await asyncio.sleep(POLL_S)
        return None

    def losses(self) -> str:
        """The receivers that lost frames and why, for Status; empty when none did."""
        gone = [f"{link.name} {link.gone}, {link.frames_lost} frames of its blocks not sent"
                for link in self.fan_out.gone]
        gone += [f"{entry} did not finish the series" for entry in self.unanswered]
        return "; ".join(gone)

"""How an EigerDetector with ``Receivers`` runs one series over several receivers (docs/scale_out.md): its
stream goes to a fan-out, each receiver is prepared and started with the detector, and once every receiver
has closed its files the one master is stitched over them. The detector device keeps the SIMPLON sequence;
this keeps the receivers in step with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from detpipe.pipeline.core.file_clock import file_time_s
from detpipe.pipeline.core.series import SeriesStart
from detpipe.pipeline.core.stage import Item
from detpipe.pipeline.eiger.stream_fan_out import StreamFanOut
from detpipe.pipeline.nexus.series_stitching import ReceiverShare, StitchedSeries, stitch_series

from .nexus_writer import NexusWriter
from .receiver_group import ReceiverGroup, ReceiverUnavailable

log = logging.getLogger(__name__)


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
            self.group.command_quietly("Abort")  # those that took the series stop listening for it
            raise
        self.fan_out.distribute(block_frames)
        self._series = _Series(series_id, master, shares, SeriesBoundaries())
        self.unanswered = []
        return self._series.boundaries

    async def start(self) -> None:
        await asyncio.to_thread(self.group.command_all, "Start")

    async def finish(self, writer: NexusWriter) -> StitchedSeries:
        """After the detector's series ended: wait until each receiver has closed its files (or is gone),
        then stitch the master; returns what it holds."""
        series = self._series
        assert series is not None
        self.unanswered = await self.group.wait_finished()
        stats, boundaries = self.fan_out.stats, series.boundaries
        start = boundaries.start or SeriesStart(series.series_id)
        params = writer.saving_params
        return await asyncio.to_thread(
            stitch_series, series.master, start, series.shares, stats.last_image_acquired + 1,
            instrument_name=params.instrument_name, source_name=params.source_name, end_s=file_time_s())

    def losses(self) -> str:
        """The receivers that lost frames and why, for Status; empty when none did."""
        gone = [f"{link.name} {link.gone}, {link.frames_lost} frames of its blocks not sent"
                for link in self.fan_out.gone]
        gone += [f"{entry} did not finish the series" for entry in self.unanswered]
        return "; ".join(gone)

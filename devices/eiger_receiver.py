"""Tango face of one receiver behind an EIGER fan-out: its share of the stream, its hit finder and writer.

An EigerDetector with ``Receivers`` arms the detector and drives every receiver through ``PrepareSeries`` and
``Start``; the receiver takes the blocks of frames the fan-out sends it, writes them in its own folder
(``WriterDevice``'s saving directory, on its own disk), and closes its files when the fan-out's end arrives.
Operators see its State and counters as of any detector device; the controlling device sums them.
"""

from __future__ import annotations

import asyncio
import json

from tango import DevState
from tango.server import attribute, command, device_property

from detpipe.pipeline.core.saving_target import series_file_names
from detpipe.pipeline.core.series import EndReason
from detpipe.pipeline.eiger.acquisition import Phase
from detpipe.pipeline.eiger.stream_follower import StreamFollower
from detpipe.pipeline.eiger.stream_receiver import StreamReceiver
from detpipe.pipeline.triage.setup import DetectorKind

from .stream_device import StreamDevice


class EigerReceiver(StreamDevice):
    """One receiver of an EIGER stream spread over several (docs/scale_out.md). PrepareSeries(series id)
    claims the files and listens (MOVING, then STANDBY); Start waits for the series (RUNNING) until the
    fan-out's end has reached the writer, then ON, or ALARM when frames were dropped here."""

    detector_kind = DetectorKind.EIGER

    StreamEndpoint = device_property(
        dtype=str, mandatory=True,
        doc="Mandatory. ZMQ endpoint the controlling EigerDetector's fan-out binds for this receiver (its "
            "FanOutEndpoints entry), e.g. tcp://control-host:9101",
    )

    async def init_device(self) -> None:
        await super().init_device()
        self.start_stream(StreamReceiver(self.StreamEndpoint))
        self._follower = StreamFollower(self._receiver)
        self._next_series_id: int | None = None
        self._summary = f"Ready: receiving from {self.StreamEndpoint}"
        if self.DataPolicyDevice:
            self.set_fault("a receiver behind a fan-out writes raw NXmx files only: leave DataPolicyDevice empty "
                           "(reduce the stitched series afterwards with detpipe reduce)")
        self.start_monitor()

    @property
    def armed(self) -> bool:
        return self._follower.phase is not Phase.IDLE and not self.acquiring

    @property
    def acquisition_label(self) -> str:
        return f"Series {self._follower.series_id}"

    # --- State ---
    def assess(self) -> tuple[DevState, str]:
        stats = self._receiver.stats
        if fault := self.stream_fault():
            return fault
        if self.preparing:
            return DevState.MOVING, f"Preparing to receive series {self._next_series_id}: {self.prepare_step}"
        if self.armed:
            return DevState.STANDBY, f"Listening for series {self._follower.series_id} on {self.StreamEndpoint}"
        if self.acquiring:
            return self.running_state(stats.frames_dropped_total), (
                f"Receiving series {self._follower.series_id}: {stats.frames_received} frames received, "
                f"{stats.frames_dropped_total} dropped{self.ending_note()}")
        if stats.frames_dropped_total or stats.rejected_total or self.frames_lost:
            return DevState.ALARM, self._summary
        return DevState.ON, self._summary

    # --- what the controlling device reads ---
    @attribute(label="Frames written", dtype=int, unit="frame", format="%d",
               description="Frames of this receiver's share of the series its writer has on disk")
    async def frames_written(self) -> int:
        return self._writer().frames_written_in_series

    @attribute(label="Hits", dtype=int, unit="frame", format="%d",
               description="Hits among this receiver's frames (0 without a hit finder)")
    async def hits(self) -> int:
        finder = self._hit_finder()
        return finder.hits_in_series if finder is not None else 0

    @attribute(label="Series id", dtype=int, format="%d",
               description="Series this receiver was last prepared for; -1 before")
    async def series_id(self) -> int:
        return -1 if self._follower.series_id is None else self._follower.series_id

    @command(dtype_in=int, doc_in="Series id the controlling device's arm returned", dtype_out=str,
             doc_out="JSON: master_file (the master this receiver's writer claims) and frames_per_file")
    async def PrepareSeries(self, series_id: int) -> str:
        """Claim the files of ``series_id`` and listen for it, in the background (MOVING, then STANDBY, or FAULT
        with the reason). Returns at once what the controlling device needs to stitch the series: where this
        receiver's master will be and how many frames each of its data files holds (its block length)."""
        self.check_can_prepare()
        params = self._writer().saving_params
        self._next_series_id = series_id
        self.start_prepare()
        return json.dumps({"master_file": str(series_file_names(params, series_id).master),
                           "frames_per_file": params.frames_per_file})

    # --- engine steps of the commands (DetectorDevice) ---
    async def prepare_series(self) -> None:
        await self.wait_for_chain()
        series_id = self._next_series_id
        assert series_id is not None
        await self.engine_call(lambda: self._follower.prepare(series_id, self.claim_series))
        await self.expect_series(None)
        self._summary = f"Series {series_id} prepared"

    async def acquire_series(self) -> None:
        series_id = self._follower.series_id
        end = await asyncio.to_thread(self._follower.acquire)
        note = await self.wait_series_written()
        stats = self._receiver.stats
        lost = self.unwritten_note(stats.frames_received - stats.frames_dropped_total)
        self._summary = (f"Series {series_id} done ({end.reason.value}): {stats.frames_received} frames received, "
                         f"{stats.frames_dropped_total} dropped, {stats.rejected_total} rejected{lost}{note}")

    def abandon_engine(self) -> None:
        self._follower.abandon()

    def end_engine_series(self, reason: EndReason) -> None:
        self._follower.end(reason, f"{reason.value} command")

    @command
    async def Reset(self) -> None:
        """Abort any series (files closed valid), leave FAULT and clear the counters. Returns at once."""
        await self.abort_series(f"Reset of {self.get_name()}")
        self.clear_fault()
        self._receiver.stats.reset()
        self.refresh(force=True)

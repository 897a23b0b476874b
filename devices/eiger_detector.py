"""Tango face of an EIGER: SIMPLON control plus the stream receiver, in LImA's vocabulary.

Frames go from the receiver straight into the writer device's queue in the same process; only
settings, counters and State travel through Tango.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
from tango import AttrWriteType, DevState
from tango.server import attribute, command, device_property

from detpipe.pipeline.core.errors import DetectorFailed, DetectorRefused, DetectorUnreachable
from detpipe.pipeline.core.frame_queue import FrameQueue
from detpipe.pipeline.core.live_view import frame_picture
from detpipe.pipeline.core.series import EndReason
from detpipe.pipeline.core.stage import Item
from detpipe.pipeline.eiger.acquisition import EigerAcquisition, Phase, SeriesIdMismatch
from detpipe.pipeline.eiger.acquisition_params import COMPRESSIONS, TriggerMode
from detpipe.pipeline.eiger.simplon_client import SimplonClient
from detpipe.pipeline.eiger.stream_receiver import StreamReceiver
from detpipe.pipeline.triage.setup import DetectorKind

from .data_policy import DataPolicy
from .detector_device import DetectorDevice
from .detpipe_device import CLOSE_WAIT_S, in_background, settle
from .live_view_device import LIVE_MAX_HEIGHT, LIVE_MAX_WIDTH
from .parameter_attribute import choice_attribute

DCU_READ_WAIT_S = 1.0
TRIGGER_MODES = [mode.value for mode in TriggerMode]
"""acq_trigger_mode's labels, in LImA's spelling."""


class EigerDetector(DetectorDevice):
    """Controls one EIGER/EIGER2 over SIMPLON REST and receives its ZMQ stream (V1 or V2, detected).

    Sequence: set acq_* attributes, Prepare (configure + arm in the background: MOVING, then STANDBY), Start
    (trigger: RUNNING), then the device goes back to ON once the writer has saved the last frame. Stop drains;
    Abort closes files as they are. The device connects in the background too (INIT until the DCU answered).
    """

    EVENT_ATTRIBUTES = ("last_image_acquired", "frames_received", "frames_dropped", "receive_rate", "acq_status")
    detector_kind = DetectorKind.EIGER

    DetectorUrl = device_property(
        dtype=str, mandatory=True, doc="Mandatory. SIMPLON base URL of the DCU, e.g. http://dcu:80"
    )
    StreamEndpoint = device_property(
        dtype=str, mandatory=True,
        doc="Mandatory. ZMQ endpoint the DCU's stream PUSH socket binds: tcp://dcu:9999 (Stream V1) or "
            "tcp://dcu:31001 (Stream V2)",
    )
    StreamFormat = device_property(
        dtype=str, default_value="legacy",
        doc="Stream format asked of API 1.8 DCUs: legacy (Stream V1, JSON) or cbor (Stream V2)",
    )
    HeaderDetail = device_property(
        dtype=str, default_value="all",
        doc="Stream header_detail: all (the header carries pixel mask and flatfield), basic or none; with basic "
            "or none the pixel mask is read over REST at Prepare, so every master file has one",
    )
    StreamTimeout = device_property(
        dtype=float, default_value=5.0, doc="Seconds of stream silence, with frames still owed, before FAULT"
    )
    HttpTimeout = device_property(dtype=float, default_value=10.0,
                                  doc="Seconds allowed for an ordinary REST request (arm and trigger get 300 s)")

    async def init_device(self) -> None:
        await super().init_device()
        self._receiver = StreamReceiver(self.StreamEndpoint)
        self._receiver.start()
        forwarder = self._receiver.forwarder
        self.start_live_view(lambda: forwarder.latest, lambda frame: frame_picture(frame, forwarder.series_start),
                             lambda frame: frame.index)
        self._acq = EigerAcquisition(
            SimplonClient(self.DetectorUrl, timeout_s=self.HttpTimeout), self._receiver,
            stream_timeout_s=self.StreamTimeout,
        )
        self._acq.request(stream_format=self.StreamFormat, header_detail=self.HeaderDetail)
        self._summary = "Connecting to the detector"
        self.start_monitor()
        self.connect()

    async def delete_device(self) -> None:
        await super().delete_device()
        await settle([in_background(self._receiver.close)], CLOSE_WAIT_S)  # ends a series still armed

    @property
    def armed(self) -> bool:
        return self._acq.phase is not Phase.IDLE and not self.acquiring

    @property
    def acquisition_label(self) -> str:
        return f"Series {self._acq.series_id}"

    @property
    def engine_step(self) -> str:
        return self._acq.step

    # --- connection, in the background: State INIT until the DCU answered ---
    def connect(self) -> None:
        self._connecting = asyncio.create_task(self._connect(), name=f"{self.get_name()} connect")
        self.refresh(force=True)

    async def _connect(self) -> None:
        client = self._acq.client
        try:
            version = await asyncio.to_thread(lambda: client.api_version)
            if await asyncio.to_thread(client.detector_status) in ("na", "error"):
                await asyncio.to_thread(client.command, "initialize")
            geometry = await asyncio.to_thread(self._acq.geometry)
        except (DetectorUnreachable, DetectorFailed, DetectorRefused) as err:
            self.set_fault(str(err))
            return
        if geometry is not None:
            self.image_shape = geometry.shape
        self.preload_triage(DetectorKind.EIGER, geometry)
        probed = " (probed: the DCU has no /detector/api/version/)" if client.version_probed else ""
        self._summary = f"Ready: EIGER at {self.DetectorUrl}, SIMPLON API {version}{probed}"
        self.refresh(force=True)

    # --- State ---
    def assess(self) -> tuple[DevState, str]:
        stats, acq = self._receiver.stats, self._acq
        if self._receiver.failure:
            return DevState.FAULT, f"{self._receiver.failure}; Init starts a new receiver"
        queue_fill = self._writer_queue_fill()
        if self.preparing:
            return DevState.MOVING, f"Preparing a series: {self.prepare_step}"
        if self.connecting:
            return DevState.INIT, f"Connecting to {self.DetectorUrl}"
        if acq.phase is Phase.PREPARED and not self.acquiring:
            return DevState.STANDBY, (f"Armed series {acq.series_id}: {acq.frames_expected} frames; waiting for Start"
                                      f"{self._dcu_notes()}")
        if self.acquiring:
            return self.running_state(stats.frames_dropped_total), (
                f"Acquiring series {acq.series_id}: {stats.frames_received}/{acq.frames_expected} frames received, "
                f"{stats.frames_dropped_total} dropped, queue {queue_fill:.0f}% full{self.ending_note()}"
            )
        if stats.frames_dropped_total or stats.rejected_total or stats.frames_missing or self.frames_lost:
            return DevState.ALARM, self._summary
        return DevState.ON, self._summary

    def _dcu_notes(self) -> str:
        """What the last Prepare could not get from the DCU, none of it fatal: side-effect keys it listed but
        could not serve, and why the master has no pixel mask."""
        acq, notes = self._acq, []
        if acq.unreadable_keys:
            notes.append(f"{len(acq.unreadable_keys)} changed keys unreadable on the DCU "
                         f"({', '.join(sorted(acq.unreadable_keys))})")
        if acq.pixel_mask_note:
            notes.append(acq.pixel_mask_note)
        return "".join(f"; {note}" for note in notes)

    def event_values(self) -> dict[str, Any]:
        stats = self._receiver.stats
        return {
            "last_image_acquired": stats.last_image_acquired,
            "frames_received": stats.frames_received,
            "frames_dropped": stats.frames_dropped_total,
            "receive_rate": stats.rates()[1],
            "acq_status": self.acquisition_status(),
        }

    # --- acquisition settings (LImA names, memorized) ---
    def _request(self, **changes: object) -> None:
        if self.preparing or self._acq.phase is not Phase.IDLE:
            raise RuntimeError("settings apply at Prepare; Stop or Abort the current acquisition first")
        self._acq.request(**changes)

    @attribute(dtype=int, access=AttrWriteType.READ_WRITE, memorized=True, hw_memorized=True, unit="frame",
               format="%d", min_value=1, label="Frames", description="Frames to acquire in the next series")
    async def acq_nb_frames(self) -> int:
        return self._acq.requested.nb_frames

    @acq_nb_frames.write
    async def acq_nb_frames(self, value: int) -> None:
        self._request(nb_frames=value)

    @attribute(dtype=float, access=AttrWriteType.READ_WRITE, memorized=True, hw_memorized=True, unit="s",
               format="%.6f", min_value=1e-6, label="Exposure time", description="Exposure per frame (count_time)")
    async def acq_expo_time(self) -> float:
        return self._acq.requested.expo_time_s

    @acq_expo_time.write
    async def acq_expo_time(self, value: float) -> None:
        self._request(expo_time_s=value)

    @attribute(dtype=float, access=AttrWriteType.READ_WRITE, memorized=True, hw_memorized=True, unit="s",
               format="%.6f", min_value=0.0, label="Latency time",
               description="Dead time between frames: frame_time = acq_expo_time + latency_time (at least the readout time)")
    async def latency_time(self) -> float:
        return self._acq.requested.latency_time_s

    @latency_time.write
    async def latency_time(self, value: float) -> None:
        self._request(latency_time_s=value)

    acq_trigger_mode = choice_attribute(
        "acq_trigger_mode", TRIGGER_MODES, label="Trigger mode",
        description="INTERNAL_TRIGGER: one Start acquires the series; *_MULTI: one frame per trigger (software "
                    "Start, or hardware); EXTERNAL_TRIGGER: a hardware trigger starts the series; EXTERNAL_GATE: "
                    "the gate length is the exposure (LImA acq_trigger_mode)",
        get=lambda device: device._acq.requested.trigger_mode.value,
        put=lambda device, mode: device._request(trigger_mode=mode))

    @attribute(dtype=float, access=AttrWriteType.READ_WRITE, memorized=True, hw_memorized=True, unit="eV",
               format="%.1f", min_value=1000.0, max_value=100000.0, label="Photon energy",
               description="Beam energy; sets the threshold (EIGER2 CdTe sensors reach 100 keV)")
    async def photon_energy(self) -> float:
        return self._acq.requested.photon_energy_ev

    @photon_energy.write
    async def photon_energy(self, value: float) -> None:
        self._request(photon_energy_ev=value)

    compression_type = choice_attribute(
        "compression_type", COMPRESSIONS, label="Compression",
        description="Compression of the frames the detector streams (SIMPLON compression): bslz4 (bitshuffle-LZ4, "
                    "written as it arrives) or lz4",
        get=lambda device: device._acq.requested.compression,
        put=lambda device, compression: device._request(compression=compression))

    # --- counters and identity ---
    @attribute(label="Last image acquired",
               dtype=int, unit="frame", format="%d", description="Index of the last frame received; -1 before the first")
    async def last_image_acquired(self) -> int:
        return self._receiver.stats.last_image_acquired

    @attribute(dtype=((np.uint32,),), max_dim_x=LIVE_MAX_WIDTH, max_dim_y=LIVE_MAX_HEIGHT, unit="count",
               format="%d", label="Live image", data_ready_event_implemented=True,
               description="The newest frame received, at most live_image_max_rate times per second, in counts; "
                           "gap and masked pixels 0 (live_image_mask); its frame index in live_image_frame")
    async def live_image(self) -> np.ndarray:
        picture = self.live_picture()
        return picture.pixels.astype(np.uint32) if picture is not None else np.zeros((1, 1), np.uint32)

    @attribute(label="Frames received",
               dtype=int, unit="frame", format="%d", description="Frames received in this series")
    async def frames_received(self) -> int:
        return self._receiver.stats.frames_received

    @attribute(label="Frames dropped", dtype=int, unit="frame", format="%d",
               description="Frames received but dropped because the writer queue was full")
    async def frames_dropped(self) -> int:
        return self._receiver.stats.frames_dropped_total

    @attribute(label="Frames rejected", dtype=int, unit="message", format="%d",
               description="Stream messages rejected (malformed, other series...); see rejection_reasons")
    async def frames_rejected(self) -> int:
        return self._receiver.stats.rejected_total

    @attribute(label="Rejections, by reason", dtype=str, description="Rejected stream messages by reason, as JSON")
    async def rejection_reasons(self) -> str:
        return json.dumps(dict(self._receiver.stats.rejected))

    @attribute(label="Late messages", dtype=int, unit="message", format="%d",
               description="Messages of an earlier series read and discarded in this series (leftovers of a series "
                           "aborted, refused or re-initialised away; a second end message at disarm); not an error")
    async def late_messages(self) -> int:
        return self._receiver.stats.late_messages

    @attribute(label="Frames missing",
               dtype=int, unit="frame", format="%d", description="Holes in the frame numbering: sent but never received")
    async def frames_missing(self) -> int:
        return self._receiver.stats.frames_missing

    @attribute(label="Receive rate",
               dtype=float, unit="MB/s", format="%.1f", description="Compressed stream rate over the last second")
    async def receive_rate(self) -> float:
        return self._receiver.stats.rates()[1]

    @attribute(label="Receive frame rate",
               dtype=float, unit="frame/s", format="%.1f", description="Frames received per second over the last second")
    async def receive_frame_rate(self) -> float:
        return self._receiver.stats.rates()[0]

    @attribute(label="Decode time (last)",
               dtype=float, unit="ms", format="%.3f", description="Time to decode the last stream message")
    async def decode_time_last(self) -> float:
        return self._receiver.stats.time_last_ms

    @attribute(label="Decode time (mean)",
               dtype=float, unit="ms", format="%.3f", description="Mean time to decode one stream message")
    async def decode_time_mean(self) -> float:
        return self._receiver.stats.time_mean_ms

    @attribute(label="Decode time (max)",
               dtype=float, unit="ms", format="%.3f", description="Longest time to decode one stream message")
    async def decode_time_max(self) -> float:
        return self._receiver.stats.time_max_ms

    @attribute(label="Series id",
               dtype=int, format="%d", description="Series (sequence) id returned by the last arm; -1 before")
    async def series_id(self) -> int:
        return -1 if self._acq.series_id is None else self._acq.series_id

    @attribute(label="Stream format",
               dtype=str, description="Stream format detected from the messages: legacy (V1), cbor (V2) or unknown")
    async def stream_format(self) -> str:
        fmt = self._receiver.decoder.stream_format
        return fmt.value if fmt is not None else "unknown"

    @attribute(label="SIMPLON API version",
               dtype=str, description="SIMPLON API version of the DCU, from its version endpoint or, where it has "
                                      "none, probed (Status says so); empty until connected")
    async def api_version(self) -> str:
        return "" if self.connecting or self._fault else await asyncio.to_thread(lambda: self._acq.client.api_version)

    @attribute(label="Unreadable keys", dtype=(str,), max_dim_x=256,
               description="Keys the last Prepare's PUTs listed as changed but the DCU could not serve on GET "
                           "(404 or 5xx): their values are unknown; the configuration went on")
    async def unreadable_keys(self) -> list[str]:
        return sorted(self._acq.unreadable_keys)

    @attribute(label="Detector state", dtype=str,
               description="Detector status/state as the DCU reports it (na, idle, ready, acquire, error); "
                           "'unreachable' when the DCU does not answer within 1 s, 'answered HTTP <status>' when "
                           "it answers with a server error")
    async def detector_state(self) -> str:
        reading = in_background(self._acq.client.detector_status)
        if not await settle([reading], DCU_READ_WAIT_S):
            return "unreachable"
        if isinstance(failure := reading.exception(), DetectorFailed):
            return f"answered HTTP {failure.http_status}"
        return "unreachable" if failure is not None else str(reading.result())

    # --- engine steps of the commands (DetectorDevice) ---
    async def prepare_series(self) -> None:
        """Configure, arm and claim the files; then make sure triage is ready for the armed geometry."""
        sink = self.data_sink()
        if isinstance(sink, DataPolicy):
            self._chain_step = "reading the detector's image shape"
            self.image_shape = await asyncio.to_thread(self._acq.image_shape)
            sink.check_next(DetectorKind.EIGER, self.image_shape)
            self._chain_step = ""
        await self.wait_for_chain()
        requested = self._acq.requested
        series_id = await self.engine_call(lambda: self._acq.prepare(requested, self._claim))
        await self.expect_series(self._acq.rest_config, self._acq.pixel_mask)
        self._summary = f"Series {series_id} prepared"

    def _claim(self, series_id: int) -> FrameQueue[Item]:
        sink = self.data_sink()
        sink.prepare(series_id)
        return self.claimed(sink, series_id, DetectorKind.EIGER)

    async def acquire_series(self) -> None:
        series_id = self._acq.series_id
        try:
            end = await asyncio.to_thread(self._acq.acquire)
            note = await self.wait_series_written()
        except (DetectorUnreachable, DetectorFailed, DetectorRefused, TimeoutError, SeriesIdMismatch) as err:
            self.set_fault(f"Series {series_id} failed: {err}")
            return
        stats = self._receiver.stats
        lost = self.unwritten_note(stats.frames_received - stats.frames_dropped_total)
        self._summary = (
            f"Series {series_id} done ({end.reason.value}): {stats.frames_received} frames received, "
            f"{stats.frames_dropped_total} dropped, {stats.rejected_total} rejected, {stats.frames_missing} missing"
            f"{f', {stats.late_messages} late messages of earlier series' if stats.late_messages else ''}{lost}{note}"
            f"{self._dcu_notes()}"
        )

    def abandon_engine(self) -> None:
        self._acq.abandon()

    def end_engine_series(self, reason: EndReason) -> None:
        if reason is EndReason.STOP:
            self._acq.stop()
        else:
            self._acq.abort()

    @command
    async def Reset(self) -> None:
        """Abort any series (files closed valid), leave FAULT, clear the counters and reconnect to the detector
        in the background (State INIT until it answers). Returns at once."""
        await self.abort_series(f"Reset of {self.get_name()}")
        await self._stop_connecting()
        self.clear_fault()
        self._receiver.stats.reset()
        self.connect()

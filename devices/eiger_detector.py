"""Tango face of an EIGER: SIMPLON control plus the stream receiver, in LImA's vocabulary.

Frames go from the receiver straight into the writer device's queue in the same process; only
settings, counters and State travel through Tango. With ``Receivers``, the stream goes instead to a fan-out
that spreads it over EigerReceiver devices in other servers (fan_out_coordinator.py, docs/scale_out.md).
"""

from __future__ import annotations

import asyncio

from tango import AttrWriteType, DevState
from tango.server import attribute, command, device_property

from detpipe.pipeline.core.errors import DetectorFailed, DetectorRefused, DetectorUnreachable
from detpipe.pipeline.core.series import EndReason
from detpipe.pipeline.eiger.acquisition import EigerAcquisition, Phase, SeriesIdMismatch
from detpipe.pipeline.eiger.acquisition_params import COMPRESSIONS, TriggerMode
from detpipe.pipeline.eiger.frame_forwarder import ItemSink
from detpipe.pipeline.eiger.simplon_client import SimplonClient
from detpipe.pipeline.eiger.stream_fan_out import StreamFanOut
from detpipe.pipeline.eiger.stream_receiver import StreamReceiver
from detpipe.pipeline.triage.setup import DetectorKind

from .data_policy import DataPolicy
from .detpipe_device import in_background, settle
from .fan_out_coordinator import FanOutCoordinator
from .parameter_attribute import choice_attribute
from .receiver_group import ReceiverReading, ReceiverUnavailable
from .stream_device import StreamDevice

DCU_READ_WAIT_S = 1.0
TRIGGER_MODES = [mode.value for mode in TriggerMode]
"""acq_trigger_mode's labels, in LImA's spelling."""


class EigerDetector(StreamDevice):
    """Controls one EIGER/EIGER2 over SIMPLON REST and receives its ZMQ stream (V1 or V2, detected).

    Sequence: set acq_* attributes, Prepare (configure + arm in the background: MOVING, then STANDBY), Start
    (trigger: RUNNING), then the device goes back to ON once the writer has saved the last frame. Stop drains;
    Abort closes files as they are. The device connects in the background too (INIT until the DCU answered).
    """

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
    Receivers = device_property(
        dtype=(str,), default_value=[],
        doc="EigerReceiver devices (in any server, on any host) that share this detector's stream, in blocks of "
            "their writers' saving_frame_per_file; one FanOutEndpoints entry each. Empty: this server receives "
            "the whole stream itself")
    FanOutEndpoints = device_property(
        dtype=(str,), default_value=[],
        doc="With Receivers: the ZMQ endpoint this device binds for each receiver, in the same order "
            "(tcp://<this host's interface>:<port>); each receiver's StreamEndpoint connects to its own")

    async def init_device(self) -> None:
        await super().init_device()
        self._coordinator: FanOutCoordinator | None = None
        problem = self._fan_out_problem()
        if self.Receivers and not problem:
            try:
                fan_out = StreamFanOut(self.StreamEndpoint, list(zip(self.Receivers, self.FanOutEndpoints)))
            except OSError as err:
                problem = str(err)
            else:
                self._coordinator = FanOutCoordinator(fan_out, self.Receivers)
        self.start_stream(self._coordinator.fan_out if self._coordinator else StreamReceiver(self.StreamEndpoint))
        self._acq = EigerAcquisition(
            SimplonClient(self.DetectorUrl, timeout_s=self.HttpTimeout), self._receiver,
            stream_timeout_s=self.StreamTimeout,
        )
        self._acq.request(stream_format=self.StreamFormat, header_detail=self.HeaderDetail)
        self._summary = "Connecting to the detector"
        self.start_monitor()
        if problem:
            self.set_fault(f"{problem}; correct the properties, then Init")
        else:
            self.connect()

    def _fan_out_problem(self) -> str:
        """Why ``Receivers``/``FanOutEndpoints`` cannot work as configured; empty when they can."""
        if len(self.Receivers) != len(self.FanOutEndpoints):
            return (f"Receivers names {len(self.Receivers)} devices and FanOutEndpoints {len(self.FanOutEndpoints)} "
                    "endpoints: give one endpoint per receiver")
        if self.Receivers and self.HeaderDetail == "none":
            return ("with Receivers, every receiver takes the series' configuration from the stream header: set "
                    "HeaderDetail to all (or basic)")
        if self.Receivers and (self.HitFinderDevice or self.DataPolicyDevice):
            return ("with Receivers, each receiver's server triages and writes its share: leave HitFinderDevice "
                    "and DataPolicyDevice of the controlling device empty")
        return ""

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
        if fault := self.stream_fault():
            return fault
        queue_fill = self._writer_queue_fill()
        if self.preparing:
            return DevState.MOVING, f"Preparing a series: {self.prepare_step}"
        if self.connecting:
            return DevState.INIT, f"Connecting to {self.DetectorUrl}"
        if acq.phase is Phase.PREPARED and not self.acquiring:
            return DevState.STANDBY, (f"Armed series {acq.series_id}: {acq.frames_expected} frames; waiting for Start"
                                      f"{self._dcu_notes()}")
        if self.acquiring:
            where = (f"queue {queue_fill:.0f}% full" if self._coordinator is None else
                     f"spread over {len(self.Receivers)} receivers{_note(self._coordinator.losses())}")
            return self.running_state(stats.frames_dropped_total), (
                f"Acquiring series {acq.series_id}: {stats.frames_received}/{acq.frames_expected} frames received, "
                f"{stats.frames_dropped_total} dropped, {where}{self.ending_note()}"
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
    @attribute(label="Frames missing",
               dtype=int, unit="frame", format="%d", description="Holes in the frame numbering: sent but never received")
    async def frames_missing(self) -> int:
        return self._receiver.stats.frames_missing

    @attribute(label="Series id",
               dtype=int, format="%d", description="Series (sequence) id returned by the last arm; -1 before")
    async def series_id(self) -> int:
        return -1 if self._acq.series_id is None else self._acq.series_id

    @attribute(label="Receivers' status", dtype=(str,), max_dim_x=64,
               description="With Receivers: one line per receiver, its State and counters (received, written, "
                           "dropped, hits) or why it does not answer; empty without Receivers")
    async def receivers_status(self) -> list[str]:
        return [reading.line() for reading in await self._receiver_readings()]

    @attribute(label="Frames written by receivers", dtype=int, unit="frame", format="%d",
               description="With Receivers: frames of this series the receivers' writers have on disk, summed "
                           "(receivers that do not answer count 0); 0 without Receivers")
    async def receivers_frames_written(self) -> int:
        return sum(reading.counters.get("frames_written", 0) for reading in await self._receiver_readings())

    @attribute(label="Hits found by receivers", dtype=int, unit="frame", format="%d",
               description="With Receivers: hits among this series' frames, summed over the receivers' hit "
                           "finders; 0 without Receivers")
    async def receivers_hits(self) -> int:
        return sum(reading.counters.get("hits", 0) for reading in await self._receiver_readings())

    async def _receiver_readings(self) -> list[ReceiverReading]:
        if self._coordinator is None:
            return []
        return await asyncio.to_thread(self._coordinator.group.readings)

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
        if self._coordinator is not None:
            await self._coordinator.group.wait_armed(lambda step: setattr(self, "_chain_step", step))
        self._summary = f"Series {series_id} prepared"

    def _claim(self, series_id: int) -> ItemSink:
        if self._coordinator is not None:
            return self._coordinator.claim(series_id, self._writer())
        return self.claim_series(series_id)

    async def acquire_series(self) -> None:
        series_id, coordinator = self._acq.series_id, self._coordinator
        try:
            if coordinator is not None:
                await self._start_receivers(coordinator)
            end = await asyncio.to_thread(self._acq.acquire)
        except (DetectorUnreachable, DetectorFailed, DetectorRefused, TimeoutError, SeriesIdMismatch,
                ReceiverUnavailable) as err:
            if coordinator is not None:
                await self._stitched_note(coordinator)  # the receivers' files get their master all the same
            self.set_fault(f"Series {series_id} failed: {err}")
            return
        try:
            note = await self.wait_series_written()
        except TimeoutError as err:
            self.set_fault(f"Series {series_id} failed: {err}")
            return
        stats = self._receiver.stats
        lost = "" if coordinator else self.unwritten_note(stats.frames_received - stats.frames_dropped_total)
        self._summary = (
            f"Series {series_id} done ({end.reason.value}): {stats.frames_received} frames received, "
            f"{stats.frames_dropped_total} dropped, {stats.rejected_total} rejected, {stats.frames_missing} missing"
            f"{f', {stats.late_messages} late messages of earlier series' if stats.late_messages else ''}{lost}{note}"
            f"{self._dcu_notes()}"
        )

    async def wait_series_written(self) -> str:
        """With Receivers, the series is written once every receiver has closed its files and the master is
        stitched over them (also for a series stopped before Start: its master has no frames)."""
        note = await super().wait_series_written()
        if self._coordinator is not None:
            note += await self._stitched_note(self._coordinator)
        return note

    async def _start_receivers(self, coordinator: FanOutCoordinator) -> None:
        """Start every receiver before the detector; one that refuses ends the armed series (disarm, the
        fan-out's end to the others) before the error reaches Status."""
        try:
            await coordinator.start()
        except ReceiverUnavailable:
            await asyncio.to_thread(self._acq.abort)
            raise

    async def _stitched_note(self, coordinator: FanOutCoordinator) -> str:
        """Once every receiver closed its files: the master stitched over them, and a Status note of what it
        holds; frames no receiver wrote are this series' ``frames_lost`` (ALARM), each receiver named."""
        received = self._receiver.stats.frames_received
        try:
            stitched = await coordinator.finish(self._writer())
        except (OSError, ValueError, KeyError) as err:
            self.frames_lost = received
            return f"; no master stitched over the receivers' files: {err}"
        self.frames_lost = max(0, received - stitched.frames_written)
        by = ", ".join(f"{name} {count}" for name, count in stitched.written_by.items())
        left_out = f"; files left out: {len(stitched.left_out)}" if stitched.left_out else ""
        return (f", {stitched.frames_written} written by the receivers ({by}), {self.frames_lost} lost"
                f"{_note(coordinator.losses())}{left_out}; master {stitched.master}")

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


def _note(text: str) -> str:
    return f"; {text}" if text else ""

"""Tango face of online hit triage: peakfinder8 in worker processes between a detector and the writer.

Frames reach it in-process from the detector device and leave for the writer with their peak lists; only
parameters, counters, State and a rate-limited live image of the last hit travel through Tango.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import numpy as np
from tango import AttrWriteType, DevState
from tango.server import attribute, command, device_property

from detpipe.pipeline.core.crystfel_geometry import read_crystfel_geometry
from detpipe.pipeline.core.frame import Frame
from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.core.live_view import TrainView, frame_picture
from detpipe.pipeline.core.openmp_threads import use_one_openmp_thread
from detpipe.pipeline.core.series import DetectorConfig
from detpipe.pipeline.core.settings_document import settings_mapping
from detpipe.pipeline.core.stage import Item
from detpipe.pipeline.core.train import AGIPD_MODULES, MODULE_SHAPE
from detpipe.pipeline.core.triage_params import UNITS, TriageParams, canonical_names, om_monitor_parameters
from detpipe.pipeline.triage.dispatcher import LastHit, TriageDispatcher
from detpipe.pipeline.triage.geometry import load_user_mask
from detpipe.pipeline.triage.pool import TriagePool
from detpipe.pipeline.triage.setup import DetectorKind
from detpipe.pipeline.triage.stats import HISTOGRAM_BINS

from .detpipe_device import CLOSE_WAIT_S, DetpipeDevice, SeriesEngine, in_background, settle, unusable_file, wait_for
from .event_throttle import EventThrottle
from .parameter_attribute import parameter_attribute

QUEUE_ALARM_PERCENT = 75.0
MAX_IMAGE_WIDTH = 4200  # EIGER2 16M is 4148 px wide
MAX_IMAGE_HEIGHT = AGIPD_MODULES * MODULE_SHAPE[0]  # AGIPD stacked modules: 8192 rows
MAX_PEAKS_SHOWN = 65536  # the largest max_num_peaks (CXI row width) TriageParams accepts


class HitFinder(DetpipeDevice):
    """Finds Bragg peaks (peakfinder8) in every frame and tags it hit or miss; it never drops a frame.

    Parameters carry the OnDA/OM names and apply from the next series (a running series keeps the
    parameters it started with, shown in active_config). Results are written with the frames by the
    writer, as CXI peak lists CrystFEL reads (docs/triage_output.md). If triage falls behind, frames
    still go to the writer, untriaged and counted (frames_not_triaged).
    """

    EVENT_ATTRIBUTES = ("frames_triaged", "hits", "hit_rate", "last_n_peaks", "backlog", "frames_not_triaged")

    Workers = device_property(
        dtype=int, default_value=0, doc="Triage worker processes; 0 = one per CPU core this server may use"
    )
    BufferFrames = device_property(
        dtype=int, default_value=256, doc="Eiger frames the hit finder's queue holds (~1-3 MB each for a 4M)"
    )
    BufferTrains = device_property(
        dtype=int, default_value=4, doc="AGIPD trains the hit finder's queue holds (~270 MB each at 64 cells)"
    )
    BypassFill = device_property(
        dtype=float, default_value=50.0,
        doc="Queue fill (%) beyond which frames skip triage (counted as backlog) instead of waiting for a worker",
    )
    MaskFile = device_property(
        dtype=str, default_value="",
        doc="Optional user mask, 1 = good pixel: a .npy file or file.h5:/dataset, shaped like the detector image",
    )
    GeometryFile = device_property(
        dtype=str, default_value="",
        doc="Optional CrystFEL geometry file (.geom): its panels, beam position, bad regions and mask files replace "
            "the detector's built-in layout and beam centre (docs/triage.md)",
    )

    async def init_device(self) -> None:
        await super().init_device()
        self.set_data_ready_event("last_hit_image", True)
        self._inboxes: dict[DetectorKind, FrameQueue[Item]] = {
            DetectorKind.EIGER: FrameQueue(self.BufferFrames, FullPolicy.DROP),
            DetectorKind.AGIPD: FrameQueue(self.BufferTrains, FullPolicy.DROP),
        }
        self._dispatcher = TriageDispatcher(TriagePool(self.Workers), self._inboxes[DetectorKind.EIGER],
                                            bypass_fill_percent=self.BypassFill)
        self._dispatcher.user_mask_path = self.MaskFile
        self._dispatcher.geometry_file = self.GeometryFile
        self._file_problem = (unusable("MaskFile", self.MaskFile, load_user_mask)
                              or unusable("GeometryFile", self.GeometryFile, read_crystfel_geometry))
        self._dispatcher.start()
        self.requested_params = TriageParams()
        self._enabled = True
        self._image_rate_hz = 25.0
        self._image_throttle = EventThrottle(self._push_image_ready, self._image_rate_hz)
        self._image_cache: tuple[int, np.ndarray] | None = None
        self._geometry: tuple[DetectorKind, DetectorConfig | None] | None = None
        for detector in self.feeding_detectors():  # after an Init: rebuild what the detectors gave before
            if detector.triage_geometry is not None:
                self.preload(*detector.triage_geometry)
        self.refresh(force=True)
        self.start_monitor()

    async def delete_device(self) -> None:
        await self.release_series("Init")
        await self.stop_monitor()
        await settle([in_background(self._dispatcher.close)], CLOSE_WAIT_S)  # the workers stop on their own
        await super().delete_device()

    def series_engines(self) -> list[SeriesEngine]:
        return [self._dispatcher]

    # --- used in-process by detector devices ---
    @property
    def enabled_for_next_series(self) -> bool:
        return self._enabled

    @property
    def in_series(self) -> bool:
        return self._dispatcher.in_series

    @property
    def hits_in_series(self) -> int:
        """Hits of the last (or current) series, for a receiver's account to the controlling device."""
        return self._dispatcher.stats.hits

    @property
    def ready_for_series(self) -> bool:
        """Workers started (kernels compiled) and no series still being triaged: a Prepare can connect."""
        return self._dispatcher.pool.ready and not self._dispatcher.in_series

    def connect(self, kind: DetectorKind, writer_inbox: FrameQueue[Item]) -> FrameQueue[Item]:
        """Put the hit finder in front of ``writer_inbox`` for the next series; returns where frames go
        (``writer_inbox`` itself while the hit finder is disabled). Call once ``ready_for_series``."""
        if not self._enabled:
            return writer_inbox
        self._dispatcher.inbox = self._inboxes[kind]
        self._dispatcher.params = self.requested_params
        self._dispatcher.prepare(kind, writer_inbox)
        self._throttle.forget()
        return self._dispatcher.inbox

    def preload(self, kind: DetectorKind, config: DetectorConfig | None) -> None:
        """A detector's geometry for its next series (given when the detector connects): the workers build
        it now, in the background, and again whenever a parameter changes, so no Prepare waits for it."""
        self._geometry = (kind, config)
        self._rebuild_geometry()

    def _rebuild_geometry(self) -> None:
        if self._geometry is None or not self._enabled or self._dispatcher.in_series:
            return  # a running series keeps its setup; the next Prepare sends the new one
        kind, config = self._geometry
        if kind is DetectorKind.EIGER and config is None:
            return  # the detector could not read its geometry: the series header will bring it
        self._dispatcher.params = self.requested_params
        self._dispatcher.expect(config, kind)

    async def expect(self, config: DetectorConfig | None, pixel_mask: np.ndarray | None = None,
                     timeout_s: float = 30.0) -> None:
        """The armed series' detector configuration: returns once the workers have built their geometry
        for it (at once when it is what they built in advance; about a second for a new 4M geometry), so
        triage keeps up from the first frame after Start. None: nothing to wait for (an AGIPD run, whose
        geometry is fixed and sent by ``connect``, or an Eiger series whose header brings it). With the pixel
        mask the DCU gave over REST the geometry is the one the header's mask asks for, so the workers do
        not build it again when the first frames arrive."""
        if not self._enabled or config is None:
            return
        self._dispatcher.expect(config, pixel_mask=pixel_mask)
        await wait_for(lambda: self._dispatcher.setup_ready, timeout_s, poll_s=0.02)

    def set_parameter(self, name: str, value: Any) -> None:
        """Validated through ``TriageParams``; a bad value raises ``ConfigError`` and changes nothing. The
        workers rebuild their geometry at once (parameters such as min_res shape it)."""
        self.requested_params = TriageParams.from_mapping({**self.requested_params.to_mapping(), name: value})
        self._rebuild_geometry()

    # --- State ---
    def assess(self) -> tuple[DevState, str]:
        d, stats = self._dispatcher, self._dispatcher.stats
        if self._file_problem:
            return DevState.FAULT, self._file_problem
        if d.failure is not None:
            return DevState.FAULT, f"{d.failure}; frames go to the writer untriaged. Reset to retry"
        if not d.pool.ready:
            return DevState.INIT, (f"Starting {d.pool.workers} triage workers (compiling peakfinder8 the first "
                                   "time on this machine, about a minute)")
        lost_workers = d.pool.workers - d.pool.workers_alive
        behind = stats.not_triaged_total or lost_workers or d.inbox.fill_percent > QUEUE_ALARM_PERCENT
        summary = (f"{stats.frames_triaged} frames triaged, {stats.hits} hits ({stats.hit_rate:.1f}% over the last "
                   f"{stats.hit_rate_window}), {stats.not_triaged_total} not triaged {dict(stats.frames_not_triaged)}")
        if d.in_series:
            return (DevState.ALARM if behind else DevState.RUNNING), (
                f"Triaging: {summary}; backlog {d.backlog}, {d.pool.workers_alive}/{d.pool.workers} workers")
        if not self._enabled:
            return DevState.ON, "Disabled: detectors send their frames straight to the writer"
        geometry = "ready" if self.triage_ready else "being built" if self._geometry else "not given yet"
        if self.GeometryFile:
            geometry += f" (from {self.GeometryFile})"
        return (DevState.ALARM if behind else DevState.ON), (
            f"Idle, {d.pool.workers} triage workers started in {d.pool.startup_s:.1f} s, geometry {geometry}. "
            f"Last series: {summary}")

    def event_values(self) -> dict[str, Any]:
        stats = self._dispatcher.stats
        if (hit := self._dispatcher.last_hit) is not None:
            self._image_throttle.offer("last_hit_image", hit.number)
        return {"frames_triaged": stats.frames_triaged, "hits": stats.hits, "hit_rate": stats.hit_rate,
                "last_n_peaks": stats.last_n_peaks, "backlog": self._dispatcher.backlog,
                "frames_not_triaged": stats.not_triaged_total}

    def _push_image_ready(self, name: str, counter: int) -> None:
        self.push_data_ready_event(name, counter)

    # --- parameters (OnDA/OM names, memorized) ---
    adc_threshold = parameter_attribute("adc_threshold", "ADC threshold",
                                        float, "Floor of every ring's peak threshold, detector units", units=UNITS)
    minimum_snr = parameter_attribute("minimum_snr", "Minimum SNR",
                                      float, "Sigma-clipping factor, ring threshold factor and peak SNR cut",
                                      min_value=0, units=UNITS)
    min_pixel_count = parameter_attribute("min_pixel_count", "Min. pixels per peak",
                                          int, "Fewest pixels a peak may have (inclusive)", min_value=1, units=UNITS)
    max_pixel_count = parameter_attribute("max_pixel_count", "Max. pixels per peak",
                                          int, "Most pixels a peak may have (inclusive)", min_value=1, units=UNITS)
    local_bg_radius = parameter_attribute("local_bg_radius", "Local background radius",
                                          int, "Local background disc radius is twice this",
                                          min_value=1, units=UNITS)
    min_res = parameter_attribute("min_res", "Min. resolution radius",
                                  float, "Pixels closer to the beam than this radius are ignored; 0 = none",
                                  min_value=0, units=UNITS)
    max_res = parameter_attribute("max_res", "Max. resolution radius",
                                  float, "Pixels beyond this radius from the beam are ignored; 0 = none",
                                  min_value=0, units=UNITS)
    max_num_peaks = parameter_attribute("max_num_peaks", "Peaks stored per frame",
                                        int, "Peaks stored per frame (CXI row width)", min_value=1, units=UNITS)
    fast_mode = parameter_attribute("fast_mode", "Fast mode",
                                    bool, "Ring statistics from at most pixels_per_ring sampled pixels", units=UNITS)
    pixels_per_ring = parameter_attribute("pixels_per_ring", "Pixels per ring (fast)",
                                          int, "Pixels sampled per 1-px ring in fast mode",
                                          min_value=1, units=UNITS)
    min_peaks = parameter_attribute("min_peaks", "Min. peaks for a hit",
                                    int, "A hit has at least this many peaks (inclusive)", min_value=0, units=UNITS)
    max_peaks = parameter_attribute("max_peaks", "Max. peaks for a hit",
                                    int, "A hit has at most this many peaks (inclusive)", min_value=0, units=UNITS)
    lit_pixel_threshold = parameter_attribute("lit_pixel_threshold", "Lit pixel threshold",
                                              float, "A pixel above this value is lit", units=UNITS)
    min_lit_pixels = parameter_attribute("min_lit_pixels", "Min. lit pixels (pre-veto)", int,
                                         "Pre-veto: fewer lit pixels make a miss without peak finding; 0 = off",
                                         min_value=0, units=UNITS)
    saturation_value = parameter_attribute("saturation_value", "Saturation value",
                                           float, "A peak whose brightest pixel reaches this is saturated; 0 = the "
                                           "detector's count-rate cut-off from the series header (none for AGIPD)",
                                           min_value=0, units=UNITS)
    max_saturated_peaks = parameter_attribute("max_saturated_peaks", "Max. saturated peaks for a hit",
                                              int, "A frame with more saturated peaks is no hit (OM's rule); -1 = no "
                                              "such veto", min_value=-1, units=UNITS)

    @attribute(label="Triage enabled",
               dtype=bool, access=AttrWriteType.READ_WRITE, memorized=True, hw_memorized=True, format="%s",
               description="Triage frames of the next series; when False detectors bypass the hit finder")
    async def enabled(self) -> bool:
        return self._enabled

    @enabled.write
    async def enabled(self, value: bool) -> None:
        self._enabled = value
        self._rebuild_geometry()

    @property
    def triage_ready(self) -> bool:
        return self._dispatcher.pool.ready and self._geometry is not None and self._dispatcher.setup_ready

    @attribute(dtype=bool, format="%s", label="Triage ready",
               description="Workers started and the geometry of the detector's next series built (it is built when "
                           "the detector connects and when a parameter changes, so Prepare does not wait for it)")
    async def geometry_ready(self) -> bool:
        return self.triage_ready

    @attribute(label="Hit rate window",
               dtype=int, access=AttrWriteType.READ_WRITE, memorized=True, hw_memorized=True, unit="frame",
               format="%d", min_value=1, description="Frames in the running hit-rate window (OM uses 200)")
    async def hit_rate_window(self) -> int:
        return self._dispatcher.stats.hit_rate_window

    @hit_rate_window.write
    async def hit_rate_window(self, value: int) -> None:
        self._dispatcher.stats.hit_rate_window = value

    @attribute(label="Hit image event rate",
               dtype=float, access=AttrWriteType.READ_WRITE, memorized=True, hw_memorized=True, unit="Hz",
               format="%.1f", min_value=0.1, description="Most data-ready events per second for last_hit_image")
    async def image_events_max_rate(self) -> float:
        return self._image_rate_hz

    @image_events_max_rate.write
    async def image_events_max_rate(self, value: float) -> None:
        self._image_rate_hz = value
        self._image_throttle = EventThrottle(self._push_image_ready, value)

    @attribute(label="Active parameters (JSON)",
               dtype=str, description="Parameters of the series being (or last) triaged, as JSON (TriageParams)")
    async def active_config(self) -> str:
        active = self._dispatcher.active
        return json.dumps(active.params.to_mapping() if active else {})

    # --- results ---
    @attribute(label="Frames triaged",
               dtype=int, unit="frame", format="%d", description="Images triaged in this series")
    async def frames_triaged(self) -> int:
        return self._dispatcher.stats.frames_triaged

    @attribute(label="Hits", dtype=int, unit="frame", format="%d",
               description="Images with min_peaks <= n_peaks <= max_peaks (and, when max_saturated_peaks >= 0, no "
                           "more saturated peaks than that)")
    async def hits(self) -> int:
        return self._dispatcher.stats.hits

    @attribute(label="Misses", dtype=int, unit="frame", format="%d", description="Images triaged and not hits")
    async def misses(self) -> int:
        return self._dispatcher.stats.misses

    @attribute(label="Vetoed by lit pixels",
               dtype=int, unit="frame", format="%d", description="Misses decided by the lit-pixel pre-veto alone")
    async def vetoed(self) -> int:
        return self._dispatcher.stats.vetoed

    @attribute(label="Frames with saturated peaks", dtype=int, unit="frame", format="%d",
               description="Triaged images with at least one saturated peak (see saturation_value); with "
                           "max_saturated_peaks >= 0, those with more are no hits")
    async def saturated_frames(self) -> int:
        return self._dispatcher.stats.saturated_frames

    @attribute(label="Hit rate", dtype=float, unit="%", format="%.1f", min_value=0, max_value=100,
               description="Hits among the last hit_rate_window triaged images")
    async def hit_rate(self) -> float:
        return self._dispatcher.stats.hit_rate

    @attribute(label="Peaks in last frame",
               dtype=int, unit="peak", format="%d", description="Peaks found in the last triaged image; -1 before")
    async def last_n_peaks(self) -> int:
        return self._dispatcher.stats.last_n_peaks

    @attribute(label="Peaks histogram", dtype=(int,), max_dim_x=HISTOGRAM_BINS, unit="frame", format="%d",
               description=f"Images per number of peaks: bin k counts images with k peaks, the last bin "
                           f"{HISTOGRAM_BINS - 1} or more")
    async def peaks_histogram(self) -> list[int]:
        return self._dispatcher.stats.histogram.tolist()

    @attribute(label="Frames not triaged", dtype=int, unit="frame", format="%d",
               description="Images that went to the writer untriaged, all reasons (see not_triaged_reasons)")
    async def frames_not_triaged(self) -> int:
        return self._dispatcher.stats.not_triaged_total

    @attribute(label="Not triaged, by reason",
               dtype=str, description="Untriaged images by reason (backlog, uncorrected, triage_error...), as JSON")
    async def not_triaged_reasons(self) -> str:
        return json.dumps(dict(self._dispatcher.stats.frames_not_triaged))

    @attribute(label="Triage backlog", dtype=int, unit="frame", format="%d",
               description="Images waiting for triage: queued, or in a worker")
    async def backlog(self) -> int:
        return self._dispatcher.backlog

    @attribute(label="Queue fill", dtype=float, unit="%", format="%.1f", max_alarm=QUEUE_ALARM_PERCENT,
               description="Fill of the hit finder's queue; frames skip triage beyond BypassFill")
    async def queue_fill(self) -> float:
        return self._dispatcher.inbox.fill_percent

    @attribute(label="Triage latency (mean)", dtype=float, unit="ms", format="%.2f",
               description="Mean time from handing an image to a worker to having its result")
    async def triage_latency(self) -> float:
        return self._dispatcher.stats.latency_mean_ms

    @attribute(label="Triage latency (max)",
               dtype=float, unit="ms", format="%.2f", description="Longest such time in this series")
    async def triage_latency_max(self) -> float:
        return self._dispatcher.stats.latency_max_ms

    @attribute(label="Triage time per frame", dtype=float, unit="ms", format="%.2f",
               description="Mean worker time per image (decoding and peakfinder8; one core)")
    async def triage_time(self) -> float:
        return self._dispatcher.stats.time_mean_ms

    @attribute(label="Workers alive",
               dtype=int, unit="process", format="%d", description="Triage worker processes running")
    async def workers_alive(self) -> int:
        return self._dispatcher.pool.workers_alive

    @attribute(label="Last hit number", dtype=int, unit="frame", format="%d",
               description="Hits seen since the series start; numbers last_hit_image")
    async def last_hit_number(self) -> int:
        hit = self._dispatcher.last_hit
        return hit.number if hit else 0

    @attribute(label="Last hit image",
               dtype=((np.float32,),), max_dim_x=MAX_IMAGE_WIDTH, max_dim_y=MAX_IMAGE_HEIGHT, unit="ADU",
               data_ready_event_implemented=True,
               description="The last hit (Eiger frame, or AGIPD cell as 16 stacked modules); gap and masked pixels "
                           "0 (Eiger) or NaN (AGIPD bad pixels, missing modules), so autoscaling viewers see the "
                           "signal; data-ready events at most image_events_max_rate per second")
    async def last_hit_image(self) -> np.ndarray:
        hit = self._dispatcher.last_hit
        if hit is None:
            return np.zeros((1, 1), dtype=np.float32)
        if self._image_cache is None or self._image_cache[0] != hit.number:
            self._image_cache = (hit.number, await asyncio.to_thread(_image_of, hit))  # 4M: tens of ms
        return self._image_cache[1]

    @attribute(dtype=(np.float32,), max_dim_x=MAX_PEAKS_SHOWN, unit="pixel", format="%.2f", label="Last hit peaks x",
               description="Fast-scan (column) centres of the last hit's stored peaks, pixel indices of "
                           "last_hit_image (0 = centre of the first pixel), for an overlay; pairs with "
                           "last_hit_peaks_y")
    async def last_hit_peaks_x(self) -> np.ndarray:
        hit = self._dispatcher.last_hit
        return hit.peaks.fs if hit is not None else np.zeros(0, np.float32)

    @attribute(dtype=(np.float32,), max_dim_x=MAX_PEAKS_SHOWN, unit="pixel", format="%.2f", label="Last hit peaks y",
               description="Slow-scan (row) centres of the last hit's stored peaks in last_hit_image (AGIPD: "
                           "module * 512 + row); pairs with last_hit_peaks_x")
    async def last_hit_peaks_y(self) -> np.ndarray:
        hit = self._dispatcher.last_hit
        return hit.peaks.ss if hit is not None else np.zeros(0, np.float32)

    @command(dtype_in=str, doc_in="YAML or JSON: triage parameters under detpipe's or OM's names, or a whole OM "
                                  "monitor.yaml (its peakfinder8_peak_detection and crystallography sections)",
             dtype_out=str, doc_out="The parameters now in use, and the OM keys not taken")
    async def LoadParameters(self, text: str) -> str:
        """Set several triage parameters at once, validated together; nothing changes if any is wrong.

        OM's hit rule is strict on both sides, so its ``min_num_peaks_for_hit: 8`` becomes ``min_peaks: 9``
        (``TriageParams``' ``OM_NAMES``). Keys of an OM monitor.yaml that detpipe does not take (broadcast;
        geometry file and bad-pixel map: the GeometryFile and MaskFile properties) are named in the answer,
        not refused. Applies from
        the next series, as a write of each attribute would."""
        document = await asyncio.to_thread(settings_mapping, text, "LoadParameters' argument", "triage parameters")
        values, ignored = om_monitor_parameters(document)
        self.requested_params = TriageParams.from_mapping({**self.requested_params.to_mapping(),
                                                           **canonical_names(values)})
        self._rebuild_geometry()
        applied = ", ".join(f"{name}={value}" for name, value in self.requested_params.to_mapping().items())
        return f"in use from the next series: {applied}" + (f"; not taken: {', '.join(ignored)}" if ignored else "")

    @command
    async def Reset(self) -> None:
        """Abort any series passing through (files closed valid), leave FAULT and clear the counters; the next
        series is triaged again."""
        await self.release_series("Reset")
        self._dispatcher.failure = None
        self._dispatcher.stats.reset()
        self.clear_fault()
        self.refresh(force=True)


def _image_of(hit: LastHit) -> np.ndarray:
    """Pixels of the hit as float32, masked as the live view masks them (decoded on read, so hits nobody looks
    at cost nothing)."""
    use_one_openmp_thread()  # decoded in a Tango thread: no spinning OpenMP threads beside the triage workers
    item = hit.item
    if isinstance(item, Frame):
        return frame_picture(item, None)[0].astype(np.float32)
    return TrainView(cell=hit.image, module=-1).render(item)[0]


def unusable(prop: str, path: str, read: Callable[[str], object]) -> str:
    """Why the file property ``prop`` cannot be used, or "" (none given, or ``read`` takes it). Checked at Init
    so that a wrong file shows in this device's Status instead of leaving every frame untriaged with the
    reason in a log; its fit to the detector (shapes, panels) is checked when the geometry is built."""
    if not path:
        return ""
    try:
        read(path)
    except Exception as err:  # noqa: BLE001 - any unreadable file: one line in Status, the server stays up
        return unusable_file(prop, path, err)
    return ""

"""Tango face of the RED/raw data policy: what each run keeps, reduced how, and the metrics of what was kept.

Frames reach it in-process (from the hit finder or the detector) and leave for the raw writer and the RED
files; only the policy, counters and State travel through Tango.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from tango import AttrWriteType, DevState, Util
from tango.server import attribute, command, device_property

from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.core.settings_document import settings_mapping
from detpipe.pipeline.core.stage import Item
from detpipe.pipeline.core.stage_runner import StageRunner
from detpipe.pipeline.policy.agipd_train_reducer import AgipdTrainReducer
from detpipe.pipeline.policy.data_policy_stage import DataPolicyStage, RedRun
from detpipe.pipeline.policy.frame_reducer import EigerFrameReducer
from detpipe.pipeline.policy.reduction_params import MAX_MANTISSA_BITS, UNITS, Policy, ReductionParams
from detpipe.pipeline.policy.run_layout import RAW_SUBDIRECTORY
from detpipe.pipeline.triage.setup import DetectorKind
from detpipe.pipeline.writers.exdf_writer import ExdfWriter

from .detpipe_device import CLOSE_WAIT_S, DetpipeDevice, SeriesEngine, in_background, settle
from .nexus_writer import QUEUE_ALARM_PERCENT, NexusWriter
from .parameter_attribute import choice_attribute, parameter_attribute

log = logging.getLogger(__name__)

POLICY_LABELS = [p.value for p in Policy]


def _metric(name: str, label: str, dtype: type, unit: str, fmt: str, description: str) -> attribute:
    """A read-only attribute showing ``ReductionStats.metrics()[name]`` of the current or last run."""

    async def read(device: Any) -> Any:
        return dtype(device.metric(name))

    return attribute(name=name, dtype=dtype, fget=read, unit=unit, format=fmt, label=label,
                     description=f"{description} (current or last run; the manifest holds the final value)")


def _json_list(name: str, text: str, example: str) -> Any:
    try:
        return json.loads(text or "[]")
    except json.JSONDecodeError as err:
        raise ValueError(f"{name} must be JSON like {example}: {err}") from err


def _reduction(name: str, label: str, dtype: type, description: str, **limits: float) -> attribute:
    return parameter_attribute(name, label, dtype, description, units=UNITS, **limits)


class DataPolicy(DetpipeDevice):
    """Decides per run what is kept: raw (everything, lossless), red (reduced only) or raw+red (raw to raw/ for
    short retention, RED to red/ for the archive), below the writer's saving_directory. Reductions (hits plus
    a random miss sample, modules/ROIs, rounding, 2x2 binning, sparse) apply from the next series; the policy
    cannot change while a series runs. Each run ends with <prefix>_manifest.json for the catalogue."""

    EVENT_ATTRIBUTES = ("frames_in", "frames_kept", "bytes_red", "reduction_ratio")

    WriterDevice = device_property(
        dtype=str, mandatory=True,
        doc="Mandatory. NexusWriter device in this server: its saving_directory is the run directory, raw files go to raw/",
    )
    BufferFrames = device_property(
        dtype=int, default_value=256, doc="Frames the data policy's queue holds (~1-3 MB each for a 4M)"
    )

    async def init_device(self) -> None:
        await super().init_device()
        self.requested_params = ReductionParams()
        self.inbox: FrameQueue[Item] = FrameQueue(self.BufferFrames, FullPolicy.DROP)
        self._stage: DataPolicyStage | None = None
        self._runner: StageRunner | None = None
        self._prepared: int | None = None  # series prepared or running, until finalised
        self._finalise_error = ""
        self.refresh(force=True)
        self.start_monitor()

    async def delete_device(self) -> None:
        await self.release_series("Init")
        await self.stop_monitor()
        if self._runner is not None:
            await settle([in_background(self._runner.close)], CLOSE_WAIT_S)  # closes a series still open
        await super().delete_device()

    def series_engines(self) -> list[SeriesEngine]:
        return [] if self._runner is None else [self._runner]

    @property
    def in_series(self) -> bool:
        return self._runner is not None and self._runner.in_series

    def _writer(self) -> NexusWriter:
        writer = Util.instance().get_device_by_name(self.WriterDevice)
        if not isinstance(writer, NexusWriter):
            raise TypeError(f"{self.WriterDevice} is a {type(writer).__name__}, not a NexusWriter")
        return writer

    def _engine(self) -> tuple[DataPolicyStage, StageRunner]:
        """The stage and its thread, made on first use: the writer device is created after this one."""
        if self._stage is None or self._runner is None:
            writer = self._writer()
            self._stage = DataPolicyStage(writer.saving_params, raw_outbox=writer.inbox)
            self._runner = StageRunner("data policy", self._stage, self.inbox, on_failure=self._on_failure)
            self._runner.start()
        return self._stage, self._runner

    def _on_failure(self, reason: str) -> None:
        self._fault = reason

    # --- sink used in-process by detector devices (eiger.acquisition.FrameSink, agipd.acquisition.RunSink) ---
    def prepare(self, series_id: int) -> Path:
        """An Eiger series: claims its RED files and manifest, and the raw writer's files in raw/ when raw is
        kept; returns the RED master (policy raw: where it would be)."""
        run = self._prepare_stage(series_id)
        if run.params.policy.keeps_raw:
            self._writer().prepare(series_id, directory=run.run_directory / RAW_SUBDIRECTORY)
        return run.red_master

    def prepare_run(self, run_number: int) -> Path:
        """An AGIPD run: the same, with EuXFEL run directories in raw/ and red/; returns the raw run directory
        when raw is kept, else the RED one."""
        writer = self._writer()
        run = self._prepare_stage(run_number, exdf=writer.exdf_writer)
        if run.params.policy.keeps_raw:
            return writer.prepare_run(run_number, directory=run.run_directory / RAW_SUBDIRECTORY)
        return run.red_master.parent

    def _prepare_stage(self, series_id: int, *, exdf: ExdfWriter | None = None) -> RedRun:
        stage, runner = self._engine()
        if runner.failure is not None:
            raise RuntimeError(f"data policy is in FAULT ({runner.failure}); Reset it first")
        writer = self._writer()
        stage.configure(params=self.requested_params, saving=writer.saving_params)
        stage.raw_outbox = writer.inbox  # the writer's queue of now: an Init of the writer replaced the last one
        run = stage.prepare(series_id, exdf=exdf)
        self._prepared, self._finalise_error = series_id, ""
        runner.last_end = None
        return run

    def check_next(self, kind: DetectorKind, shape: tuple[int, int] | None) -> None:
        """Refuse a series at Prepare, before the detector is armed, when the policy cannot apply to its images
        (a module or ROI outside the detector, an Eiger-only reduction for an AGIPD run). ``shape`` is None
        while the detector's image size is not known yet; the background Prepare checks again."""
        params = self.requested_params
        if kind is DetectorKind.AGIPD:
            if params.policy.keeps_red:
                AgipdTrainReducer.check(params)
        elif shape is not None:
            EigerFrameReducer.check(params, shape)

    @property
    def raw_kept(self) -> bool:
        """Whether the series prepared last sends every frame to the raw writer."""
        stage = self._stage
        return stage is not None and stage.run is not None and stage.run.params.policy.keeps_raw

    def series_written_check(self, series_id: int) -> Callable[[], bool]:
        """Whether the RED files of ``series_id`` are closed and, when raw is kept, the raw writer has closed
        it too. Bound to the threads that take the series, as the writer's own check is."""
        stage, runner = self._engine()
        assert stage.run is not None
        raw = self._writer().series_written_check(series_id) if stage.run.params.policy.keeps_raw else None
        return partial(_series_written, runner, raw, series_id)

    async def finalise(self) -> Path | None:
        """Checksums, retention metadata and the manifest, once every file of the series is closed; nothing when
        an Init of this device abandoned the series."""
        stage, series_id = self._stage, self._prepared
        if stage is None or stage.run is None or stage.run.series_id != series_id:
            log.warning("%s: no manifest for series %s, abandoned by an Init", self.get_name(), series_id)
            return None
        raw_files: list[Path] = []
        raw_master = None
        if stage.run.params.policy.keeps_raw:
            raw_files, raw_master = stage.run.layout.raw_paths(), stage.run.layout.raw_master
        try:
            return await asyncio.to_thread(stage.finalise, raw_files, raw_master=raw_master)
        except OSError as err:
            self._finalise_error = f"manifest of series {series_id} not written: {err}"
            raise
        finally:
            self._prepared = None
            self.refresh(force=True)

    # --- State ---
    @property
    def running(self) -> bool:
        return self._prepared is not None

    def assess(self) -> tuple[DevState, str]:
        if self._stage is None:
            return DevState.ON, f"Policy {self.requested_params.policy.value}; no run yet"
        stats, runner = self._stage.stats, self._runner
        summary = (f"{stats.frames_kept}/{stats.frames_in} frames kept ({stats.hits_kept} hits, {stats.misses_kept} "
                   f"sampled misses), reduction {stats.reduction_ratio:.1f}x")
        if runner is not None and runner.in_series:
            alarm = self.inbox.fill_percent > QUEUE_ALARM_PERCENT or stats.rejected_total
            return (DevState.ALARM if alarm else DevState.RUNNING), f"Reducing ({self._stage.params.policy.value}): {summary}"
        if self._finalise_error or stats.rejected_total:
            return DevState.ALARM, self._finalise_error or f"Last run rejected {dict(stats.rejected)}; {summary}"
        return DevState.ON, f"Idle, policy {self.requested_params.policy.value}. Last run: {summary}"

    def event_values(self) -> dict[str, Any]:
        if self._stage is None:
            return {}
        stats = self._stage.stats
        return {"frames_in": stats.frames_in, "frames_kept": stats.frames_kept, "bytes_red": float(stats.bytes_red),
                "reduction_ratio": stats.reduction_ratio}

    # --- policy and reductions (memorized) ---
    def set_parameter(self, name: str, value: Any) -> None:
        """Validated through ``ReductionParams``; a bad value raises ``ConfigError`` and changes nothing."""
        if name == "policy" and self.running:
            raise RuntimeError(f"cannot change the policy while series {self._prepared} is prepared or running; "
                               "Stop or finish it first")
        self.requested_params = ReductionParams.from_mapping({**self.requested_params.to_mapping(), name: value})

    policy = choice_attribute(
        "policy", POLICY_LABELS, label="Data policy",
        description="raw: everything, lossless; red: reduced data only; raw+red: raw to raw/ (short retention) "
                    "and RED to red/ (archive). Refused while a series runs",
        get=lambda device: device.requested_params.policy.value,
        put=lambda device, policy: device.set_parameter("policy", policy))

    hits_only = _reduction("hits_only", "Hits only",
                           bool, "Keep hits plus a random sample of misses (flagged) instead of all frames")
    miss_fraction = _reduction("miss_fraction", "Misses kept (fraction)",
                               float, "Fraction of misses kept as an unbiased control sample",
                               min_value=0, max_value=1)
    miss_seed = _reduction("miss_seed", "Miss sample seed",
                           int, "Seed of the miss sample (the same frames are picked offline)",
                           min_value=0)
    drop_unlit_cells = _reduction("drop_unlit_cells", "Drop unlit cells",
                                  bool, "AGIPD: drop memory cells that saw no pulse")
    lit_cell_min_pixels = _reduction("lit_cell_min_pixels", "Lit cell min. pixels",
                                     int, "A cell with fewer lit pixels saw no pulse",
                                     min_value=0)
    mantissa_bits = _reduction("mantissa_bits", "Mantissa bits",
                               int, f"Significant bits kept per pixel; {MAX_MANTISSA_BITS} = lossless",
                               min_value=1, max_value=MAX_MANTISSA_BITS)
    rounding_step = _reduction("rounding_step", "Rounding step",
                               float, "Round pixels to this step, a power of two; 0 = off",
                               min_value=0)
    binning = _reduction("binning", "Binning", int, "1 = off, 2 = sum 2x2 pixels", min_value=1, max_value=2)
    sparse = _reduction("sparse", "Sparse frames",
                        bool, "Keep only pixels above the radial background (pyFAI sparse frames)")
    sparse_threshold_sigma = _reduction("sparse_threshold_sigma", "Sparse threshold",
                                        float, "Sparse: keep pixels this many sigma above "
                                        "the background", min_value=0)
    sparse_noise = _reduction("sparse_noise", "Sparse noise floor",
                              float, "Sparse: and at least this far above the background",
                              min_value=0)
    raw_retention_days = _reduction("raw_retention_days", "Raw retention",
                                    int, "Days raw data is kept before deletion", min_value=0)
    red_archive = _reduction("red_archive", "Archive RED data", bool, "RED data goes to the long-term archive")
    embargo_date = _reduction("embargo_date", "Embargo date",
                              str, "ISO date after which the data may be public; empty = none")

    @attribute(label="Modules kept", dtype=str, access=AttrWriteType.READ_WRITE, memorized=True, hw_memorized=True,
               description='Modules kept, JSON list of module numbers (Eiger modules row by row); "[]" = all '
                           "(applies from the next series)")
    async def modules(self) -> str:
        return json.dumps(list(self.requested_params.modules))

    @modules.write
    async def modules(self, value: str) -> None:
        self.set_parameter("modules", _json_list("modules", value, "[0, 3]"))

    @attribute(label="ROIs kept", dtype=str, access=AttrWriteType.READ_WRITE, memorized=True, hw_memorized=True,
               description='ROIs kept, JSON [[x, y, width, height], ...] in pixels (x fast, y slow); "[]" = whole '
                           "frame (applies from the next series)")
    async def rois(self) -> str:
        return json.dumps([roi.to_list() for roi in self.requested_params.rois])

    @rois.write
    async def rois(self, value: str) -> None:
        self.set_parameter("rois", _json_list("rois", value, "[[0, 0, 100, 50]]"))

    @attribute(label="Policy (JSON)",
               dtype=str, description="The complete policy of the next series as JSON (the NXnote document)")
    async def policy_config(self) -> str:
        return json.dumps(self.requested_params.to_mapping())

    @command(dtype_in=str, doc_in="JSON (or YAML) mapping of data policy parameters; unknown keys are refused")
    async def LoadPolicy(self, text: str) -> None:
        """Set several parameters at once, validated together; nothing changes if any is wrong.

        The text is parsed off the event loop, with its size and YAML aliases bounded (``settings_mapping``)."""
        document = await asyncio.to_thread(settings_mapping, text, "LoadPolicy's argument", "data policy parameters")
        new = ReductionParams.from_mapping({**self.requested_params.to_mapping(), **document})
        if new.policy is not self.requested_params.policy and self.running:
            raise RuntimeError("cannot change the policy while a series is prepared or running")
        self.requested_params = new

    # --- metrics ---
    def metric(self, name: str) -> int | float:
        return 0 if self._stage is None else self._stage.stats.metrics()[name]

    frames_in = _metric("frames_in", "Frames in", int, "frame", "%d", "Frames received")
    frames_kept = _metric("frames_kept", "Frames kept",
                          int, "frame", "%d", "Frames kept (hits, sampled misses, untriaged)")
    hits_kept = _metric("hits_kept", "Hits kept", int, "frame", "%d", "Hits kept")
    misses_kept = _metric("misses_kept", "Misses kept", int, "frame", "%d", "Misses kept as the random control sample")
    untriaged_kept = _metric("untriaged_kept", "Untriaged kept",
                             int, "frame", "%d", "Frames kept because they were not triaged")
    frames_dropped_by_policy = _metric("frames_dropped_by_policy", "Frames dropped by policy", int, "frame", "%d",
                                       "Frames deliberately not kept in RED (misses outside the sample, unlit cells)")
    bytes_in = _metric("bytes_in", "Bytes in", float, "B", "%.0f", "Bytes received (the detector's encoded frames)")
    bytes_raw = _metric("bytes_raw", "Raw bytes written", float, "B", "%.0f", "Bytes of raw data written")
    bytes_red = _metric("bytes_red", "RED bytes written", float, "B", "%.0f", "Bytes of RED data written")
    reduction_ratio = _metric("reduction_ratio", "Reduction ratio", float, "", "%.2f", "bytes_in / bytes_red")
    compression_ratio = _metric("compression_ratio", "Compression ratio", float, "", "%.2f",
                                "Dense bytes of the kept frames / bytes_red")
    rms_error_photons = _metric("rms_error_photons", "Rounding error (RMS)", float, "photon", "%.4f",
                                "RMS pixel change made by rounding")
    rms_error_sigma = _metric("rms_error_sigma", "Rounding error / sigma", float, "", "%.4f",
                              "RMS pixel change made by rounding, in units of the pixel's Poisson sigma")
    pixels_dropped_fraction = _metric("pixels_dropped_fraction", "Pixels dropped (fraction)", float, "", "%.4f",
                                      "Fraction of valid pixels of kept frames dropped by ROI/modules or sparse")

    @command
    async def Reset(self) -> None:
        """Abort any series being reduced (files closed valid), leave FAULT and forget any series that never
        finished; the next series is reduced normally."""
        await self.release_series("Reset")
        if self._runner is not None:
            self._runner.reset()
        self._finalise_error = ""
        self._prepared = None  # a series that failed before its manifest no longer blocks policy changes
        self.clear_fault()
        self.refresh(force=True)


def _series_written(runner: StageRunner, raw_written: Callable[[], bool] | None, series_id: int) -> bool:
    end = runner.last_end
    red_closed = (end is not None and end.series_id == series_id and not runner.in_series) or not runner.alive
    return red_closed and (raw_written is None or raw_written())

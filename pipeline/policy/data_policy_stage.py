"""The data policy stage: after triage, before the files. It hands every frame (or train) to the raw writer
when the run keeps raw, and writes the kept frames, reduced, as the run's RED files.

Layout of a run (the writer's saving directory; run_layout.py)::

    raw/<stem>_master.h5, raw/<stem>_data_00000N.h5     Eiger, policy raw or raw+red (short retention)
    red/<stem>_master.h5, red/<stem>_data_00000N.h5     Eiger, policy red or raw+red: NXmx of the kept frames
    red/<stem>_sparse.h5                                ... or, with sparse, the pyFAI sparse-frame file
    raw/r0007/…, red/r0007/…                            AGIPD: EuXFEL run directories (agipd_red_output.py)
    <stem>_manifest.json                                written by ``finalise`` once every file is closed

Eiger RED frames are numbered 0, 1, 2… in RED order; ``/entry/process_02/kept_frames`` maps them back to their
original frame ids (AGIPD: ``train_id << 16 | cell_id``). The stage decides and reduces with pure functions of
each frame and the policy, so the same raw data gives the same RED bytes online and offline (``detpipe reduce``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import h5py
import numpy as np

from ..core.errors import AcquisitionStateError, FrameRejected, TargetFileExists
from ..core.file_clock import file_time_utc
from ..core.frame import Frame
from ..core.frame_queue import FrameQueue
from ..core.saving_target import SavingParams, claim_series_files, rewrite_h5, series_file_names
from ..core.series import EndOfSeries, EndReason, SeriesStart
from ..core.stage import Item
from ..core.train import Train
from ..core.triage_params import TriageParams
from ..nexus.nxmx_master import renumber_omega
from ..writers.exdf_writer import ExdfWriter
from ..writers.nxmx_writer import NxmxWriter
from .agipd_red_output import AgipdRedOutput
from .event_selection import KeepReason, keep_reason
from .frame_reducer import EigerFrameReducer, ReducedFrame
from .provenance import write_raw_checksums, write_reduction_process, write_retention
from .reduction_params import ReductionParams
from .reduction_pool import ReductionPool
from .reduction_stats import ReductionStats
from .run_layout import RED_SUBDIRECTORY, ExdfRunLayout, NxmxRunLayout, RunLayout, manifest_path, raw_master_link
from .run_manifest import describe_files, manifest_document, write_manifest
from .sparse_file import SparseFramesFile

log = logging.getLogger(__name__)


def _now() -> str:
    return file_time_utc().isoformat()


@dataclass
class RedRun:
    """One run under a data policy, from Prepare to its manifest; owned by the stage's thread."""

    series_id: int
    params: ReductionParams
    layout: RunLayout
    triage: TriageParams | None = None
    detector: str = ""
    start_date: str = ""
    end_date: str = ""
    kept_frames: list[int] = field(default_factory=list)
    keep_reasons: list[int] = field(default_factory=list)

    @property
    def run_directory(self) -> Path:
        return self.layout.run_directory

    @property
    def stem(self) -> str:
        return self.layout.stem

    @property
    def red_master(self) -> Path:
        return self.layout.red_master

    @property
    def manifest(self) -> Path:
        return manifest_path(self.layout)

    def red_paths(self) -> list[Path]:
        return self.layout.red_paths() if self.params.policy.keeps_red else []

    def keep(self, frame_id: int, reason: KeepReason) -> None:
        self.kept_frames.append(frame_id)
        self.keep_reasons.append(int(reason))


class DataPolicyStage:
    """Implements ``Stage``: raw frames onward to ``raw_outbox`` (when the policy keeps raw), kept frames reduced
    into RED files. ``prepare`` runs in the control thread and raises every refusal there."""

    def __init__(self, saving: SavingParams, params: ReductionParams | None = None, *,
                 raw_outbox: FrameQueue[Item] | None = None, archived_raw_master: Path | None = None) -> None:
        """``archived_raw_master``: offline, the raw master the RED files come from, whatever the policy (online
        the raw master is the run's own, under a policy that keeps raw data)."""
        self.saving = saving
        self.archived_raw_master = archived_raw_master
        self.params = params or ReductionParams()
        self.raw_outbox = raw_outbox
        self.stats = ReductionStats()
        self.run: RedRun | None = None  # the run prepared or being written, then the last one finished
        self._in_series = False
        self._reducer: EigerFrameReducer | None = None
        self._reductions: ReductionPool[tuple[Frame, KeepReason]] | None = None  # kept frames being reduced
        self._red_writer: NxmxWriter | None = None
        self._sparse: SparseFramesFile | None = None
        self._agipd: AgipdRedOutput | None = None
        self._logged_reasons: set[str] = set()

    def configure(self, *, params: ReductionParams | None = None, saving: SavingParams | None = None) -> None:
        if self._in_series:
            raise AcquisitionStateError("change the data policy", f"reducing series {self.run and self.run.series_id}",
                                        "wait for the series to end or abort it")
        self.params = params or self.params
        self.saving = saving or self.saving

    def prepare(self, series_id: int, *, exdf: ExdfWriter | None = None) -> RedRun:
        """Claims the RED target and the manifest of ``series_id`` (TargetFileExists, PathOutsideDataRoots,
        ConfigError…). An AGIPD run gives ``exdf``, the raw run writer whose layout its RED files copy."""
        if self._in_series:
            raise AcquisitionStateError("prepare", "reducing a series", "wait for the series to end or abort it")
        params = self.params
        layout: RunLayout = (ExdfRunLayout(self.saving.directory, series_id) if exdf is not None else
                             NxmxRunLayout(self.saving.directory, series_file_names(self.saving, series_id).stem,
                                           sparse=params.sparse))
        if manifest_path(layout).exists():
            raise TargetFileExists(manifest_path(layout))
        self.stats.reset()
        self._agipd = None
        if params.policy.keeps_red:
            if exdf is not None:
                assert isinstance(layout, ExdfRunLayout)
                self._agipd = AgipdRedOutput.prepare(exdf, params, self.stats, layout)
            else:
                self._claim_nxmx(series_id, layout)
        log.info("series %d: policy %s, run files %s", series_id, params.policy.value, layout.stem)
        self.run = RedRun(series_id, params, layout)
        return self.run

    def _claim_nxmx(self, series_id: int, layout: RunLayout) -> None:
        red_saving = replace(self.saving, directory=self.saving.directory / RED_SUBDIRECTORY)
        if self.params.sparse:
            claim_series_files(red_saving, series_id)
            if layout.red_master.exists():
                raise TargetFileExists(layout.red_master)
        else:
            self._red_writer = NxmxWriter(red_saving)
            self._red_writer.prepare(series_id)

    # --- Stage ---
    def start_series(self, start: SeriesStart) -> None:
        if self.run is None or self.run.series_id != start.series_id or self.run.start_date:
            self.prepare(start.series_id)
        run = self.run
        assert run is not None
        self._in_series = True
        run.start_date, run.triage = _now(), start.triage
        run.detector = start.config.description if start.config is not None else ""
        self._forward_raw(start)
        if not run.params.policy.keeps_red:
            return
        if self._agipd is not None:
            self._agipd.start(start)
            return
        self._reducer = EigerFrameReducer(run.params, start)
        self._reductions = ReductionPool()
        red_start = self._reducer.red_start(start)
        if run.params.sparse:
            assert self._reducer.bins is not None and red_start.config is not None
            self._sparse = SparseFramesFile(
                run.red_master, bins=self._reducer.bins, shape=red_start.config.shape,
                dtype=red_start.config.dtype, dummy=self._reducer.masked_value or 0,
                max_peaks=start.triage.max_num_peaks if start.triage is not None else 2048)
        else:
            assert self._red_writer is not None
            self._red_writer.start_series(red_start)

    def process(self, item: Frame | Train) -> None:
        run = self.run
        if run is None or not self._in_series:
            raise FrameRejected("no_series", f"item {item.index} of series {item.series_id} before its start")
        agipd_run = isinstance(run.layout, ExdfRunLayout)
        if isinstance(item, Train) != agipd_run:
            raise FrameRejected("unsupported_item", f"a {type(item).__name__} in a run prepared for "
                                f"{'AGIPD trains' if agipd_run else 'Eiger frames'}")
        frames = item.frames if isinstance(item, Train) else 1
        self.stats.frames_in += frames
        self.stats.bytes_in += item.nbytes if isinstance(item, Train) else item.nbytes_encoded
        self._forward_raw(item)
        if not run.params.policy.keeps_red:
            self.stats.kept[KeepReason.ALL] += frames
        elif isinstance(item, Train):
            assert self._agipd is not None
            for frame_id, reason in self._agipd.add(item):
                run.keep(frame_id, reason)
        else:
            reason = keep_reason(item.triage, item.index, run.params)
            self.stats.kept[reason] += 1
            if reason.kept:
                self._write_red(run, item, reason)

    def _write_red(self, run: RedRun, frame: Frame, reason: KeepReason) -> None:
        """Hands the kept frame to the reduction threads, then writes, in frame order, the oldest reduced frames
        beyond the pool's ``IN_FLIGHT``."""
        assert self._reducer is not None and self._reductions is not None
        self._reductions.submit(partial(self._reducer.reduce, frame), (frame, reason))
        self._write_reduced(run)

    def _write_reduced(self, run: RedRun, *, wait_all: bool = False) -> None:
        """RED frames are numbered as they are written, so a kept frame whose reduction was rejected leaves no
        hole in the RED stack and ``kept_frames`` still maps each RED frame to its raw frame."""
        assert self._reductions is not None
        for outcome, (frame, reason) in self._reductions.done(wait_all=wait_all):
            try:
                if isinstance(outcome, FrameRejected):
                    raise outcome
                self._write_one(run, frame, reason, outcome)
            except FrameRejected as err:
                self._count_rejected(frame, err)

    def _write_one(self, run: RedRun, frame: Frame, reason: KeepReason, reduced: ReducedFrame) -> None:
        reduced.count_into(self.stats)
        if isinstance(reduced.red, Frame):
            assert self._red_writer is not None
            self._red_writer.process(replace(reduced.red, index=len(run.kept_frames)))
            self.stats.bytes_red += reduced.red.nbytes_encoded
        else:
            assert self._sparse is not None
            self.stats.bytes_red += self._sparse.append(reduced.red, frame.triage.peaks if frame.triage else None)
        run.keep(frame.index, reason)

    def _count_rejected(self, frame: Frame, err: FrameRejected) -> None:
        """A kept frame that could not be reduced (its chunk does not decode) or written: counted as the stage
        runner counts what ``process`` raises, since it comes back after ``process`` has returned."""
        self.stats.rejected[err.reason] += 1
        if err.reason not in self._logged_reasons:
            self._logged_reasons.add(err.reason)
            log.warning("kept frame %d could not be reduced: %s (further ones counted only)", frame.index, err)

    def finish(self, end: EndOfSeries) -> None:
        """Hands the end to the raw writer first (it closes in parallel), then closes the RED files with their
        provenance."""
        run, started = self.run, self._in_series
        self._forward_raw(end)
        self._in_series = False
        if run is None or not started:
            return  # a series ended before its start arrived (aborted while arming): nothing was opened
        if self._reductions is not None:
            self._write_reduced(run, wait_all=True)
            self._reductions.close()
        run.end_date = _now()
        if self._agipd is not None:
            self._agipd.finish(end)
        if self._red_writer is not None:
            self._red_writer.finish(end)
        if self._red_writer is not None or self._agipd is not None:
            with rewrite_h5(run.red_master) as handle:
                self._write_provenance(handle, run)
        if self._sparse is not None:
            self._write_provenance(self._sparse.h5, run)
            self._sparse.close()
        self._red_writer = self._sparse = self._reducer = self._agipd = self._reductions = None

    def abort(self, reason: str) -> None:
        """Leaves the RED files valid and ends the raw series too, so no file stays open."""
        self._in_series = False
        if self._reductions is not None:
            self._reductions.close()  # the frames still being reduced are not written
        if self._red_writer is not None:
            self._red_writer.abort(reason)
        if self._sparse is not None:
            self._sparse.close()
        if self._agipd is not None:
            self._agipd.abort(reason)
        self._red_writer = self._sparse = self._reducer = self._agipd = self._reductions = None
        if self.run is not None:
            self._forward_raw(EndOfSeries(self.run.series_id, EndReason.ERROR, detail=reason))

    def _forward_raw(self, item: Item) -> None:
        if self.raw_outbox is not None and self.run is not None and self.run.params.policy.keeps_raw:
            self.raw_outbox.put(item, wait_for_room=True)
            if isinstance(item, (Frame, Train)):
                self.stats.bytes_raw += item.nbytes if isinstance(item, Train) else item.nbytes_encoded

    def _write_provenance(self, handle: h5py.File, run: RedRun) -> None:
        if self.archived_raw_master is not None:
            raw_master = os.path.relpath(self.archived_raw_master, run.layout.red_master.parent)
        else:
            raw_master = raw_master_link(run.layout) if run.params.policy.keeps_raw else ""
        if isinstance(run.layout, NxmxRunLayout) and "/entry/data/data" in handle:
            renumber_omega(handle, run.kept_frames)
        write_reduction_process(
            handle, params=run.params, triage=run.triage, date=run.start_date,
            kept_frames=np.asarray(run.kept_frames, dtype=np.int64),
            keep_reasons=np.asarray(run.keep_reasons, dtype=np.int8),
            metrics=self.stats.metrics(), raw_master=raw_master)

    # --- after every file is closed (control thread) ---
    def finalise(self, raw_files: list[Path], *, raw_master: Path | None = None) -> Path:
        """Records retention in the raw master (online runs only), the raw files' checksums in the RED file, and
        writes the manifest from what is on disk; returns the manifest path."""
        run = self.run
        if run is None:
            raise AcquisitionStateError("finalise", "no run", "prepare and write a series first")
        if raw_master is not None:
            with rewrite_h5(raw_master) as handle:
                write_retention(handle.require_group("entry"), run.params)
        raw = describe_files(raw_files, run.run_directory)
        if run.params.policy.keeps_red and raw:
            with rewrite_h5(run.red_master) as handle:
                write_raw_checksums(handle, raw)
        red = describe_files(run.red_paths(), run.run_directory)
        self.stats.bytes_raw = sum(f.size for f in raw) if run.params.policy.keeps_raw else 0
        self.stats.bytes_red = sum(f.size for f in red)
        document = manifest_document(
            dataset=run.stem, start_date=run.start_date, end_date=run.end_date, detector=run.detector,
            params=run.params, metrics=self.stats.metrics(), raw_files=raw, red_files=red)
        write_manifest(run.manifest, document)
        return run.manifest

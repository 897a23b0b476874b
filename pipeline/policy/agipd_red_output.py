"""The RED files of one AGIPD run: the kept cells of the kept modules as an EuXFEL run directory, and every
cell's decision in the run's REDU00 file.

The kept cells go through the same ``ExdfWriter`` as raw runs (module sequence files plus the NeXus master
with its VDS and, for a triaged run, the kept cells' triage rows), so extra-data's ``AGIPD1M``, CrystFEL
and h5py read RED runs as they read raw ones, with the original train, pulse and cell ids. Trains in which
no cell is kept do not appear in the module files; the REDU00 file lists every train and every cell
received, with ``hitFlag``/``missFlag``/``dataFlag`` (EuXFEL practice, EXtra-redu), so the selection is visible and
sampled misses can serve as an unbiased control.
"""

from __future__ import annotations

import numpy as np

from ..core.series import EndOfSeries, SeriesStart
from ..core.train import Train
from ..exdf.module_file import RunMetadata
from ..writers.exdf_writer import ExdfWriter
from .agipd_train_reducer import AgipdTrainReducer
from .event_selection import KeepReason, frame_key
from .redu_flags_file import ReduFlagsFile, redu_file_name
from .reduction_params import ReductionParams
from .reduction_stats import ReductionStats
from .run_layout import RED_SUBDIRECTORY, ExdfRunLayout


class AgipdRedOutput:
    """Reduces and writes the trains of one run; ``writer`` is prepared for the run's red/ directory."""

    def __init__(self, writer: ExdfWriter, params: ReductionParams, stats: ReductionStats,
                 layout: ExdfRunLayout) -> None:
        self.writer = writer
        self.reducer = AgipdTrainReducer(params, stats)
        self.stats = stats
        self.layout = layout
        self._frames_seen = 0  # frames of the run before the next train: the raw run's frame index
        self._flags: ReduFlagsFile | None = None

    @classmethod
    def prepare(cls, template: ExdfWriter, params: ReductionParams, stats: ReductionStats,
                layout: ExdfRunLayout) -> AgipdRedOutput:
        """Claims ``red/r<run>`` (TargetFileExists, PathOutsideDataRoots…) for files laid out as ``template``'s
        (the raw writer's detector name, proposal and sequence length)."""
        AgipdTrainReducer.check(params)
        writer = template.sibling(template.params, modules=params.modules or None)
        writer.prepare(layout.run, directory=layout.run_directory / RED_SUBDIRECTORY)
        return cls(writer, params, stats, layout)

    def start(self, start: SeriesStart) -> None:
        self.writer.start_series(start)

    def add(self, train: Train) -> list[tuple[int, KeepReason]]:
        """Decides every cell of ``train``, writes the kept ones and records the decisions; returns the kept
        cells' (frame id, reason). A train the RED files cannot take raises ``FrameRejected`` before anything
        of it is recorded."""
        reasons = self.reducer.decide(train, self._frames_seen)
        reduced = self.reducer.reduce(train, reasons)
        if reduced is not None:
            written = self.writer.stats.bytes_written
            self.writer.process(reduced)
            self.stats.bytes_red += self.writer.stats.bytes_written - written
        self._frames_seen += train.frames
        return self._record(train, reasons)

    def _record(self, train: Train, reasons: list[KeepReason]) -> list[tuple[int, KeepReason]]:
        if self._flags is None:
            self._flags = ReduFlagsFile(
                self.layout.directory(RED_SUBDIRECTORY) / redu_file_name(train.product, self.layout.run),
                detector=self.writer.detector, metadata=RunMetadata(self.writer.proposal, self.layout.run))
        triage = train.triage or (None,) * train.frames
        self._flags.add_train(
            train.train_id, round(train.timestamp_s * 1e9), pulse_ids=train.pulse_ids, cell_ids=train.cell_ids,
            reasons=np.asarray(reasons, np.int8),
            n_peaks=np.array([-1 if t is None else t.n_peaks for t in triage], np.int32),
            lit_pixels=np.array([-1 if t is None else t.lit_pixels for t in triage], np.int64))
        self.stats.kept.update(reasons)
        return [(frame_key(index=0, train_id=train.train_id, cell_id=int(train.cell_ids[k])), reason)
                for k, reason in enumerate(reasons) if reason.kept]

    def finish(self, end: EndOfSeries) -> None:
        """Closes the REDU00 file even when closing the module files fails."""
        try:
            self.writer.finish(end)
        finally:
            self._close_flags()

    def abort(self, reason: str) -> None:
        try:
            self.writer.abort(reason)
        finally:
            self._close_flags()

    def _close_flags(self) -> None:
        if self._flags is not None:
            self._flags.close()
            self._flags = None

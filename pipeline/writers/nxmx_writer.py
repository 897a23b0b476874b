"""The writer stage: frames in, an NXmx master plus ``frames_per_file``-sized data files out.

Frame i goes to data file k = i // fpf + 1, row i % fpf (the DECTRIS file writer layout). Each data file is created when
its first frame arrives, at its final size when the series length is known, and closed as soon as its
last row is written, so a crash loses at most the one open file. Frames are expected in index order
(one ordered stream, one writer thread): gaps are lost frames, and a frame for a file already closed is
rejected as late. At the end of the series, whatever the reason, the open file is trimmed after its
last frame and the master gets its VDS; no padding frame is ever written. When the series start carries
triage parameters, each frame's triage result is buffered and reaches the master's CXI peak list and
``/entry/process_01`` as each data file is linked, at the end, and whenever 1024 rows are waiting.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..core.errors import AcquisitionStateError, FrameRejected
from ..core.file_clock import file_time_s
from ..core.frame import Frame
from ..core.saving_target import OverwritePolicy, SavingParams, SeriesFiles, check_free_space, claim_series_files
from ..core.series import EndOfSeries, SeriesStart
from ..nexus.nxmx_data_file import FrameLayout, NxmxDataFile
from ..nexus.nxmx_master import DataFileExtent, NxmxMaster
from ..nexus.triage_process import TriageProcess
from .stats import WriterStats

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A claimed target: params are frozen at Prepare, so a later ``configure`` cannot split a series."""

    series_id: int
    params: SavingParams
    files: SeriesFiles


@dataclass
class _Series:
    """State of the series being written; owned by the writer thread."""

    target: _Prepared
    master: NxmxMaster
    frames_expected: int | None
    layout: FrameLayout | None = None
    open_file: NxmxDataFile | None = None
    last_file_number: int = 0  # highest data file number opened so far
    highest_index: int = -1
    extents: list[DataFileExtent] = field(default_factory=list)
    complete_files: set[int] = field(default_factory=set)
    write_failed: bool = False  # a write hit the file system's limit: no more metadata is written

    @property
    def overwrite(self) -> bool:
        return self.target.params.overwrite_policy is OverwritePolicy.OVERWRITE


class NxmxWriter:
    """Writes each series to ``<prefix>_master.h5`` + ``<prefix>_data_<k:06d>.h5`` (implements ``Stage``).

    ``prepare`` runs in the control thread before a series and raises any refusal there; every other
    method runs in the writer's own thread (h5py serialises all calls under one lock anyway).
    Blobs are written with ``write_direct_chunk`` and never recompressed.
    """

    def __init__(self, params: SavingParams) -> None:
        self.params = params
        self.stats = WriterStats()
        self.master_path: Path | None = None
        self._prepared: _Prepared | None = None
        self._series: _Series | None = None

    def configure(self, params: SavingParams) -> None:
        """New saving parameters for the next series; refused while a series is being written."""
        if self._series is not None:
            raise AcquisitionStateError("configure", f"writing series {self._series.target.series_id}",
                                        "wait for the series to end or abort it")
        self.params = params
        self._prepared = None

    def prepare(self, series_id: int, *, directory: Path | None = None) -> Path:
        """Claims the target of ``series_id`` (in ``directory`` instead of the saving directory when given: a
        data policy's ``raw/``) and resets the counters; returns the master path.

        Raises ``PathOutsideDataRoots``, ``TargetFileExists`` (ABORT policy) or ``PermissionError``, so the
        operator's Prepare fails with the reason instead of the writer failing later.
        """
        if self._series is not None:
            raise AcquisitionStateError("prepare", f"writing series {self._series.target.series_id}",
                                        "wait for the series to end or abort it")
        params = self.params if directory is None else replace(self.params, directory=directory)
        files = claim_series_files(params, series_id)
        self.stats.reset()
        self._prepared = _Prepared(series_id, params, files)
        self.master_path = files.master
        return files.master

    def start_series(self, start: SeriesStart) -> None:
        """Creates the master with the series' metadata; prepares first if Prepare named another series."""
        if self._series is not None:
            log.warning("series %d had no end when series %d started; closing its files",
                        self._series.target.series_id, start.series_id)
            self.abort(f"superseded by series {start.series_id}")
        if self._prepared is None or self._prepared.series_id != start.series_id:
            self.prepare(start.series_id)
        assert self._prepared is not None
        target, self._prepared = self._prepared, None
        expected = start.config.frames_expected if start.config is not None else None
        triage = TriageProcess(start.triage, target.files.master) if start.triage is not None else None
        series = _Series(target, NxmxMaster(target.files.master, triage=triage), expected)
        series.master.create(start, instrument_name=target.params.instrument_name,
                             source_name=target.params.source_name, sample_name=target.files.stem,
                             overwrite=series.overwrite)
        self._series = series
        self.stats.frames_expected = expected or 0
        log.info("series %d: writing %s frames to %s", start.series_id,
                 expected if expected is not None else "an unknown number of", target.files.master)

    def process(self, frame: Frame) -> None:
        """Writes one frame as one chunk; a frame that cannot be stored as it is raises ``FrameRejected``."""
        series = self._series
        if series is None:
            raise FrameRejected("no_series", f"frame {frame.index} of series {frame.series_id} before its start")
        if frame.series_id != series.target.series_id:
            raise FrameRejected("series_mismatch", f"frame of series {frame.series_id} in {series.target.series_id}")
        if frame.index < 0 or (series.frames_expected is not None and frame.index >= series.frames_expected):
            raise FrameRejected("index_beyond_series", f"frame {frame.index} of {series.frames_expected}")
        if series.layout is None:
            series.layout = FrameLayout.of(frame)
        filter_mask = series.layout.filter_mask(frame)
        params = series.target.params
        check_free_space(series.target.files.directory, params.free_space_margin_bytes, frame.nbytes_encoded)
        number, row = divmod(frame.index, params.frames_per_file)
        try:
            data_file = self._data_file(series, number + 1)
            data_file.write(row, frame, filter_mask)
        except OSError:
            series.write_failed = True
            raise
        series.highest_index = max(series.highest_index, frame.index)
        self.stats.record_frame(frame.index, frame.nbytes_encoded, frame.nbytes_uncompressed)
        if series.master.triage is not None:
            series.master.triage.add(frame.index, (frame.triage,))
        if data_file.complete:
            self._close_open_file(series, trim=False)

    def _data_file(self, series: _Series, number: int) -> NxmxDataFile:
        if series.open_file is not None and series.open_file.number == number:
            return series.open_file
        if number in series.complete_files:
            raise FrameRejected("duplicate_frame", f"data file {number} is complete")
        if number <= series.last_file_number:
            raise FrameRejected("late_frame", f"data file {number} was already closed")
        self._close_open_file(series, trim=False)  # the stream moved on: its missing rows are lost frames
        assert series.layout is not None
        fpf = series.target.params.frames_per_file
        first = (number - 1) * fpf
        rows = fpf if series.frames_expected is None else min(fpf, series.frames_expected - first)
        path = series.target.files.data_file(number)
        series.open_file = NxmxDataFile(path, number, first, rows, series.layout, overwrite=series.overwrite)
        series.last_file_number = number
        self.stats.current_file = str(path)
        return series.open_file

    def _close_open_file(self, series: _Series, *, trim: bool) -> None:
        data_file, series.open_file = series.open_file, None
        if data_file is None:
            return
        self.stats.current_file = ""
        t0 = time.perf_counter()
        rows = data_file.close(trim=trim)
        self.stats.record_close((time.perf_counter() - t0) * 1e3)
        if data_file.complete:
            series.complete_files.add(data_file.number)
        extent = DataFileExtent(data_file.number, data_file.path.name, data_file.first_index, rows)
        series.extents.append(extent)
        if series.write_failed:
            return  # see _end
        try:
            series.master.link_data_file(extent)
        except OSError as err:  # e.g. a viewer holds the master open (HDF5 file lock): finalise links it
            log.warning("could not link %s into %s yet: %s", extent.name, series.master.path, err)

    def finish(self, end: EndOfSeries) -> None:
        """Ends the series for every ``EndReason`` alike: trim, close, finalise the master."""
        series, self._series = self._series, None
        if series is None:
            log.warning("end of series %d without a series being written; nothing to close", end.series_id)
            return
        if end.series_id != series.target.series_id:
            log.warning("end of series %d closes series %d", end.series_id, series.target.series_id)
        if failures := self._end(series):
            raise failures[0]
        log.info("series %d ended (%s): %d frames written in %d files, last image %d",
                 series.target.series_id, end.reason.value, self.stats.frames_written, len(series.extents),
                 series.highest_index)

    def abort(self, reason: str) -> None:
        """Leaves every file valid after an unexpected error; the caller already reports the first reason."""
        series, self._series, self._prepared = self._series, None, None
        if series is not None:
            log.error("series %d aborted: %s; closing its files", series.target.series_id, reason)
            self._end(series)

    def _end(self, series: _Series) -> list[Exception]:
        """Trims and closes the open data file, then finalises the master; the second step runs even when
        the first failed, so the master still links every file closed before. Returns the failures."""
        failures: list[Exception] = []
        steps = [("closing the open data file", lambda: self._close_open_file(series, trim=True)),
                 ("finalising the master", lambda: self._finalise(series))]
        if series.write_failed:
            # HDF5 crashes the process (not an exception: a segfault) when metadata is changed in a file system
            # that just refused a write; the master stays as it was, a valid file without the last links and VDS.
            log.error("series %d: a write failed (disk full?); the master is left as it is", series.target.series_id)
            steps = steps[:1]
        for what, step in steps:
            try:
                step()
            except Exception as err:  # noqa: BLE001 - collected, logged and raised by finish()
                log.exception("%s of series %d failed", what, series.target.series_id)
                failures.append(err)
        self.stats.current_file = ""
        return failures

    def _finalise(self, series: _Series) -> None:
        series.master.finalise(series.layout, sorted(series.extents, key=lambda e: e.number),
                               series.highest_index + 1, file_time_s())

"""The writer device's single stage: which file format a series is written in is chosen by the
detector at prepare time (NXmx for an Eiger series, an EuXFEL run directory for AGIPD)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from pathlib import Path

from ..core.frame import Frame
from ..core.saving_target import SavingParams
from ..core.series import EndOfSeries, SeriesStart
from ..core.train import Train
from .exdf_writer import ExdfWriter
from .nxmx_writer import NxmxWriter
from .stats import WriterStats


class FileFormat(enum.Enum):
    NXMX = "nxmx"  # Eiger series: <prefix>_master.h5 + <prefix>_data_00000N.h5
    EXDF = "exdf"  # AGIPD run: r<run>/RAW|CORR-R<run>-AGIPD<m>-S<seq>.h5 + a NeXus VDS master


class WriterSelector:
    """Implements the Stage protocol by delegating to the writer of the format last prepared.

    Both writers share the saving parameters (directory, DataRoots, overwrite policy), so a user sets
    them once on the writer device whatever detector feeds it.
    """

    def __init__(self, nxmx: NxmxWriter, exdf: ExdfWriter) -> None:
        self._writers: dict[FileFormat, NxmxWriter | ExdfWriter] = {FileFormat.NXMX: nxmx, FileFormat.EXDF: exdf}
        self.format = FileFormat.NXMX

    @property
    def _active(self) -> NxmxWriter | ExdfWriter:
        return self._writers[self.format]

    @property
    def stats(self) -> WriterStats:
        return self._active.stats

    @property
    def params(self) -> SavingParams:
        return self._writers[FileFormat.NXMX].params

    @property
    def exdf(self) -> ExdfWriter:
        """The AGIPD run writer, whose layout a data policy copies for the run's RED files."""
        writer = self._writers[FileFormat.EXDF]
        assert isinstance(writer, ExdfWriter)
        return writer

    @property
    def master_path(self) -> Path | None:
        return self._active.master_path

    def configure(self, params: SavingParams) -> None:
        for writer in self._writers.values():
            writer.configure(params)

    def prepare(self, file_format: FileFormat, series_id: int, *, directory: Path | None = None,
                modules: Sequence[int] | None = None) -> Path:
        """Select the format and claim the series' files (in ``directory`` when given: a data policy's
        ``raw/``; only ``modules``' files for an AGIPD module group); raises the writer's refusal unchanged."""
        self.format = file_format
        if file_format is FileFormat.EXDF:
            return self.exdf.prepare(series_id, directory=directory, modules=modules)
        return self._active.prepare(series_id, directory=directory)

    def start_series(self, start: SeriesStart) -> None:
        self._active.start_series(start)

    def process(self, item: Frame | Train) -> None:
        self._active.process(item)  # type: ignore[arg-type]

    def finish(self, end: EndOfSeries) -> None:
        self._active.finish(end)

    def abort(self, reason: str) -> None:
        self._active.abort(reason)

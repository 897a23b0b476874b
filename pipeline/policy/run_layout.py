"""Where the files of a run under a data policy lie: raw/ and red/ beside each other, the manifest above them.

An Eiger series keeps its NXmx names in both (``raw/<stem>_master.h5``, ``red/<stem>_master.h5`` or, sparse,
``red/<stem>_sparse.h5``); an AGIPD run keeps its EuXFEL run directory in both (``raw/r0007/…``,
``red/r0007/…`` with the REDU00 file). The data policy stage writes RED by these names, the device lists the
raw files by them, and the manifest describes whatever of them is on disk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..core.saving_target import SeriesFiles
from ..exdf.nexus_master import master_file_name

RAW_SUBDIRECTORY = "raw"
RED_SUBDIRECTORY = "red"


class RunLayout(Protocol):
    run_directory: Path

    @property
    def stem(self) -> str: ...

    @property
    def red_master(self) -> Path: ...

    @property
    def raw_master(self) -> Path: ...

    def red_paths(self) -> list[Path]: ...

    def raw_paths(self) -> list[Path]: ...


def manifest_path(layout: RunLayout) -> Path:
    return layout.run_directory / f"{layout.stem}_manifest.json"


def raw_master_link(layout: RunLayout) -> str:
    """The raw master as the RED master's provenance names it: relative, so a run directory can move."""
    return os.path.relpath(layout.raw_master, layout.red_master.parent)


@dataclass(frozen=True, slots=True)
class NxmxRunLayout:
    """An Eiger series: ``stem`` is the NXmx file prefix of the series."""

    run_directory: Path
    stem: str
    sparse: bool = False

    @property
    def red_files(self) -> SeriesFiles:
        return SeriesFiles(self.run_directory / RED_SUBDIRECTORY, self.stem)

    @property
    def sparse_path(self) -> Path:
        return self.run_directory / RED_SUBDIRECTORY / f"{self.stem}_sparse.h5"

    @property
    def red_master(self) -> Path:
        return self.sparse_path if self.sparse else self.red_files.master

    @property
    def raw_master(self) -> Path:
        return SeriesFiles(self.run_directory / RAW_SUBDIRECTORY, self.stem).master

    def red_paths(self) -> list[Path]:
        if self.sparse:
            return [self.sparse_path] if self.sparse_path.exists() else []
        return self.red_files.existing()

    def raw_paths(self) -> list[Path]:
        return SeriesFiles(self.run_directory / RAW_SUBDIRECTORY, self.stem).existing()


@dataclass(frozen=True, slots=True)
class ExdfRunLayout:
    """An AGIPD run: module sequence files, the REDU00 file and the NeXus master in ``r<run>`` directories."""

    run_directory: Path
    run: int

    @property
    def stem(self) -> str:
        return f"r{self.run:04d}"

    def directory(self, kind: str) -> Path:
        return self.run_directory / kind / self.stem

    @property
    def red_master(self) -> Path:
        return self.directory(RED_SUBDIRECTORY) / master_file_name(self.run)

    @property
    def raw_master(self) -> Path:
        return self.directory(RAW_SUBDIRECTORY) / master_file_name(self.run)

    def red_paths(self) -> list[Path]:
        return self._files(RED_SUBDIRECTORY)

    def raw_paths(self) -> list[Path]:
        return self._files(RAW_SUBDIRECTORY)

    def _files(self, kind: str) -> list[Path]:
        """The run's HDF5 files, master first (extra-data's cache map is not part of the run)."""
        directory = self.directory(kind)
        if not directory.is_dir():
            return []
        master = directory / master_file_name(self.run)
        return ([master] if master.exists() else []) + sorted(
            p for p in directory.iterdir() if p.suffix == ".h5" and p != master)

"""Which files a report reads: an NXmx master (raw or RED), or an AGIPD run directory or its run master.

The report works from what is on disk, as a scientist gets it after the run: the path a user gives may be
the master file or the AGIPD run directory ``r<run>/`` (what ``detpipe demo`` and the writer print).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

import h5py

from ..core.errors import ConfigError
from ..policy.provenance import PROCESS_PATH as REDUCTION_PATH


class RunKind(enum.Enum):
    EIGER = "EIGER NXmx series"
    AGIPD = "AGIPD-1M run"


@dataclass(frozen=True)
class RunFiles:
    """``master`` is the file the report reads (its VDS reaches every data file); ``reduced`` says it is RED
    output, which holds the kept frames only and the reduction's metrics in ``/entry/process_02``."""

    master: Path
    kind: RunKind
    reduced: bool

    @property
    def label(self) -> str:
        return f"{self.kind.value}{' (RED: reduced data)' if self.reduced else ''}"


def locate_run(path: Path) -> RunFiles:
    """The run at ``path``; raises ``ConfigError`` (one line a user can act on) for anything else."""
    if path.is_dir():
        masters = sorted(path.glob("AGIPD-R*-master.h5"))
        if len(masters) != 1:
            raise ConfigError([f"{path} is a folder without one AGIPD run master (AGIPD-R<run>-master.h5); "
                               "give an NXmx <stem>_master.h5 or an AGIPD run directory r<run>"])
        path = masters[0]
    if not path.is_file():
        raise ConfigError([f"{path} does not exist"])
    try:
        with h5py.File(path, "r") as handle:
            kind = _kind(handle, path)
            reduced = REDUCTION_PATH in handle
    except OSError as err:
        raise ConfigError([f"{path} is not a readable HDF5 file ({err})"]) from err
    return RunFiles(path, kind, reduced)


def _kind(handle: h5py.File, path: Path) -> RunKind:
    if "/entry/data/data" not in handle:
        raise ConfigError([f"{path} has no /entry/data/data: not a detpipe master (NXmx or AGIPD run master)"])
    if "INDEX" in handle and handle["/entry/data/data"].ndim in (4, 5):
        return RunKind.AGIPD
    if handle["/entry/data/data"].ndim == 3:
        return RunKind.EIGER
    raise ConfigError([f"{path}: /entry/data/data has shape {handle['/entry/data/data'].shape}, neither an "
                       "EIGER (frames, y, x) nor an AGIPD (frames, module, ...) stack"])

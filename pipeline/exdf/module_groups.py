"""An AGIPD run written by module groups (docs/scale_out.md): several receivers, each writing the sequence files of
its own modules into one shared run directory, as the European XFEL DAQ's aggregators do, and one master that the
controlling device writes over all of them once every group has closed its files.

Each group's writer claims only its modules' file names (``ExdfWriter.prepare(run, modules=…)``); the controlling
device claims the master's name (``claim_run_master``) and, at the end, reads the module files back into the
run's index and writes the master (``write_group_master``), the same reading of the files that rebuilds the
master of a run whose writer died: a module whose files stop early (a group that died) reads as missing for the
trains it lacks, its frames in the VDS the fill value, ``modules_present`` False.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..core.errors import ConfigError, TargetFileExists
from ..core.train import AGIPD_MODULES
from .nexus_master import master_file_name
from .recovery import RecoveredRun, recover_run

EXTRA_DATA_CACHE_MAP = "karabo_data_map.json"  # extra-data's index of a run's files, stale once they are replaced


def check_modules(modules: Sequence[int]) -> tuple[int, ...]:
    """The modules as a sorted tuple; raises ``ConfigError`` unless they are a non-empty subset of 0…15."""
    group = tuple(sorted({int(m) for m in modules}))
    if not group or not all(0 <= m < AGIPD_MODULES for m in group):
        raise ConfigError([f"modules must be a non-empty subset of 0…{AGIPD_MODULES - 1}, got {list(modules)}"])
    return group


def module_files_pattern(run: int, modules: Sequence[int]) -> str:
    """A regular expression matching the sequence files (RAW or CORR) of ``modules`` in run ``run``."""
    numbers = "|".join(f"{m:02d}" for m in modules)
    return rf"(RAW|CORR)-R{run:04d}-AGIPD({numbers})-S\d{{5}}\.h5"


def claim_run_master(directory: Path, run: int, *, overwrite: bool) -> Path:
    """The master's path in the run directory the groups share; an existing master is refused (``TargetFileExists``)
    or, with ``overwrite``, removed with extra-data's cache map of the old run's files."""
    master = directory / master_file_name(run)
    if master.exists() and not overwrite:
        raise TargetFileExists(master)
    for old in (master, directory / EXTRA_DATA_CACHE_MAP):
        old.unlink(missing_ok=True)
    return master


def write_group_master(directory: Path, *, instrument_name: str, source_name: str) -> RecoveredRun:
    """The run's master over every group's module files on disk, with ``/entry/data/written`` per frame."""
    return recover_run(directory, instrument_name=instrument_name, source_name=source_name)

"""``detpipe recover PATH``: rebuild the masters of EIGER series and AGIPD runs whose writer died."""

from __future__ import annotations

import sys
from pathlib import Path

from detpipe.pipeline.exdf.recovery import is_agipd_run, recover_run
from detpipe.pipeline.nexus.recovery import recover_series

_AGIPD_MASTER_SUFFIX = "-master.h5"


def run_recover(path: Path) -> int:
    """EIGER: a ``<stem>_master.h5``, or a directory (every such master in it). AGIPD: a run directory holding
    module sequence files, or its ``AGIPD-R<run>-master.h5``."""
    if path.is_file() and path.name.startswith("AGIPD-R") and path.name.endswith(_AGIPD_MASTER_SUFFIX):
        path = path.parent
    if is_agipd_run(path):
        return _recover_agipd(path)
    masters = sorted(path.glob("*_master.h5")) if path.is_dir() else [path]
    if not masters or not all(m.is_file() and m.name.endswith("_master.h5") for m in masters):
        print(f"detpipe recover: {path} is neither a <stem>_master.h5, a directory holding one, nor an AGIPD run "
              "directory (RAW-/CORR-R<run>-AGIPD<mm>-S<seq>.h5 files)", file=sys.stderr)
        return 2
    failed = 0
    for master in masters:
        try:
            done = recover_series(master)
        except OSError as err:
            print(f"detpipe recover: {master}: {err}", file=sys.stderr)
            failed += 1
            continue
        print(f"{master}: {done.frames_written} of {done.frames} frames on disk in {done.data_files} data files"
              + _unreadable(done.unreadable))
    return 2 if failed else 0


def _recover_agipd(directory: Path) -> int:
    try:
        done = recover_run(directory)
    except OSError as err:  # FileExistsError: the run's master is complete already
        print(f"detpipe recover: {directory}: {err}", file=sys.stderr)
        return 2
    print(f"{done.master}: {done.trains} trains, {done.frames_written} of {done.frames} frames on disk in "
          f"{done.module_files} module files" + _unreadable(done.unreadable))
    return 0


def _unreadable(files: tuple[str, ...]) -> str:
    return f"; unreadable: {'; '.join(files)}" if files else ""

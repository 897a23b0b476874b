"""``detpipe recover PATH``: rebuild the masters of EIGER series whose writer died (see ``recovery``)."""

from __future__ import annotations

import sys
from pathlib import Path

from detpipe.pipeline.nexus.recovery import recover_series


def run_recover(path: Path) -> int:
    masters = sorted(path.glob("*_master.h5")) if path.is_dir() else [path]
    if not masters or not all(m.is_file() and m.name.endswith("_master.h5") for m in masters):
        print(f"detpipe recover: {path} is neither a <stem>_master.h5 nor a directory holding one", file=sys.stderr)
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
              + (f"; unreadable: {'; '.join(done.unreadable)}" if done.unreadable else ""))
    return 2 if failed else 0

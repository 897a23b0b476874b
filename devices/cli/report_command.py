"""``detpipe report``: the quick-look page of a finished series or run, with progress while pixels are read."""

from __future__ import annotations

from pathlib import Path

from detpipe.pipeline.core.errors import ConfigError
from detpipe.pipeline.report.quick_look import default_report_folder, write_quick_look

from .progress import Progress
from .user_error import UserError


def run_report(run: Path, *, output: Path | None, max_frames: int) -> int:
    folder = output if output is not None else default_report_folder(run)
    progress = Progress(f"report {run.name}", "frame")
    try:
        report = write_quick_look(run, folder, progress, max_frames=max_frames)
    except (ConfigError, OSError) as err:  # each names the file or folder, in one line
        raise UserError(str(err)) from err
    finally:
        progress.close()
    print(f"report written: {report.page}")
    return 0

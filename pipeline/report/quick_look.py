"""``detpipe report``: a run's master in, a folder with ``index.html``, one PNG per figure and
``report.json`` (the numbers behind every figure) out. An existing report folder is never overwritten."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from .figures import quick_look_figures
from .html_page import report_page
from .run_digest import MAX_PROJECTED_FRAMES, Progress, digest_run

REPORT_PAGE = "index.html"
REPORT_DATA = "report.json"


@dataclass(frozen=True)
class QuickLook:
    page: Path
    data: Path
    figures: tuple[Path, ...]


def default_report_folder(run: Path) -> Path:
    """``<stem>_report`` beside the master (or the AGIPD run directory), where a user looks for it."""
    stem = run.name.removesuffix(".h5").removesuffix("_master") if run.is_file() else run.name
    return run.parent / f"{stem}_report"


def write_quick_look(run: Path, folder: Path, progress: Progress | None = None, *,
                     max_frames: int = MAX_PROJECTED_FRAMES) -> QuickLook:
    if folder.exists():
        raise ConfigError([f"{folder} exists; a report is never overwritten: remove it or give another --output"])
    if max_frames < 1:
        raise ConfigError([f"max_frames must be >= 1, got {max_frames}"])
    digest = digest_run(run, progress, max_frames=max_frames)
    figures = quick_look_figures(digest)
    try:
        folder.mkdir(parents=True)
    except OSError as err:
        raise ConfigError([f"cannot create the report folder {folder}: {err.strerror or err}"]) from err
    pngs = []
    for figure in figures:
        pngs.append(folder / f"{figure.name}.png")
        pngs[-1].write_bytes(figure.png)
    data = {"file": str(digest.files.master), "kind": digest.files.label, "frames": digest.frames,
            **{figure.name: figure.data for figure in figures}}
    (folder / REPORT_DATA).write_text(json.dumps(_finite(data), indent=1))
    (folder / REPORT_PAGE).write_text(report_page(digest, figures))
    return QuickLook(folder / REPORT_PAGE, folder / REPORT_DATA, tuple(pngs))


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value

"""Everything a quick look shows, read once from a run's master: per-frame triage results, a projection of
the frames, the peaks of hits, the strongest hit and, for RED output, what the data policy kept.

Reading pixels is the slow part (a 4M frame is decompressed through the master's VDS), so frames are read one
at a time with a progress callback, and a long run is projected over ``max_frames`` frames spread evenly
over it (the digest says how many), which is what a first look needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers the bitshuffle-LZ4 filter EIGER data and masks are stored with
import numpy as np
from numpy.typing import NDArray

from ..nexus.cxi_peak_list import CXI_PATH
from ..nexus.triage_process import PROCESS_PATH as TRIAGE_PATH
from ..policy.provenance import PROCESS_PATH as REDUCTION_PATH
from .display_layout import DisplayLayout, display_layout
from .run_files import RunFiles, locate_run

Progress = Callable[[int, int], None]
"""Called with (frames read, frames to read) as the pixels are read."""

MAX_PROJECTED_FRAMES = 512
_DESCRIPTION_FIELDS = {
    "start time": "/entry/start_time", "end time": "/entry/end_time", "sample": "/entry/sample/name",
    "instrument": "/entry/instrument/name", "source": "/entry/source/name",
    "detector": "/entry/instrument/detector/description",
}


@dataclass(frozen=True)
class StrongestHit:
    """The hit with the most peaks: its row in the stack, the picture, and its stored peaks on the picture."""

    row: int
    frame_id: int
    n_peaks: int
    picture: NDArray[np.float32]
    peaks_x: NDArray[np.float64]
    peaks_y: NDArray[np.float64]


@dataclass
class RunDigest:
    """``is_hit`` and ``n_peaks`` per row of the stack (-1: not triaged), None when the run was not triaged;
    ``frame_ids`` the original frame of each row (RED output keeps some frames only). ``max_projection`` is
    the per-pixel maximum over ``projected_rows`` and ``powder`` counts the peaks of every hit per pixel (the
    virtual powder pattern of OnDA/OM); both are pictures with ``layout.mask`` pixels 0."""

    files: RunFiles
    layout: DisplayLayout
    frames: int
    frame_ids: NDArray[np.int64]
    is_hit: NDArray[np.int8] | None
    n_peaks: NDArray[np.int32] | None
    max_projection: NDArray[np.float32]
    projected_rows: NDArray[np.int64]
    powder: NDArray[np.float64] | None
    strongest: StrongestHit | None
    reduction: dict[str, float] | None
    description: dict[str, str] = field(default_factory=dict)

    @property
    def triaged(self) -> bool:
        return self.n_peaks is not None and bool((self.n_peaks >= 0).any())


def digest_run(path: Path, progress: Progress | None = None, *, max_frames: int = MAX_PROJECTED_FRAMES) -> RunDigest:
    files = locate_run(path)
    with h5py.File(files.master, "r") as handle:
        stack = handle["/entry/data/data"]
        frames = int(stack.shape[0])
        layout = display_layout(handle, files.kind)
        is_hit, n_peaks = _triage(handle, frames)
        rows = _rows_to_project(frames, max_frames)
        projection = np.zeros(layout.shape, np.float32)
        for done, row in enumerate(rows, 1):
            np.maximum(projection, layout.picture(stack[row]), out=projection)
            if progress is not None:
                progress(done, len(rows))
        powder = _powder(handle, layout, is_hit) if is_hit is not None else None
        strongest = _strongest_hit(handle, stack, layout, is_hit, n_peaks)
        return RunDigest(
            files=files, layout=layout, frames=frames, frame_ids=_frame_ids(handle, frames), is_hit=is_hit,
            n_peaks=n_peaks, max_projection=projection, projected_rows=rows, powder=powder, strongest=strongest,
            reduction=_reduction_metrics(handle), description=_description(handle),
        )


def _rows_to_project(frames: int, max_frames: int) -> NDArray[np.int64]:
    if frames <= max_frames:
        return np.arange(frames, dtype=np.int64)
    return np.unique(np.linspace(0, frames - 1, max_frames).round().astype(np.int64))


def _triage(handle: h5py.File, frames: int) -> tuple[NDArray[np.int8] | None, NDArray[np.int32] | None]:
    """Results padded with -1 to the stack's length: rows past the last stored result were not triaged."""
    results = handle.get(f"{TRIAGE_PATH}/results")
    if results is None:
        return None, None
    is_hit = np.full(frames, -1, np.int8)
    n_peaks = np.full(frames, -1, np.int32)
    stored = min(frames, results["n_peaks"].shape[0])
    n_peaks[:stored] = results["n_peaks"][:stored]
    is_hit[:stored] = np.where(n_peaks[:stored] < 0, -1, results["is_hit"][:stored])
    return is_hit, n_peaks


def _frame_ids(handle: h5py.File, frames: int) -> NDArray[np.int64]:
    kept = handle.get(f"{REDUCTION_PATH}/kept_frames")
    if kept is not None and kept.shape == (frames,) and kept.dtype.kind in "iu":
        return kept[()].astype(np.int64)
    return np.arange(frames, dtype=np.int64)


def _stored_peaks(handle: h5py.File, row: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    cxi = handle[CXI_PATH]
    stored = min(int(cxi["nPeaks"][row]), cxi["peakXPosRaw"].shape[1])
    return cxi["peakXPosRaw"][row, :stored], cxi["peakYPosRaw"][row, :stored]


def _powder(handle: h5py.File, layout: DisplayLayout, is_hit: NDArray[np.int8]) -> NDArray[np.float64] | None:
    if CXI_PATH not in handle:
        return None
    powder = np.zeros(layout.shape, np.float64)
    for row in np.flatnonzero(is_hit == 1):
        x, y = layout.peak_positions(*_stored_peaks(handle, int(row)))
        inside = (x >= 0) & (y >= 0) & (x < layout.shape[1]) & (y < layout.shape[0])
        np.add.at(powder, (y[inside].astype(np.intp), x[inside].astype(np.intp)), 1.0)
    return powder


def _strongest_hit(handle: h5py.File, stack: h5py.Dataset, layout: DisplayLayout, is_hit: NDArray[np.int8] | None,
                   n_peaks: NDArray[np.int32] | None) -> StrongestHit | None:
    if is_hit is None or n_peaks is None or not (is_hit == 1).any() or CXI_PATH not in handle:
        return None
    row = int(np.argmax(np.where(is_hit == 1, n_peaks, -1)))
    x, y = layout.peak_positions(*_stored_peaks(handle, row))
    return StrongestHit(row, int(_frame_ids(handle, stack.shape[0])[row]), int(n_peaks[row]),
                        layout.picture(stack[row]), x, y)


def _reduction_metrics(handle: h5py.File) -> dict[str, float] | None:
    metrics = handle.get(f"{REDUCTION_PATH}/metrics")
    if metrics is None:
        return None
    return {name: float(value[()]) for name, value in metrics.items()
            if isinstance(value, h5py.Dataset) and value.shape == () and value.dtype.kind in "iuf"}


def _description(handle: h5py.File) -> dict[str, str]:
    found = {}
    for label, path in _DESCRIPTION_FIELDS.items():
        value = handle.get(path)
        if isinstance(value, h5py.Dataset) and value.shape == ():
            text = value.asstr()[()] if value.dtype.kind in "OS" else str(value[()])
            if text:
                found[label] = text
    return found

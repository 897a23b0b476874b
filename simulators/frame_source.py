"""What the simulator streams: a source of frames with ground truth, and the truth sidecar file.

Two sources implement ``FrameSource``: ``SfxFrames`` (synthetic serial crystallography with known peaks)
and ``DatasetFrames`` (replay of a recorded HDF5 file, whose truth is unknown). Tests compare what a
receiver decoded or found against ``pixels(i)`` and ``truth(i)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class Peak:
    """One Bragg peak as simulated.

    ``x`` is the fast-scan (column) and ``y`` the slow-scan (row) coordinate in pixel-index units:
    (0, 0) is the centre of the first pixel. ``intensity`` is the expected integrated number of photons
    (before Poisson noise); ``sigma_px`` the Gaussian width. ``snr`` is the true signal-to-noise ratio,
    ``I / sqrt(I + b·4πσ²)`` with ``b`` the mean background under the peak (``sfx_difficulty.true_snr``);
    ``saturated`` peaks have their brightest pixel at the count-rate cut-off.
    """

    x: float
    y: float
    intensity: float
    sigma_px: float
    snr: float = 0.0
    saturated: bool = False


@dataclass(frozen=True, slots=True)
class FrameTruth:
    """What is really in frame ``index``; ``is_hit`` is None when unknown (replayed data)."""

    index: int
    is_hit: bool | None
    peaks: tuple[Peak, ...]


class FrameSource(Protocol):
    """Frames addressed by their 0-based index in a series; the same index always gives the same pixels."""

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width)."""
        ...

    @property
    def dtype(self) -> np.dtype:
        ...

    @property
    def pixel_mask(self) -> NDArray[np.uint32]:
        """NXmx pixel mask (bit 0 gap, bit 1 dead), sent in ``header_detail=all`` headers."""
        ...

    def frame_key(self, index: int) -> int:
        """The index of the frame that ``index`` is identical to; encoded blobs are cached under it."""
        ...

    def pixels(self, index: int) -> NDArray[np.unsignedinteger]:
        ...

    def truth(self, index: int) -> FrameTruth:
        ...

    def describe(self) -> Mapping[str, Any]:
        """JSON-ready facts identifying the source (model, seed, file …) for the truth sidecar."""
        ...

    def write_truth(self, path: str | Path, n_frames: int) -> Path:
        """The truth of frames 0 … n_frames-1 as a JSON sidecar (``write_truth_sidecar``)."""
        ...


def write_truth_sidecar(path: str | Path, source: FrameSource, n_frames: int) -> Path:
    """Write the truth of frames 0 … n_frames-1 as JSON, so tools outside Python can score a pipeline.

    Layout: the source's ``describe()`` keys, ``shape`` [H, W], ``dtype``, and ``frames``: a list of
    ``{"index", "is_hit", "peaks": [{"x", "y", "intensity", "sigma_px"}, …]}``.
    """
    path = Path(path)
    document: dict[str, Any] = dict(source.describe())
    document.update(shape=list(source.shape), dtype=np.dtype(source.dtype).name)
    document["frames"] = [
        {"index": t.index, "is_hit": t.is_hit, "peaks": [asdict(p) for p in t.peaks]}
        for t in (source.truth(i) for i in range(n_frames))
    ]
    path.write_text(json.dumps(document, indent=1))
    return path

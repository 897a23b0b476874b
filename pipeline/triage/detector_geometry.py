"""The triage geometry of each detector: its panels, radius map and good-pixel mask, as peakfinder8 needs them.

The layouts themselves belong to the detectors (``eiger.panels``, ``agipd.geometry``); this module only
turns them, with the beam centre and masks of a series, into a ``TriageGeometry``. Peaks never grow across
panel edges, as CrystFEL treats each geometry panel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from ..agipd.geometry import DEFAULT_QUAD_POSITIONS, MODULE_FS, STACKED_SHAPE, agipd_panels, agipd_radius_map
from ..core.errors import ConfigError
from ..core.triage_params import TriageParams
from ..eiger.panels import eiger_panels
from .geometry import TriageGeometry


def eiger_triage_geometry(
    shape: tuple[int, int],
    *,
    beam_center_x_px: float | None,
    beam_center_y_px: float | None,
    pixel_mask: NDArray[np.integer] | None = None,
    user_mask: NDArray[np.integer] | None = None,
    params: TriageParams,
) -> TriageGeometry:
    """The triage geometry of an Eiger image of ``shape`` (H, W).

    The beam centre is in pixels, pixel-index convention (0.0 = centre of the first pixel; x = fast scan,
    y = slow scan); None puts it at the image centre (W/2, H/2). Mask = inside a module AND NXmx
    ``pixel_mask == 0`` (any set bit — gap, dead, cold, hot, noisy — is bad) AND ``user_mask != 0``.
    """
    height, width = int(shape[0]), int(shape[1])
    problems = []
    for name, array in (("pixel_mask", pixel_mask), ("user_mask", user_mask)):
        if array is not None and np.shape(array) != (height, width):
            problems.append(f"{name} shape {np.shape(array)} differs from the image shape {(height, width)}")
    if problems:
        raise ConfigError(problems)
    cx = width / 2.0 if beam_center_x_px is None else float(beam_center_x_px)
    cy = height / 2.0 if beam_center_y_px is None else float(beam_center_y_px)
    rows = np.arange(height, dtype=np.float64)[:, None] - cy
    cols = np.arange(width, dtype=np.float64)[None, :] - cx
    radius = np.sqrt(rows * rows + cols * cols).astype(np.float32)
    good = np.ones((height, width), dtype=bool)
    if pixel_mask is not None:
        good &= np.asarray(pixel_mask) == 0
    if user_mask is not None:
        good &= np.asarray(user_mask) != 0
    return TriageGeometry.build(
        radius,
        good,
        eiger_panels((height, width)),
        min_res=params.min_res,
        max_res=params.max_res,
        pixels_per_ring=params.pixels_per_ring,
    )


def agipd_triage_geometry(
    *,
    quad_positions: Sequence[tuple[float, float]] = DEFAULT_QUAD_POSITIONS,
    beam_offset_px: tuple[float, float] = (0.0, 0.0),
    static_mask: NDArray[np.integer] | None = None,
    user_mask: NDArray[np.integer] | None = None,
    params: TriageParams,
) -> TriageGeometry:
    """The triage geometry of the stacked AGIPD-1M image.

    ``static_mask`` and ``user_mask`` are nonzero = good, shaped (16, 512, 128) or (8192, 128). Per-frame
    bad-pixel bits of corrected data (``image.mask``) are applied per frame by ``HitFinder.triage_agipd``.
    """
    good = np.ones(STACKED_SHAPE, dtype=bool)
    problems = []
    for name, array in (("static_mask", static_mask), ("user_mask", user_mask)):
        if array is None:
            continue
        if np.size(array) != good.size or np.shape(array)[-1] != MODULE_FS:
            problems.append(f"{name} shape {np.shape(array)} is neither (16, 512, 128) nor {STACKED_SHAPE}")
            continue
        good &= np.asarray(array).reshape(STACKED_SHAPE) != 0
    if problems:
        raise ConfigError(problems)
    return TriageGeometry.build(
        agipd_radius_map(quad_positions, beam_offset_px),
        good,
        agipd_panels(),
        min_res=params.min_res,
        max_res=params.max_res,
        pixels_per_ring=params.pixels_per_ring,
    )

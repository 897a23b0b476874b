"""The triage geometry of each detector: its panels, radius map and good-pixel mask, as peakfinder8 needs them.

The layouts themselves belong to the detectors (``eiger.panels``, ``agipd.geometry``); this module only
turns them, with the beam centre and masks of a series, into a ``TriageGeometry``. Peaks never grow across
panel edges, as CrystFEL treats each geometry panel.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ..agipd.geometry import DEFAULT_QUAD_POSITIONS, STACKED_SHAPE, agipd_panels, agipd_radius_map
from ..core.crystfel_geometry import read_crystfel_geometry
from ..core.errors import ConfigError
from ..core.triage_params import TriageParams
from ..eiger.panels import eiger_panels
from .crystfel_layout import crystfel_triage_geometry
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
    good = good_pixels((height, width), pixel_mask=pixel_mask, user_mask=user_mask)
    cx = width / 2.0 if beam_center_x_px is None else float(beam_center_x_px)
    cy = height / 2.0 if beam_center_y_px is None else float(beam_center_y_px)
    rows = np.arange(height, dtype=np.float64)[:, None] - cy
    cols = np.arange(width, dtype=np.float64)[None, :] - cx
    radius = np.sqrt(rows * rows + cols * cols).astype(np.float32)
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
    good = good_pixels(STACKED_SHAPE, pixel_mask=None, user_mask=user_mask, static_mask=static_mask)
    return TriageGeometry.build(
        agipd_radius_map(quad_positions, beam_offset_px),
        good,
        agipd_panels(),
        min_res=params.min_res,
        max_res=params.max_res,
        pixels_per_ring=params.pixels_per_ring,
    )


def good_pixels(
    shape: tuple[int, int],
    *,
    pixel_mask: NDArray[np.integer] | None,
    user_mask: NDArray[np.integer] | None,
    static_mask: NDArray[np.integer] | None = None,
) -> NDArray[np.bool_]:
    """The detector's own good-pixel map: NXmx ``pixel_mask == 0`` (any set bit — gap, dead, cold, hot,
    noisy — is bad) AND ``user_mask != 0`` AND ``static_mask != 0``. A mask of another shape with as many
    pixels (AGIPD's (16, 512, 128) for the stacked image) is taken in raster order."""
    good = np.ones(shape, dtype=bool)
    problems = []
    for name, array, good_when_zero in (("pixel_mask", pixel_mask, True), ("user_mask", user_mask, False),
                                        ("static_mask", static_mask, False)):
        if array is None:
            continue
        values = np.asarray(array)
        if values.size != good.size or values.shape[-1] != shape[1]:
            problems.append(f"{name} shape {values.shape} differs from the image shape {shape}")
            continue
        values = values.reshape(shape)
        good &= (values == 0) if good_when_zero else (values != 0)
    if problems:
        raise ConfigError(problems)
    return good


def geometry_file_triage_geometry(
    path: str,
    shape: tuple[int, int],
    *,
    pixel_mask: NDArray[np.integer] | None = None,
    user_mask: NDArray[np.integer] | None = None,
    params: TriageParams,
) -> TriageGeometry:
    """The triage geometry of a ``shape`` image from the CrystFEL geometry file at ``path`` (its panels,
    beam position and masks), ANDed with the detector's pixel mask and the user mask."""
    good = good_pixels(shape, pixel_mask=pixel_mask, user_mask=user_mask)
    return crystfel_triage_geometry(read_crystfel_geometry(path), shape, good=good, base_dir=Path(path).parent,
                                    params=params)

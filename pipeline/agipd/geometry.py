"""AGIPD-1M geometry: the stacked (16·512, 128) image, its 128 ASIC panels and a quadrant radius map.

Peak finding runs on the 16 modules stacked along the slow-scan axis, ``(8192, 128)``, with each 64 × 128
ASIC as its own panel (European XFEL AGIPD documentation; OnDA/OM's peakfinder8 uses 64 × 128 ASICs).
Panel ``8·m + a`` covers rows ``512·m + 64·a … + 64`` and all 128 columns.

The radius map follows the conventions of extra-geom's ``AGIPD_1MGeometry.from_quad_positions(quad_pos,
asic_gap=2, panel_gap=29)`` (reimplemented here, not copied): coordinates in pixels (200 µm) with the
origin at the detector centre, x increasing to the left and y upwards looking along the beam. Each
quadrant position is the corner of the first pixel of its first module (channels 0, 4, 8, 12).
Quadrants 1–2 (modules 0–7) have slow scan along +x and fast scan along −y, quadrants 3–4 (modules 8–15)
slow scan along −x and fast scan along +y. Module ``p`` of a quadrant starts ``p·(128 + panel_gap)``
below the quadrant corner; ASIC ``a`` of a module starts ``a·(64 + asic_gap)`` along its slow-scan
direction. A pixel's position is its centre, ``corner + (ss + ½)·ss_vec + (fs + ½)·fs_vec``; the radius is
its distance from ``beam_offset_px``. With the default positions the radius runs from ≈ 25 to ≈ 830 px.
It is an idealised layout (no module tilts or measured offsets), which is all ring statistics need.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..core.errors import ConfigError

MODULES = 16
MODULE_SS = 512
MODULE_FS = 128
ASIC_SS = 64
ASICS_PER_MODULE = MODULE_SS // ASIC_SS
STACKED_SHAPE = (MODULES * MODULE_SS, MODULE_FS)
ASIC_GAP_PX = 2.0
PANEL_GAP_PX = 29.0
# extra-geom's documented example positions (pixels), used when a run supplies none.
DEFAULT_QUAD_POSITIONS: tuple[tuple[float, float], ...] = (
    (-525.0, 625.0), (-550.0, -10.0), (520.0, -160.0), (542.5, 475.0)
)
_QUAD_SS_X = (1, 1, -1, -1)  # slow scan runs along ±x
_QUAD_FS_Y = (-1, -1, 1, 1)  # fast scan runs along ±y


def agipd_panels() -> NDArray[np.int32]:
    """The 128 ASIC panels ``[ss0, ss1, fs0, fs1]`` of the stacked image, module-major."""
    starts = np.arange(MODULES * ASICS_PER_MODULE, dtype=np.int32) * ASIC_SS
    panels = np.zeros((starts.size, 4), dtype=np.int32)
    panels[:, 0] = starts
    panels[:, 1] = starts + ASIC_SS
    panels[:, 3] = MODULE_FS
    return panels


@dataclass(frozen=True, slots=True)
class AsicTile:
    """One 64 × 128 ASIC: the (x, y) of its first pixel's outer corner and the steps of one pixel along slow
    and fast scan, in pixels (a CrystFEL panel's corner_x/y, ss and fs vectors)."""

    module: int
    asic: int
    corner: tuple[float, float]
    ss_vector: tuple[float, float]
    fs_vector: tuple[float, float]

    @property
    def stacked_rows(self) -> slice:
        """The tile's rows in the stacked (8192, 128) image."""
        first = self.module * MODULE_SS + self.asic * ASIC_SS
        return slice(first, first + ASIC_SS)


def agipd_tiles(
    quad_positions: Sequence[tuple[float, float]] = DEFAULT_QUAD_POSITIONS,
    *,
    asic_gap: float = ASIC_GAP_PX,
    panel_gap: float = PANEL_GAP_PX,
) -> list[AsicTile]:
    """The 128 ASIC tiles, module-major."""
    if len(quad_positions) != 4:
        raise ConfigError([f"AGIPD-1M needs 4 quadrant positions, got {len(quad_positions)}"])
    tiles = []
    for module in range(MODULES):
        quad, in_quad = divmod(module, 4)
        quad_x, quad_y = (float(v) for v in quad_positions[quad])
        ss_x, fs_y = _QUAD_SS_X[quad], _QUAD_FS_Y[quad]
        corner_y = quad_y - in_quad * (MODULE_FS + panel_gap)
        for asic in range(ASICS_PER_MODULE):
            corner_x = quad_x + ss_x * (ASIC_SS + asic_gap) * asic
            tiles.append(AsicTile(module, asic, (corner_x, corner_y), (float(ss_x), 0.0), (0.0, float(fs_y))))
    return tiles


def agipd_pixel_positions(
    quad_positions: Sequence[tuple[float, float]] = DEFAULT_QUAD_POSITIONS,
    *,
    asic_gap: float = ASIC_GAP_PX,
    panel_gap: float = PANEL_GAP_PX,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(x, y) of every pixel centre, each (16, 512, 128), in pixels from the detector centre."""
    ss = np.arange(ASIC_SS, dtype=np.float64)[:, None] + 0.5
    fs = np.arange(MODULE_FS, dtype=np.float64)[None, :] + 0.5
    x = np.empty(STACKED_SHAPE, dtype=np.float64)
    y = np.empty_like(x)
    for tile in agipd_tiles(quad_positions, asic_gap=asic_gap, panel_gap=panel_gap):
        rows = tile.stacked_rows
        x[rows] = tile.corner[0] + ss * tile.ss_vector[0] + fs * tile.fs_vector[0]
        y[rows] = tile.corner[1] + ss * tile.ss_vector[1] + fs * tile.fs_vector[1]
    return x.reshape(MODULES, MODULE_SS, MODULE_FS), y.reshape(MODULES, MODULE_SS, MODULE_FS)


def agipd_radius_map(
    quad_positions: Sequence[tuple[float, float]] = DEFAULT_QUAD_POSITIONS,
    beam_offset_px: tuple[float, float] = (0.0, 0.0),
) -> NDArray[np.float32]:
    """Radius in pixels of every pixel of the stacked (8192, 128) image from the beam at ``beam_offset_px``
    = (x, y) in the detector frame above."""
    x, y = agipd_pixel_positions(quad_positions)
    radius = np.hypot(x - float(beam_offset_px[0]), y - float(beam_offset_px[1]))
    return radius.reshape(STACKED_SHAPE).astype(np.float32)

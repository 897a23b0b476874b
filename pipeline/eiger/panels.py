"""Eiger module tiling: where the detector modules lie in an image, from its shape alone (DECTRIS EIGER2 specs).

EIGER2 modules are 512 rows × 1028 columns tiled with 38-row and 12-column gaps (4M = 2162 × 2068);
EIGER1 modules are 514 × 1030 with 37-row and 10-column gaps (4M = 2167 × 2070). Peaks never grow
across module edges, as CrystFEL treats each geometry panel. A shape that fits neither tiling (ROI
modes, other detectors) becomes one panel covering the whole image; the gaps must then come from the
NXmx ``pixel_mask`` (which real detectors send), or peaks may grow across them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModuleTiling:
    """One Eiger generation's module size and inter-module gaps, in pixels."""

    name: str
    module_rows: int
    module_cols: int
    gap_rows: int
    gap_cols: int

    def grid(self, shape: tuple[int, int]) -> tuple[int, int] | None:
        """(module rows, module columns) when ``shape`` is an exact tiling, else None."""
        height, width = shape
        rows, row_rest = divmod(height + self.gap_rows, self.module_rows + self.gap_rows)
        cols, col_rest = divmod(width + self.gap_cols, self.module_cols + self.gap_cols)
        if rows >= 1 and cols >= 1 and row_rest == 0 and col_rest == 0:
            return rows, cols
        return None

    def panels(self, grid: tuple[int, int]) -> NDArray[np.int32]:
        rows, cols = grid
        panels = [
            (
                r * (self.module_rows + self.gap_rows),
                r * (self.module_rows + self.gap_rows) + self.module_rows,
                c * (self.module_cols + self.gap_cols),
                c * (self.module_cols + self.gap_cols) + self.module_cols,
            )
            for r in range(rows)
            for c in range(cols)
        ]
        return np.asarray(panels, dtype=np.int32)


EIGER2 = ModuleTiling("EIGER2", module_rows=512, module_cols=1028, gap_rows=38, gap_cols=12)
EIGER1 = ModuleTiling("EIGER", module_rows=514, module_cols=1030, gap_rows=37, gap_cols=10)
TILINGS = (EIGER2, EIGER1)


def eiger_panels(shape: tuple[int, int]) -> NDArray[np.int32]:
    """Module rectangles ``[ss0, ss1, fs0, fs1]`` of an Eiger image, or one whole-image panel (logged)."""
    for tiling in TILINGS:
        if (grid := tiling.grid(shape)) is not None:
            return tiling.panels(grid)
    log.info(
        "image shape %s is no EIGER2/EIGER module tiling (ROI mode or another detector): "
        "triage treats it as one panel, gaps come from the pixel mask only", shape,
    )
    return np.asarray([(0, shape[0], 0, shape[1])], dtype=np.int32)

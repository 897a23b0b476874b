"""EIGER2 detector models: module tiling, gaps, dead pixels and the NXmx pixel mask (DECTRIS EIGER2 specifications).

An EIGER2 module is 512 rows × 1028 columns of 75 µm pixels. Modules tile the sensor with 38-row gaps
between module rows and 12-column gaps between module columns, which reproduces every EIGER2 image size
in the DECTRIS EIGER2 specifications (4M = 4 × 2 modules = 2162 × 2068, 16M = 8 × 4 modules = 4362 × 4148).
"""

from __future__ import annotations

import enum
import functools
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

MODULE_ROWS = 512
MODULE_COLS = 1028
GAP_ROWS = 38
GAP_COLS = 12
PIXEL_SIZE_M = 75e-6
SENSOR_MATERIAL = "Si"
SENSOR_THICKNESS_M = 450e-6

# NXmx pixel_mask bits (NeXus NXmx application definition): bit 0 = gap between modules, bit 1 = dead pixel.
MASK_GAP = 1
MASK_DEAD = 2

# Enough dead pixels to exercise masking in triage and writers, few enough not to matter for peaks.
DEAD_PIXELS_PER_MODULE = 3


class DetectorModel(enum.Enum):
    """EIGER2 model names as DECTRIS writes them in ``description`` ("Dectris EIGER2 Si 4M")."""

    EIGER2_500K = "500K"
    EIGER2_1M = "1M"
    EIGER2_4M = "4M"
    EIGER2_9M = "9M"
    EIGER2_16M = "16M"


# (module rows, module columns, max frame rate in Hz at full frame, serial-number model code).
# The rates are the EIGER figures LImA documents (LImA Eiger plugin documentation); 500K is assumed equal to 1M.
_LAYOUT: dict[DetectorModel, tuple[int, int, float, int]] = {
    DetectorModel.EIGER2_500K: (1, 1, 3000.0, 1),
    DetectorModel.EIGER2_1M: (2, 1, 3000.0, 2),
    DetectorModel.EIGER2_4M: (4, 2, 750.0, 8),
    DetectorModel.EIGER2_9M: (6, 3, 238.0, 18),
    DetectorModel.EIGER2_16M: (8, 4, 133.0, 32),
}


@dataclass(frozen=True, slots=True)
class DetectorGeometry:
    """The pixel layout of one model; every size is derived from the module counts."""

    model: DetectorModel

    @classmethod
    def of(cls, model: DetectorModel | str) -> DetectorGeometry:
        """Accepts a member or its value ("4M"), so CLI strings and enum members both work."""
        return cls(model if isinstance(model, DetectorModel) else DetectorModel(model))

    @property
    def module_grid(self) -> tuple[int, int]:
        """(module rows, module columns)."""
        rows, cols, _, _ = _LAYOUT[self.model]
        return rows, cols

    @property
    def height(self) -> int:
        rows = self.module_grid[0]
        return rows * MODULE_ROWS + (rows - 1) * GAP_ROWS

    @property
    def width(self) -> int:
        cols = self.module_grid[1]
        return cols * MODULE_COLS + (cols - 1) * GAP_COLS

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) = (slow, fast), the numpy order; V1 headers send it reversed ([width, height])."""
        return self.height, self.width

    @property
    def max_frame_rate_hz(self) -> float:
        return _LAYOUT[self.model][2]

    @property
    def description(self) -> str:
        return f"Dectris EIGER2 {SENSOR_MATERIAL} {self.model.value}"

    @property
    def detector_number(self) -> str:
        """A serial number in DECTRIS's E-<modules>-<unit> form; fixed per model so headers are stable."""
        return f"E-{_LAYOUT[self.model][3]:02d}-0107"

    def module_origins(self) -> Iterator[tuple[int, int]]:
        """(first row, first column) of every module, row-major."""
        rows, cols = self.module_grid
        for r in range(rows):
            for c in range(cols):
                yield r * (MODULE_ROWS + GAP_ROWS), c * (MODULE_COLS + GAP_COLS)

    def gap_row_bands(self) -> list[slice]:
        """Row ranges that are gaps across the full width; slicing them is far faster than a mask."""
        return [
            slice(r * (MODULE_ROWS + GAP_ROWS) - GAP_ROWS, r * (MODULE_ROWS + GAP_ROWS))
            for r in range(1, self.module_grid[0])
        ]

    def gap_col_bands(self) -> list[slice]:
        return [
            slice(c * (MODULE_COLS + GAP_COLS) - GAP_COLS, c * (MODULE_COLS + GAP_COLS))
            for c in range(1, self.module_grid[1])
        ]

    def dead_pixels(self) -> tuple[tuple[int, int], ...]:
        """(row, column) of each dead pixel: the same for a model in every run, away from module edges."""
        return _dead_pixels(self)

    def pixel_mask(self) -> NDArray[np.uint32]:
        """NXmx pixel_mask (read-only): ``MASK_GAP`` in gaps, ``MASK_DEAD`` on dead pixels, else 0."""
        return _pixel_mask(self)


@functools.cache
def _dead_pixels(geometry: DetectorGeometry) -> tuple[tuple[int, int], ...]:
    rng = np.random.default_rng(zlib.crc32(geometry.model.value.encode()))
    pixels = []
    for row0, col0 in geometry.module_origins():
        for _ in range(DEAD_PIXELS_PER_MODULE):
            row = row0 + int(rng.integers(16, MODULE_ROWS - 16))
            col = col0 + int(rng.integers(16, MODULE_COLS - 16))
            pixels.append((row, col))
    return tuple(pixels)


@functools.cache
def _pixel_mask(geometry: DetectorGeometry) -> NDArray[np.uint32]:
    mask = np.zeros(geometry.shape, dtype=np.uint32)
    for band in geometry.gap_row_bands():
        mask[band, :] |= MASK_GAP
    for band in geometry.gap_col_bands():
        mask[:, band] |= MASK_GAP
    for row, col in geometry.dead_pixels():
        mask[row, col] |= MASK_DEAD
    mask.flags.writeable = False
    return mask

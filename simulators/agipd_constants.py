"""The simulated AGIPD's gain model and its correction constants, written as docs/agipd_constants.md says.

Every pixel has three gain stages (European XFEL AGIPD documentation). The stage follows the signal: high gain below
``SWITCH_PHOTONS[0]`` photons, medium below ``SWITCH_PHOTONS[1]``, low above. The switch points are low
(150 and 300 photons) so that the 50–2000-photon Bragg peaks of the scene reach all three stages, not
only the medium one; the nominal gains (50, 5 and 1 ADU per photon) keep every stage within the 14-bit
ADC (offset ≈ 5000–6000 ADU plus at most ≈ 7700 ADU of signal in high gain).

The raw values obey exactly the formula of the constants file, with rounding and clipped noise as the
only errors: ``analog = rint(offset_pixel[stage] + photons / relgain[stage] + noise) + offset_cell[cell,
stage]`` with ``|noise| ≤ 4 × NOISE_ADU``, and ``offset_cell`` is integer-valued, so correcting with the
written file returns the photons within ``(4 × NOISE_ADU + 0.5) × relgain[stage]``. The digital value sits
``DIGITAL_NOISE_ADU`` (clipped at 4 σ) around a per-pixel level per stage, with thresholds half-way
between the levels, so ``(d > t0) + (d > t1)`` always recovers the stage.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from numpy.typing import NDArray

from .agipd_layout import ASIC_SS, ASICS_PER_MODULE, MEMORY_CELLS, MODULE_FS, MODULE_SS, MODULES

STAGES = 3
ADU_PER_PHOTON = (50.0, 5.0, 1.0)  # nominal gain per stage; pixels scatter by GAIN_SPREAD
GAIN_SPREAD = 0.03
SWITCH_PHOTONS = (150, 300)  # the stage is (photons >= 150) + (photons >= 300)
OFFSET_ADU = (5000.0, 5600.0, 6000.0)
OFFSET_PIXEL_SPREAD_ADU = 150.0
OFFSET_ASIC_SPREAD_ADU = 100.0
OFFSET_CELL_SPREAD_ADU = 20.0
DIGITAL_LEVEL_ADU = (5000.0, 7000.0, 9000.0)
DIGITAL_LEVEL_SPREAD_ADU = 100.0
NOISE_ADU = 2.0  # analog noise sigma, the same in every stage (so 0.04, 0.4 and 2 photons)
DIGITAL_NOISE_ADU = 20.0
NOISE_CLIP_SIGMA = 4.0
ADC_MAX = (1 << 14) - 1
BAD_PIXELS_PER_MODULE = 4
MASK_BAD_PIXEL = 1  # this simulator's only mask bit; EuXFEL's BadPixels flags define many more
_CONSTANTS_STREAM = 0xA61


def gain_stage(photons: NDArray[np.number]) -> NDArray[np.uint8]:
    """Stage 0, 1 or 2 the pixel switches to for this many photons."""
    return ((photons >= SWITCH_PHOTONS[0]).astype(np.uint8) + (photons >= SWITCH_PHOTONS[1])).astype(np.uint8)


def clipped_noise(rng: np.random.Generator, shape: tuple[int, ...] | int, sigma: float) -> NDArray[np.float32]:
    """Gaussian noise cut at ±NOISE_CLIP_SIGMA σ, so tests can state a hard tolerance."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    np.clip(noise, -NOISE_CLIP_SIGMA, NOISE_CLIP_SIGMA, out=noise)
    noise *= np.float32(sigma)
    return noise


@dataclass(frozen=True, slots=True, eq=False)
class AgipdConstants:
    """Per-pixel constants of all 16 modules; arrays are read-only and shaped as the file stores them.

    ``digital_level`` (16, 3, 512, 128) is not in the file: it is what the simulated pixels emit as the
    digital value, which the thresholds only bracket. ``bad_pixels`` is (module, ss, fs) per row.
    """

    seed: int
    cell_ids: NDArray[np.uint16]  # (352,) memory cells 0 … 351; offset_cell row k describes cell_ids[k]
    offset_pixel: NDArray[np.float32]  # (16, 3, 512, 128) ADU
    offset_cell: NDArray[np.float32]  # (16, 352, 3) ADU, integer-valued
    relgain: NDArray[np.float32]  # (16, 3, 512, 128) photons per ADU
    threshold: NDArray[np.float32]  # (16, 2, 512, 128)
    digital_level: NDArray[np.float32]  # (16, 3, 512, 128)
    bad_pixels: NDArray[np.intp]  # (n, 3)

    @property
    def mask(self) -> NDArray[np.uint32]:
        """(16, 512, 128) bad-pixel bits as corrected data carry them in ``image.mask``."""
        mask = np.zeros((MODULES, MODULE_SS, MODULE_FS), dtype=np.uint32)
        mask[tuple(self.bad_pixels.T)] = MASK_BAD_PIXEL
        return mask

    def cell_rows(self, cell_ids: NDArray[np.integer]) -> NDArray[np.intp]:
        """Row of each cell id in ``cell_ids`` (the file lists all 352 cells in order, so row = cell)."""
        return np.asarray(cell_ids, dtype=np.intp)

    def write(self, path: str | Path) -> Path:
        """The HDF5 file of docs/agipd_constants.md (≈ 34 MB, uncompressed so it writes in well under 1 s)."""
        path = Path(path)
        with h5py.File(path, "w") as f:
            f.attrs["detector"] = "AGIPD1M"
            f.attrs["creator"] = "detpipe AGIPD simulator"
            f.attrs["seed"] = self.seed
            f.create_dataset("offset_pixel", data=self.offset_pixel)
            f.create_dataset("offset_cell", data=self.offset_cell)
            f.create_dataset("relgain", data=self.relgain)
            f.create_dataset("threshold", data=self.threshold)
            f.create_dataset("cell_ids", data=self.cell_ids)
        return path


@functools.lru_cache(maxsize=2)
def agipd_constants(seed: int) -> AgipdConstants:
    """The constants of a simulated detector; cached, since every simulator with this seed shares them
    and drawing them takes ≈ 0.3 s."""
    rng = np.random.default_rng([seed, _CONSTANTS_STREAM])
    pixels = (MODULES, STAGES, MODULE_SS, MODULE_FS)
    asic_shift = rng.normal(0.0, OFFSET_ASIC_SPREAD_ADU, (MODULES, STAGES, ASICS_PER_MODULE, 1, 1))
    offset_pixel = np.asarray(OFFSET_ADU, dtype=np.float32)[None, :, None, None] + rng.normal(
        0.0, OFFSET_PIXEL_SPREAD_ADU, pixels
    ).astype(np.float32)
    offset_pixel = offset_pixel.reshape(MODULES, STAGES, ASICS_PER_MODULE, ASIC_SS, MODULE_FS)
    offset_pixel += asic_shift.astype(np.float32)
    offset_pixel = offset_pixel.reshape(pixels)
    offset_cell = np.rint(rng.normal(0.0, OFFSET_CELL_SPREAD_ADU, (MODULES, MEMORY_CELLS, STAGES))).astype(np.float32)
    adu_per_photon = np.asarray(ADU_PER_PHOTON, dtype=np.float32)[None, :, None, None] * (
        1.0 + GAIN_SPREAD * rng.standard_normal(pixels, dtype=np.float32)
    )
    relgain = (1.0 / adu_per_photon).astype(np.float32)
    digital_level = np.asarray(DIGITAL_LEVEL_ADU, dtype=np.float32)[None, :, None, None] + rng.normal(
        0.0, DIGITAL_LEVEL_SPREAD_ADU, pixels
    ).astype(np.float32)
    threshold = 0.5 * (digital_level[:, :2] + digital_level[:, 1:])
    bad = np.stack(
        [
            np.repeat(np.arange(MODULES), BAD_PIXELS_PER_MODULE),
            rng.integers(0, MODULE_SS, MODULES * BAD_PIXELS_PER_MODULE),
            rng.integers(0, MODULE_FS, MODULES * BAD_PIXELS_PER_MODULE),
        ],
        axis=1,
    ).astype(np.intp)
    constants = AgipdConstants(
        seed=seed,
        cell_ids=np.arange(MEMORY_CELLS, dtype=np.uint16),
        offset_pixel=offset_pixel,
        offset_cell=offset_cell,
        relgain=relgain,
        threshold=threshold.astype(np.float32),
        digital_level=digital_level,
        bad_pixels=bad,
    )
    for name in ("cell_ids", "offset_pixel", "offset_cell", "relgain", "threshold", "digital_level", "bad_pixels"):
        getattr(constants, name).flags.writeable = False
    return constants

"""How hard the simulated AGIPD trains are to triage: ``sfx_difficulty``'s options with AGIPD-1M numbers, and
the per-pixel maps the scene (``agipd_scene``) and the pixel pool (``agipd_pixel_pool``) draw from.

The options mean what they mean for the EIGER (``sfx_difficulty.SfxDifficulty``), measured on the AGIPD's own
pixel positions (``agipd_layout.pixel_positions``, beam at the detector centre): ring radii are fractions of the
detector's half-width (546 px), the gradient runs from −x to +x, the shadow is the band ``|y| ≤ 24`` px on the +x
side of the beam, and the noisy module is a module index 0 … 15. Two differ:

- the jet streak is tilted ``JET_STREAK_TILT_DEG`` from vertical: through the beam centre and upright it would
  run down the gap between the quadrants and hit no pixel;
- an AGIPD pixel does not saturate at a count rate, it switches gain (``agipd_constants``), so
  ``saturated_fraction`` must be 0. Bright peaks are what make medium and low gain: ``realistic``'s SNR range
  reaches 150 (≈ 22,000 photons at 0.05 photons/pixel), so about a tenth of its peaks have their brightest pixel
  in medium gain and a third in low gain, up to ≈ 5,000 photons, well within the low-gain ADC range.

``easy`` is the simulator's original scene bit for bit: 0.1 photons/pixel flat, peaks of 50–2,000 photons at
least 10 px apart. Hot pixels read ``HOT_PIXEL_PHOTONS`` in every frame, lit or dark, and dead pixels 0; neither
is in ``image.mask`` nor in ``truth.photons`` (they are the sensor's faults, not photons), and peaks keep clear of
them as of the masked bad pixels, so every true peak is whole.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
from numpy.typing import NDArray

from .agipd_layout import MODULE_FS, MODULE_SS, MODULES, pixel_positions
from .sfx_difficulty import (
    NOISY_MODULE_PHOTONS,
    SHADOW_HALF_WIDTH_PX,
    SHADOW_TRANSMISSION,
    SfxDifficulty,
    defect_pixels,
    diffuse_scatter,
    preset,
)
from .sfx_difficulty import PRESETS as EIGER_PRESETS

HOT_PIXEL_PHOTONS = 100  # below the first gain switch (150), so a hot pixel stays in high gain like its neighbours
JET_STREAK_TILT_DEG = 20.0

PRESETS: dict[str, SfxDifficulty] = {
    "easy": SfxDifficulty("easy", background_photons=0.1, water_ring_photons=0.0, min_separation_px=10.0),
    "realistic": dataclasses.replace(EIGER_PRESETS["realistic"], peak_snr=(3.0, 150.0), saturated_fraction=0.0),
    "hard": dataclasses.replace(EIGER_PRESETS["hard"], saturated_fraction=0.0),
}
"""``easy``: the original scene; ``realistic`` and ``hard``: the EIGER's, without saturation. ``realistic``: low flux
(0.05 photons/pixel), SNR 3–150 peaks (the EIGER's go to 300, beyond the low-gain ADC range) as close as 3 px,
the brightest in medium and low gain, one ice ring, a faint jet streak, the beamstop-holder shadow; ``hard``: 0.01
photons/pixel, SNR 3–100 peaks overlapping, three strong ice rings, a strong streak, a noisy module and ten
times the hot and dead pixels."""


def agipd_difficulty(value: SfxDifficulty | str) -> SfxDifficulty:
    """A preset by name, or a scene of one's own; ``ValueError`` for an unknown name or a saturated fraction."""
    difficulty = value if isinstance(value, SfxDifficulty) else preset(str(value), PRESETS)
    if difficulty.saturated_fraction:
        raise ValueError(f"saturated_fraction {difficulty.saturated_fraction} must be 0 for AGIPD: its pixels switch "
                         f"gain instead of saturating, and bright peaks (peak_snr) are what reach medium and low gain")
    return difficulty


@functools.lru_cache(maxsize=4)
def mean_background(difficulty: SfxDifficulty) -> NDArray[np.float64]:
    """Expected photons per pixel of a lit frame's diffuse scene, (16, 512, 128) read-only: what the pool draws
    its Poisson backgrounds from and what a peak's true SNR is measured against."""
    x, y = pixel_positions()
    half_width = (x.max() - x.min()) / 2.0
    tilt = math.radians(JET_STREAK_TILT_DEG)
    streak_offset = x * math.cos(tilt) - y * math.sin(tilt)
    slope = 1.0 + difficulty.background_gradient * (x - (x.max() + x.min()) / 2.0) / half_width
    mean = diffuse_scatter(difficulty, np.hypot(x, y), streak_offset, slope, half_width)
    if difficulty.noisy_module is not None:
        mean[difficulty.noisy_module % MODULES] += NOISY_MODULE_PHOTONS
    if difficulty.shadow:
        mean[in_shadow(x, y, margin_px=0.0)] *= SHADOW_TRANSMISSION
    mean.flags.writeable = False
    return mean


def in_shadow(x: NDArray[np.float64], y: NDArray[np.float64], *, margin_px: float) -> NDArray[np.bool_]:
    """Whether pixels at (x, y) lie within ``margin_px`` of the beamstop holder's shadow."""
    return (np.abs(y) <= SHADOW_HALF_WIDTH_PX + margin_px) & (x >= -margin_px)


def defects(difficulty: SfxDifficulty, seed: int) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """(hot, dead): (module, ss, fs) per row of the pixels that read ``HOT_PIXEL_PHOTONS`` or 0 in every frame
    without being in the mask; fixed per seed, like a real sensor's."""
    hot_rows, hot_cols, dead_rows, dead_cols = defect_pixels(difficulty, (MODULES * MODULE_SS, MODULE_FS), seed)
    return (np.column_stack(np.divmod(hot_rows, MODULE_SS) + (hot_cols,)).astype(np.intp),
            np.column_stack(np.divmod(dead_rows, MODULE_SS) + (dead_cols,)).astype(np.intp))

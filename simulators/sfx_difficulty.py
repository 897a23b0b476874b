"""How hard the simulated EIGER frames are to triage: the deviations of real serial-crystallography data from an
ideal frame, each one an option with its ground truth, and three presets (``easy``, ``realistic``, ``hard``).

``easy`` is the simulator's original scene, bit for bit: 0.5 photons/pixel flat background plus a water ring,
peaks of 300–30,000 photons at least 8 px apart. The other presets add what a photon-counting detector at a
high frame rate sees (DECTRIS and beamline experience, the peakfinder8 paper's test data):

- low flux: 0.005–0.5 photons/pixel of diffuse background, brighter on one side (``background_gradient``);
- weak peaks: integrated intensity drawn so that the true SNR, ``I / sqrt(I + b·4πσ²)`` with ``b`` the mean
  background under the peak, is log-uniform in ``peak_snr`` (down to 3);
- peaks closer than 3 px (``min_separation_px``), overlapping below 2σ;
- saturated peaks: a fraction drawn twice as bright as the count-rate cut-off at their centre, so their core
  stands at the cut-off (their SNR is then far above ``peak_snr``);
- hot pixels (a fixed count every frame) and dead pixels (0) that the pixel mask does not list, and one
  noisy module (extra counts on every pixel);
- ice rings (sharp powder rings), a liquid-jet streak through the beam centre, and the shadow of the beamstop
  holder (almost no background, never a peak).

Everything static (background, rings, streak, shadow, noisy module) is part of the mean image, so it costs
nothing per frame; hot and dead pixels are written per frame (a few hundred pixels).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class SfxDifficulty:
    """The scene options; ``None`` for ``peak_snr`` keeps ``easy``'s log-uniform 300–30,000 photons."""

    name: str
    background_photons: float = 0.5  # mean flat scatter per pixel
    water_ring_photons: float = 2.5  # extra mean photons at the water ring's peak
    background_gradient: float = 0.0  # the flat scatter goes from (1 − g) on the left to (1 + g) on the right
    peak_snr: tuple[float, float] | None = None  # true SNR range, drawn log-uniform
    min_separation_px: float = 8.0
    saturated_fraction: float = 0.0  # of peaks: the brightest pixel at the count-rate cut-off
    hot_pixels: int = 0  # at HOT_PIXEL_COUNTS in every frame, not in the pixel mask
    unmasked_dead_pixels: int = 0  # at 0 in every frame, not in the pixel mask
    noisy_module: int | None = None  # index of a module with NOISY_MODULE_PHOTONS extra counts per pixel
    ice_rings: tuple[float, ...] = ()  # radii, as fractions of the detector half-width
    ice_ring_photons: float = 0.0  # extra mean photons at an ice ring's peak
    jet_streak_photons: float = 0.0  # extra mean photons along a vertical line through the beam centre
    shadow: bool = False  # the beamstop holder's shadow: from the beam centre to the right edge


WATER_RING_RADIUS = 0.35  # ring radius as a fraction of the detector half-width
WATER_RING_WIDTH = 0.04  # Gaussian sigma of the ring, same unit
HOT_PIXEL_COUNTS = 4000
NOISY_MODULE_PHOTONS = 1.0
ICE_RING_WIDTH_PX = 2.0  # Gaussian sigma: ice rings are sharp powder lines
JET_STREAK_WIDTH_PX = 2.0
SHADOW_HALF_WIDTH_PX = 24
SHADOW_TRANSMISSION = 0.03  # what is left of the background behind the holder

PRESETS: dict[str, SfxDifficulty] = {
    "easy": SfxDifficulty("easy"),
    "realistic": SfxDifficulty(
        "realistic", background_photons=0.05, water_ring_photons=0.3, background_gradient=0.3,
        peak_snr=(3.0, 300.0), min_separation_px=3.0, saturated_fraction=0.02, hot_pixels=20,
        unmasked_dead_pixels=50, ice_rings=(0.62,), ice_ring_photons=0.5, jet_streak_photons=0.2, shadow=True,
    ),
    "hard": SfxDifficulty(
        "hard", background_photons=0.01, water_ring_photons=0.1, background_gradient=0.6,
        peak_snr=(3.0, 100.0), min_separation_px=1.5, saturated_fraction=0.05, hot_pixels=200,
        unmasked_dead_pixels=500, noisy_module=1, ice_rings=(0.45, 0.62, 0.78), ice_ring_photons=2.0,
        jet_streak_photons=1.0, shadow=True,
    ),
}
"""``easy``: the original scene; ``realistic``: low flux (0.05 photons/pixel), SNR 3–300 peaks as close as 3 px,
2 % saturated, one ice ring, a faint jet streak, the beamstop-holder shadow; ``hard``: 0.01 photons/pixel,
SNR 3–100 peaks overlapping, 5 % saturated, three strong ice rings, a strong streak, a noisy module and ten
times the hot and dead pixels."""


def preset(name: str, presets: Mapping[str, SfxDifficulty] = PRESETS) -> SfxDifficulty:
    """The preset called ``name`` among ``presets`` (the EIGER's unless told, ``agipd_difficulty``'s for AGIPD)."""
    try:
        return presets[name]
    except KeyError:
        raise ValueError(f"difficulty {name!r} is not one of {', '.join(presets)}") from None


def peak_intensity_for_snr(snr: float, background: float, sigma_px: float) -> float:
    """The integrated photons giving ``snr = I / sqrt(I + b·A)``, A = 4πσ² the noise area of a Gaussian."""
    area = 4.0 * math.pi * sigma_px * sigma_px
    return (snr * snr + math.sqrt(snr**4 + 4.0 * snr * snr * background * area)) / 2.0


def true_snr(intensity: float, background: float, sigma_px: float) -> float:
    """The inverse of ``peak_intensity_for_snr``: what a perfect integration of the peak would measure."""
    return intensity / math.sqrt(intensity + background * 4.0 * math.pi * sigma_px * sigma_px)


def mean_image(difficulty: SfxDifficulty, shape: tuple[int, int], beam_center: tuple[float, float],
               module_origins: list[tuple[int, int]], module_shape: tuple[int, int]) -> NDArray[np.float32]:
    """Expected photons per pixel of the scene's diffuse parts."""
    height, width = shape
    cx, cy = beam_center
    rows = (np.arange(height, dtype=np.float32) - np.float32(cy))[:, None]
    cols = (np.arange(width, dtype=np.float32) - np.float32(cx))[None, :]
    radius = np.sqrt(rows * rows + cols * cols)
    gradient = difficulty.background_gradient
    slope = np.linspace(1.0 - gradient, 1.0 + gradient, width, dtype=np.float32)[None, :]
    mean = diffuse_scatter(difficulty, radius, cols, slope, width / 2.0)
    if difficulty.noisy_module is not None:
        row0, col0 = module_origins[difficulty.noisy_module % len(module_origins)]
        mean[row0:row0 + module_shape[0], col0:col0 + module_shape[1]] += np.float32(NOISY_MODULE_PHOTONS)
    if difficulty.shadow:
        mean[shadow_rows(cy, height), int(cx):] *= np.float32(SHADOW_TRANSMISSION)
    return mean.astype(np.float32, copy=False)


def diffuse_scatter(difficulty: SfxDifficulty, radius: NDArray[np.floating], streak_offset: NDArray[np.floating],
                    slope: NDArray[np.floating], half_width: float) -> NDArray[np.floating]:
    """Expected photons per pixel of the water ring, the flat scatter (times ``slope``, the gradient's factor from
    1 − g to 1 + g), the ice rings and the jet streak, at pixels ``radius`` px from the beam and ``streak_offset`` px
    beside the streak's axis; ring radii are fractions of ``half_width``. The arrays broadcast together and the
    result keeps their float type: every detector's scene is the same physics on its own pixel positions, and
    float64 keeps ``background_photons`` exact, as AGIPD's ``easy`` needs to stay its original scene bit for bit."""
    water = (radius - WATER_RING_RADIUS * half_width) / (WATER_RING_WIDTH * half_width)
    mean = difficulty.water_ring_photons * np.exp(-0.5 * water * water)
    if difficulty.background_gradient:
        mean += difficulty.background_photons * slope
    else:
        mean += difficulty.background_photons
    for ring in difficulty.ice_rings:
        offset = (radius - ring * half_width) / ICE_RING_WIDTH_PX
        mean += difficulty.ice_ring_photons * np.exp(-0.5 * offset * offset)
    if difficulty.jet_streak_photons:
        offset = streak_offset / JET_STREAK_WIDTH_PX
        mean += difficulty.jet_streak_photons * np.exp(-0.5 * offset * offset)
    return mean


def shadow_rows(beam_y: float, height: int) -> slice:
    """Rows of the beamstop holder's shadow (it runs from the beam centre to the right edge)."""
    return slice(max(int(beam_y) - SHADOW_HALF_WIDTH_PX, 0), min(int(beam_y) + SHADOW_HALF_WIDTH_PX + 1, height))


def defect_pixels(difficulty: SfxDifficulty, shape: tuple[int, int], seed: int
                  ) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.intp], NDArray[np.intp]]:
    """(hot rows, hot cols, dead rows, dead cols): fixed per (seed, shape), like a real sensor's."""
    rng = np.random.default_rng([seed, 0xD1F])
    height, width = shape
    hot = rng.integers(0, (height, width), size=(difficulty.hot_pixels, 2))
    dead = rng.integers(0, (height, width), size=(difficulty.unmasked_dead_pixels, 2))
    return hot[:, 0], hot[:, 1], dead[:, 0], dead[:, 1]

"""The simulator's difficulty presets put into the pixels exactly what their truth says: low flux, weak peaks of
known SNR, close and saturated peaks, hot and dead pixels the mask does not list, ice rings, a jet streak and a
shadow (docs/simulators.md)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from detpipe.simulators import SfxFrames
from detpipe.simulators.detector_models import MODULE_COLS, MODULE_ROWS
from detpipe.simulators.sfx_difficulty import (
    HOT_PIXEL_COUNTS,
    NOISY_MODULE_PHOTONS,
    PRESETS,
    SHADOW_HALF_WIDTH_PX,
    peak_intensity_for_snr,
    preset,
    true_snr,
)

FRAMES = 40


@pytest.fixture(scope="module", params=["realistic", "hard"])
def scene(request: pytest.FixtureRequest) -> SfxFrames:
    return SfxFrames("1M", seed=4, hit_fraction=1.0, peaks_per_hit=(30, 60), difficulty=preset(request.param))


def test_the_snr_of_a_peak_drawn_for_an_snr_is_that_snr() -> None:
    for snr, background, sigma in itertools.product((3.0, 10.0, 300.0), (0.0, 0.01, 0.5), (1.0, 1.3)):
        assert true_snr(peak_intensity_for_snr(snr, background, sigma), background, sigma) == pytest.approx(snr)


def test_an_unknown_difficulty_is_refused_naming_the_presets() -> None:
    with pytest.raises(ValueError, match="easy, realistic, hard"):
        preset("extreme")


def test_peaks_have_the_true_snr_range_the_separation_and_saturation_of_the_preset(scene: SfxFrames) -> None:
    difficulty = scene.difficulty
    peaks = [p for i in range(FRAMES) for p in scene.truth(i).peaks]
    snrs = np.array([p.snr for p in peaks if not p.saturated])  # a saturated peak is drawn by its brightness
    low, high = difficulty.peak_snr
    assert snrs.min() >= low * 0.999 and snrs.max() <= high * 1.001
    assert np.mean(snrs < 10) > 0.2, "log-uniform from 3: a quarter or more of the peaks are weak"
    for i in range(FRAMES):
        frame_peaks = scene.truth(i).peaks
        closest = min(math.hypot(a.x - b.x, a.y - b.y) for a, b in itertools.combinations(frame_peaks, 2))
        assert closest >= difficulty.min_separation_px
    saturated = [p for p in peaks if p.saturated]
    assert 0.5 * difficulty.saturated_fraction < len(saturated) / len(peaks) < 2 * difficulty.saturated_fraction
    for i in range(FRAMES):
        pixels = scene.pixels(i)
        for p in scene.truth(i).peaks:
            core = pixels[int(round(p.y)) - 1:int(round(p.y)) + 2, int(round(p.x)) - 1:int(round(p.x)) + 2]
            assert (core == scene.saturation_value).sum() >= (4 if p.saturated else 0)
            assert p.saturated or core.max() < scene.saturation_value


def test_hot_and_dead_pixels_are_in_every_frame_and_not_in_the_pixel_mask(scene: SfxFrames) -> None:
    unmasked = scene.pixel_mask == 0
    first, second = scene.pixels(0), scene.pixels(1)
    hot = (first == HOT_PIXEL_COUNTS) & (second == HOT_PIXEL_COUNTS) & unmasked
    assert hot.sum() >= 0.9 * scene.difficulty.hot_pixels
    dead = (first == 0) & (second == 0) & unmasked
    assert dead.sum() >= scene.difficulty.unmasked_dead_pixels  # plus pixels that drew 0 photons twice


def test_the_background_is_the_presets_flux_with_its_rings_streak_and_shadow(scene: SfxFrames) -> None:
    difficulty = scene.difficulty
    blank = SfxFrames("1M", seed=4, hit_fraction=0.0, difficulty=difficulty)  # the same scene without peaks
    stack = np.stack([blank.pixels(i) for i in range(8)]).astype(np.float64)
    valid = (scene.pixel_mask == 0) & (stack < HOT_PIXEL_COUNTS).all(axis=0)
    cx, cy = scene.beam_center
    rows, cols = np.mgrid[0:scene.shape[0], 0:scene.shape[1]]
    radius = np.hypot(rows - cy, cols - cx)
    noisy = np.zeros(scene.shape, bool)
    if difficulty.noisy_module is not None:
        row0, col0 = list(blank.geometry.module_origins())[difficulty.noisy_module]
        noisy[row0:row0 + MODULE_ROWS, col0:col0 + MODULE_COLS] = True
    quiet = valid & ~noisy & (np.abs(cols - cx) > 20) & (np.abs(rows - cy) > SHADOW_HALF_WIDTH_PX + 10) \
        & (radius < 0.25 * cx)
    flat = stack[:, quiet].mean()  # near the centre column, where the gradient is 1
    assert flat == pytest.approx(difficulty.background_photons, rel=0.2)
    if noisy.any():
        assert stack[:, valid & noisy & (radius < 0.25 * cx)].mean() == pytest.approx(flat + NOISY_MODULE_PHOTONS,
                                                                                       rel=0.2)
    mean = stack.mean(axis=0)
    ring = valid & (np.abs(radius - difficulty.ice_rings[0] * scene.shape[1] / 2) < 1.0)
    beside = valid & (np.abs(radius - difficulty.ice_rings[0] * scene.shape[1] / 2 - 12) < 1.0)
    assert mean[ring].mean() > mean[beside].mean() + 0.5 * difficulty.ice_ring_photons
    streak = valid & (np.abs(cols - cx) < 1.0) & (rows > cy + SHADOW_HALF_WIDTH_PX + 10)
    assert mean[streak].mean() > mean[quiet].mean() + 0.5 * difficulty.jet_streak_photons
    shadow = valid & ~noisy & (np.abs(rows - cy) < SHADOW_HALF_WIDTH_PX - 2) & (cols > cx + 30) & (radius < 0.25 * cx)
    assert mean[shadow].mean() < 0.2 * flat
    peaks = [p for i in range(FRAMES) for p in scene.truth(i).peaks]
    assert not any(abs(p.y - cy) <= SHADOW_HALF_WIDTH_PX and p.x >= cx for p in peaks), "no peak in the shadow"


def test_easy_is_the_original_scene() -> None:
    easy = SfxFrames("500K", seed=9, hit_fraction=1.0)
    assert easy.difficulty == PRESETS["easy"]
    peaks = [p for i in range(10) for p in easy.truth(i).peaks]
    assert all(300.0 <= p.intensity <= 30000.0 and not p.saturated for p in peaks)
    assert all(p.snr == pytest.approx(true_snr(p.intensity, 0.5, p.sigma_px), rel=0.9) for p in peaks)

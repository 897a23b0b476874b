"""The AGIPD simulator's difficulty presets put into the trains exactly what their truth says: low flux, weak peaks
of known SNR, close peaks, bright peaks in medium and low gain, hot and dead pixels the mask does not list, ice
rings, a jet streak, a shadow and a noisy module (docs/simulators.md); ``easy`` is the original scene."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from detpipe.pipeline.agipd.geometry import agipd_pixel_positions
from detpipe.simulators import AgipdSimulator
from detpipe.simulators.agipd_difficulty import (
    HOT_PIXEL_PHOTONS,
    JET_STREAK_TILT_DEG,
    PRESETS,
    agipd_difficulty,
    mean_background,
)
from detpipe.simulators.agipd_layout import pixel_positions
from detpipe.simulators.sfx_difficulty import (
    NOISY_MODULE_PHOTONS,
    SHADOW_HALF_WIDTH_PX,
    SHADOW_TRANSMISSION,
    SfxDifficulty,
    true_snr,
)
from tests.simulators.test_agipd_physics import Corrector

CELLS = 16


@pytest.fixture(scope="module", params=["realistic", "hard"])
def simulator(request: pytest.FixtureRequest) -> Iterator[AgipdSimulator]:
    """Every lit cell a hit; the bridge is never started (trains are built on demand)."""
    sim = AgipdSimulator(product="corrected", cells=CELLS, seed=4, hit_fraction=1.0, peaks_per_hit=(30, 60),
                         difficulty=request.param)
    yield sim
    sim.stop()


def test_the_layout_is_the_one_the_triage_takes_so_rings_are_rings_for_it() -> None:
    x, y = pixel_positions()
    reference_x, reference_y = agipd_pixel_positions()
    np.testing.assert_array_equal(x, reference_x)
    np.testing.assert_array_equal(y, reference_y)


def test_an_unknown_difficulty_or_a_saturated_fraction_is_refused_naming_why() -> None:
    with pytest.raises(ValueError, match="easy, realistic, hard"):
        AgipdSimulator(cells=1, difficulty="extreme")
    with pytest.raises(ValueError, match="switch gain"):
        agipd_difficulty(SfxDifficulty("mine", saturated_fraction=0.1))


def test_peaks_have_the_true_snr_range_and_separation_of_the_preset_and_the_brightest_switch_gain(
        simulator: AgipdSimulator) -> None:
    difficulty = simulator.difficulty
    truth, train = simulator.truth.train(0), simulator.train(0)
    snrs = np.array([p.snr for p in truth.peaks])
    low, high = difficulty.peak_snr
    assert snrs.min() >= low * 0.999 and snrs.max() <= high * 1.001
    assert np.mean(snrs < 10) > 0.2, "log-uniform from 3: a quarter or more of the peaks are weak"
    background = simulator.truth.mean_background()
    for peak in truth.peaks:
        b = background[peak.module, round(peak.ss), round(peak.fs)]
        assert peak.snr == pytest.approx(true_snr(peak.intensity, b, peak.sigma_px))
    for frame, module in {(p.frame, p.module) for p in truth.peaks}:
        neighbours = [p for p in truth.peaks if (p.frame, p.module) == (frame, module)]
        for a, b in itertools.combinations(neighbours, 2):
            assert math.hypot(a.ss - b.ss, a.fs - b.fs) >= difficulty.min_separation_px
    cores = [int(train.gain[p.frame, p.module, round(p.ss) - 1:round(p.ss) + 2, round(p.fs) - 1:round(p.fs) + 2].max())
             for p in truth.peaks]
    assert {0, 1, 2} <= set(cores) and cores.count(2) > 0.1 * len(cores)
    brightest = max(truth.peaks, key=lambda p: p.intensity)
    assert train.gain[brightest.frame, brightest.module, round(brightest.ss), round(brightest.fs)] == 2


def defect_maps(sim: AgipdSimulator) -> tuple[np.ndarray, np.ndarray]:
    """(hot, dead) as (16, 512, 128) maps; a pixel drawn both hot and dead is dead, as the simulator makes it."""
    hot, dead = np.zeros((2, 16, 512, 128), bool)
    hot[tuple(sim.truth.hot_pixels.T)] = True
    dead[tuple(sim.truth.dead_pixels.T)] = True
    return hot & ~dead, dead


def test_hot_and_dead_pixels_are_in_every_frame_lit_or_dark_and_not_in_the_mask(simulator: AgipdSimulator) -> None:
    train = simulator.train(1)
    hot, dead = defect_maps(simulator)
    assert hot.sum() >= 0.9 * simulator.difficulty.hot_pixels
    assert dead.sum() >= 0.9 * simulator.difficulty.unmasked_dead_pixels
    hot &= simulator.constants.mask == 0  # a masked bad pixel reads 0 in corrected data, whatever else it is
    lit = simulator.truth.lit
    assert lit.any() and (~lit).any()
    for frame in range(CELLS):
        assert np.abs(train.data[frame][hot] - HOT_PIXEL_PHOTONS).max() < 1.0
        assert (train.data[frame][dead] == 0).all()
        assert not train.mask[frame][hot].any() and not train.mask[frame][dead].any()
    photons = simulator.truth.photons(1)
    assert (photons[:, hot] < 20).all(), "a hot pixel's counts are no photons"


def test_the_background_is_the_presets_flux_with_its_rings_streak_shadow_and_noisy_module(
        simulator: AgipdSimulator) -> None:
    difficulty = simulator.difficulty
    mean = simulator.truth.mean_background()
    x, y = pixel_positions()
    radius = np.hypot(x, y)
    half_width = (x.max() - x.min()) / 2
    tilt = math.radians(JET_STREAK_TILT_DEG)
    streak = x * math.cos(tilt) - y * math.sin(tilt)
    noisy = np.zeros(mean.shape, bool)
    if difficulty.noisy_module is not None:
        noisy[difficulty.noisy_module] = True
    shadow = (np.abs(y) <= SHADOW_HALF_WIDTH_PX) & (x >= 0)  # the holder: a 49 px band on the +x side of the beam
    quiet = ~noisy & ~shadow & (np.abs(streak) > 20) & (np.abs(x) < 0.1 * half_width) & (radius < 0.2 * half_width)
    assert mean[quiet].mean() == pytest.approx(difficulty.background_photons, rel=0.1)  # where the gradient is 1
    left, right = (~noisy & ~shadow & side for side in (x < -0.9 * half_width, x > 0.9 * half_width))
    assert mean[left].mean() < mean[right].mean(), "the gradient runs from −x to +x"
    without_noisy_module = mean_background(dataclasses.replace(difficulty, noisy_module=None))
    np.testing.assert_allclose(mean - without_noisy_module, NOISY_MODULE_PHOTONS * noisy, atol=1e-12)
    for ring in difficulty.ice_rings:
        on_ring = ~noisy & ~shadow & (np.abs(radius - ring * half_width) < 1.0)
        beside = ~noisy & ~shadow & (np.abs(radius - ring * half_width - 12) < 1.0)
        assert mean[on_ring].mean() > mean[beside].mean() + 0.5 * difficulty.ice_ring_photons
    along_streak = ~noisy & ~shadow & (np.abs(streak) < 1.0)
    assert along_streak.sum() > 500, "the tilted streak crosses modules instead of the central gap"
    assert mean[along_streak].mean() > mean[quiet].mean() + 0.5 * difficulty.jet_streak_photons
    assert shadow.sum() > 5000, "the shadow falls on pixels, not into a gap"
    unshadowed = mean_background(dataclasses.replace(difficulty, shadow=False))
    np.testing.assert_allclose(mean, unshadowed * np.where(shadow, SHADOW_TRANSMISSION, 1.0), rtol=1e-12)
    with AgipdSimulator(product="corrected", cells=CELLS, seed=4, hit_fraction=0.0, difficulty=difficulty) as blank:
        drawn = blank.truth.photons(0)[blank.truth.lit]  # the same pool of backgrounds, no peaks
    assert drawn.mean(axis=0)[quiet].mean() == pytest.approx(mean[quiet].mean(), rel=0.2)
    peaks = [p for i in range(3) for p in simulator.truth.train(i).peaks]
    assert not any(shadow[p.module, round(p.ss), round(p.fs)] for p in peaks), "no peak in the shadow"


def test_raw_realistic_trains_correct_to_the_truth_photons_with_hot_and_dead_pixels(tmp_path: Path) -> None:
    """The brightest realistic peaks stay within the low-gain ADC range: no pixel is clipped."""
    with AgipdSimulator(product="raw", cells=8, seed=5, hit_fraction=1.0, difficulty="realistic") as sim:
        corrector = Corrector(sim.write_constants(tmp_path / "agipd_constants.h5"))
        train, expected = sim.train(0), sim.truth.photons(0)
        hot, dead = defect_maps(sim)
    expected[:, hot], expected[:, dead] = HOT_PIXEL_PHOTONS, 0.0
    assert corrector.stages_of_a_faithful_train(train, expected) == {0, 1, 2}


def test_easy_is_the_original_scene() -> None:
    with AgipdSimulator(cells=8, seed=9, hit_fraction=1.0) as sim:
        assert sim.difficulty == PRESETS["easy"]
        peaks = [p for i in range(3) for p in sim.truth.train(i).peaks]
        assert (sim.truth.mean_background() == 0.1).all()
        assert not len(sim.truth.hot_pixels) and not len(sim.truth.dead_pixels)
    assert all(50.0 <= p.intensity <= 2000.0 for p in peaks)
    assert all(p.snr == true_snr(p.intensity, 0.1, p.sigma_px) for p in peaks)

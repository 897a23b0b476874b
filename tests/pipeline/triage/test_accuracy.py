"""Triage accuracy against the simulators' ground truth, at the DEFAULT ``TriageParams``, fast and full mode.

Acceptance (the triage issue): hit recall >= 0.99 and precision >= 0.98; >= 95 % of the true peaks with
SNR >= 10 found within 1 px; blank frames give 0 peaks.

A true peak's SNR is ``I / sqrt(I + A·b)`` with ``I`` its expected integrated photons, ``A = 4π·σ²`` the
area of a Gaussian spot of width σ (pixels) and ``b`` the mean background photons per pixel at the
peak from the simulator's background model (the truth's ``snr``): the mean image of ``SfxFrames``'
``BackgroundPool`` for the Eiger, ``AgipdTruth.mean_background()`` for lit AGIPD frames (0.1 flat in ``easy``).
A peak counts as found when a reported peak lies within 1 px (Euclidean, in stacked (8192, 128) coordinates for
AGIPD) of its true position.

Frames are generated once per module and triaged by both modes in the same loop (Eiger 4M frames are
9 MB each, too many to keep): 240 Eiger 4M frames and 6 AGIPD trains of 64 corrected cells (384 frames,
every 8th dark) of the simulators' ``easy`` scene, and of their ``realistic`` preset 120 Eiger frames and 3 AGIPD
trains (192 cells), 30 % of the lit frames hits. The scoring is the benchmark's (``benchmarks/triage_accuracy.py``),
so ``make bench``'s ``accuracy.*`` keys and these goals count alike. Runtime ≈ 30 s on the 2-core development VM,
mostly frame generation.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.triage_accuracy import METRICS, MODES, AccuracyScore, score_agipd, score_eiger
from detpipe.pipeline.core.frame import Encoding
from detpipe.pipeline.core.triage_params import TriageParams
from detpipe.pipeline.triage.detector_geometry import eiger_triage_geometry
from detpipe.pipeline.triage.hit_finder import HitFinder
from detpipe.simulators import DetectorModel, SfxFrames, bslz4_chunk

EIGER_FRAMES = 240
AGIPD_TRAINS = 6


@pytest.fixture(scope="module")
def eiger_scores() -> dict[str, AccuracyScore]:
    return score_eiger("easy", EIGER_FRAMES, hit_fraction=0.1)


@pytest.fixture(scope="module")
def agipd_scores() -> dict[str, AccuracyScore]:
    return score_agipd("easy", AGIPD_TRAINS, hit_fraction=0.1)


# Frames the samples must hold for the numbers to mean something: ≥ 200 frames per detector, 10 % hits.
MIN_BLANK_FRAMES = {"eiger_scores": 180, "agipd_scores": 300}
DETECTORS = pytest.mark.parametrize("detector", ["eiger_scores", "agipd_scores"], ids=["eiger_4m", "agipd_1m"])


@pytest.fixture
def score(request: pytest.FixtureRequest, detector: str, mode: str) -> AccuracyScore:
    return request.getfixturevalue(detector)[mode]


@DETECTORS
@pytest.mark.parametrize("mode", MODES)
def test_hits_are_found_with_recall_099_and_precision_098(score: AccuracyScore) -> None:
    assert score.true_hits >= 15, "the sample must hold enough hits to measure recall"
    assert score.metrics()["hit_recall"] >= 0.99, score
    assert score.metrics()["hit_precision"] >= 0.98, score


@DETECTORS
@pytest.mark.parametrize("mode", MODES)
def test_95_percent_of_snr10_peaks_are_recovered_within_one_pixel(score: AccuracyScore) -> None:
    assert score.band_true["snr_10"] >= 300
    assert score.metrics()["peak_recall_snr_10"] >= 0.95, score
    assert np.median(score.errors_px) < 0.2


@DETECTORS
@pytest.mark.parametrize("mode", MODES)
def test_blank_and_dark_frames_have_no_peaks(score: AccuracyScore, detector: str) -> None:
    assert score.blank_frames >= MIN_BLANK_FRAMES[detector]
    assert score.blank_peaks == 0


def test_triage_of_an_eiger_bslz4_blob_equals_triage_of_the_prepared_frame() -> None:
    params = TriageParams()
    sfx = SfxFrames(DetectorModel.EIGER2_4M, seed=2024, hit_fraction=1.0, peaks_per_hit=(20, 20))
    geometry = eiger_triage_geometry(
        sfx.shape, beam_center_x_px=sfx.beam_center[0], beam_center_y_px=sfx.beam_center[1],
        pixel_mask=sfx.pixel_mask, params=params,
    )
    hit_finder = HitFinder(geometry, params)
    pixels = sfx.pixels(0)
    hot_gap_free = pixels.copy()
    hot_gap_free[600, 700] = sfx.masked_value  # a masked marker inside a module: masked by its value alone
    for frame in (pixels, hot_gap_free):
        decoded = hit_finder.triage_eiger(Encoding.BSLZ4, bslz4_chunk(frame), sfx.shape, sfx.dtype)
        prepared = hit_finder.triage(frame.astype(np.float32), (frame != sfx.masked_value).astype(np.uint8))
        assert decoded.n_peaks == prepared.n_peaks == 20
        assert decoded.lit_pixels == prepared.lit_pixels
        for column in ("fs", "ss", "intensity", "snr", "npix", "max_value"):
            np.testing.assert_array_equal(getattr(decoded.peaks, column), getattr(prepared.peaks, column))
        assert decoded.time_ms > 0.0


@pytest.fixture(scope="module")
def realistic_eiger() -> dict[str, AccuracyScore]:
    """120 EIGER2 4M frames of the simulator's ``realistic`` preset (docs/simulators.md), 30 % hits."""
    return score_eiger("realistic", 120)


@pytest.fixture(scope="module")
def realistic_agipd() -> dict[str, AccuracyScore]:
    """3 corrected AGIPD-1M trains of 64 cells of the simulator's ``realistic`` preset, 30 % of the lit cells hits."""
    return score_agipd("realistic", 3)


REALISTIC = pytest.mark.parametrize("realistic", ["realistic_eiger", "realistic_agipd"], ids=["eiger_4m", "agipd_1m"],
                                   indirect=True)


@pytest.fixture
def realistic(request: pytest.FixtureRequest) -> dict[str, AccuracyScore]:
    return request.getfixturevalue(request.param)


@REALISTIC
def test_on_realistic_frames_hits_and_strong_peaks_meet_the_goals(realistic: dict[str, AccuracyScore]) -> None:
    """Low flux, weak peaks (SNR from 3) as close as 3 px, saturated (EIGER) or gain-switched (AGIPD) peaks,
    hot and dead pixels, an ice ring, a streak, a shadow."""
    for mode, score in realistic.items():
        found = score.metrics()
        assert score.true_hits >= 25 and score.band_true["snr_10"] >= 300, (mode, score)
        assert found["hit_recall"] >= 0.98 and found["hit_precision"] >= 0.98, (mode, found)
        assert found["peak_recall_snr_10"] >= 0.97, (mode, found)
        assert found["peak_precision"] >= 0.98, (mode, found)


@REALISTIC
def test_on_realistic_frames_fast_mode_is_within_001_of_full_mode_on_every_number(
        realistic: dict[str, AccuracyScore]) -> None:
    fast, full = (realistic[mode].metrics() for mode in ("fast", "full"))
    assert all(abs(fast[name] - full[name]) <= 0.01 for name in METRICS), (fast, full)

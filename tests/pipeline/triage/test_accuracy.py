"""Triage accuracy against the simulators' ground truth, at the DEFAULT ``TriageParams``, fast and full mode.

Acceptance (the triage issue): hit recall >= 0.99 and precision >= 0.98; >= 95 % of the true peaks with
SNR >= 10 found within 1 px; blank frames give 0 peaks.

A true peak's SNR is ``I / sqrt(I + A·b)`` with ``I`` its expected integrated photons, ``A = 4π·σ²`` the
area of a Gaussian spot of width σ (pixels) and ``b`` the mean background photons per pixel at the
peak from the simulator's background model: the mean image of ``SfxFrames``' ``BackgroundPool`` (flat
scatter plus water ring) for the Eiger, ``agipd_pixel_pool.BACKGROUND_PHOTONS`` (0.1, flat) for lit
AGIPD frames. A peak counts as found when a reported peak lies within 1 px (Euclidean, in stacked
(8192, 128) coordinates for AGIPD) of its true position.

Frames are generated once per module and triaged by both modes in the same loop (Eiger 4M frames are
9 MB each, too many to keep): 240 Eiger 4M frames, 6 AGIPD trains of 64 corrected cells (384 frames,
every 8th dark). Runtime ≈ 20 s on the 2-core development VM, mostly frame generation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from benchmarks.triage_accuracy import METRICS, AccuracyScore, score_eiger
from detpipe.pipeline.core.frame import Encoding
from detpipe.pipeline.core.peak_list import FrameTriage
from detpipe.pipeline.core.triage_params import TriageParams
from detpipe.pipeline.triage.detector_geometry import agipd_triage_geometry, eiger_triage_geometry
from detpipe.pipeline.triage.hit_finder import HitFinder
from detpipe.simulators import AgipdSimulator, DetectorModel, SfxFrames, bslz4_chunk
from detpipe.simulators.agipd_pixel_pool import BACKGROUND_PHOTONS as AGIPD_BACKGROUND_PHOTONS
from detpipe.simulators.sfx_background import BackgroundPool

EIGER_FRAMES = 240
AGIPD_TRAINS = 6
AGIPD_CELLS = 64
MODES = ("fast", "full")
SNR_CUT = 10.0


@dataclass
class Score:
    """Per-mode tallies over a series of frames."""

    true_hits: int = 0
    found_hits: int = 0
    false_hits: int = 0
    blank_frames: int = 0
    blank_peaks: int = 0
    strong_peaks: int = 0
    strong_found: int = 0
    errors_px: list[float] = field(default_factory=list, repr=False)

    def add(self, result: FrameTriage, is_hit: bool, peaks: list[tuple[float, float, float]]) -> None:
        """``peaks``: (fs, ss, snr) of every true peak of the frame."""
        if is_hit:
            self.true_hits += 1
            self.found_hits += result.is_hit
        else:
            self.false_hits += result.is_hit
            self.blank_frames += 1
            self.blank_peaks += result.n_peaks
        for fs, ss, snr in peaks:
            if snr < SNR_CUT:
                continue
            self.strong_peaks += 1
            distance = np.hypot(result.peaks.fs - fs, result.peaks.ss - ss)
            if distance.size and distance.min() <= 1.0:
                self.strong_found += 1
                self.errors_px.append(float(distance.min()))

    @property
    def recall(self) -> float:
        return self.found_hits / self.true_hits

    @property
    def precision(self) -> float:
        return self.found_hits / (self.found_hits + self.false_hits)

    @property
    def peak_recovery(self) -> float:
        return self.strong_found / self.strong_peaks


def true_snr(intensity: float, sigma_px: float, background: float) -> float:
    return intensity / np.sqrt(intensity + 4.0 * np.pi * sigma_px**2 * background)


def finders(geometry, params: TriageParams) -> dict[str, HitFinder]:
    found = {mode: HitFinder(geometry, dataclasses.replace(params, fast_mode=mode == "fast")) for mode in MODES}
    for hit_finder in found.values():
        hit_finder.warm_up()
    return found


@pytest.fixture(scope="module")
def eiger_scores() -> dict[str, Score]:
    params = TriageParams()
    sfx = SfxFrames(DetectorModel.EIGER2_4M, seed=2024, hit_fraction=0.1, peaks_per_hit=(15, 60))
    geometry = eiger_triage_geometry(
        sfx.shape, beam_center_x_px=sfx.beam_center[0], beam_center_y_px=sfx.beam_center[1],
        pixel_mask=sfx.pixel_mask, params=params,
    )
    background = BackgroundPool(sfx.geometry, seed=sfx.seed, beam_center=sfx.beam_center).mean_image()
    hit_finders = finders(geometry, params)
    scores = {mode: Score() for mode in MODES}
    for index in range(EIGER_FRAMES):
        pixels = sfx.pixels(index)
        truth = sfx.truth(index)
        image = pixels.astype(np.float32)
        frame_mask = (pixels != sfx.masked_value).astype(np.uint8)
        peaks = [
            (p.x, p.y, true_snr(p.intensity, p.sigma_px, float(background[round(p.y), round(p.x)])))
            for p in truth.peaks
        ]
        for mode, hit_finder in hit_finders.items():
            scores[mode].add(hit_finder.triage(image, frame_mask), bool(truth.is_hit), peaks)
    return scores


def agipd_frames(simulator: AgipdSimulator) -> Iterator[tuple[np.ndarray, np.ndarray, bool, list]]:
    for train_index in range(AGIPD_TRAINS):
        train = simulator.train(train_index)
        truth = simulator.truth.train(train_index)
        for frame in range(train.data.shape[0]):
            yield train.data[frame], train.mask[frame], bool(truth.hits[frame]), list(truth.peaks_in(frame))


@pytest.fixture(scope="module")
def agipd_scores() -> dict[str, Score]:
    params = TriageParams()
    hit_finders = finders(agipd_triage_geometry(params=params), params)
    scores = {mode: Score() for mode in MODES}
    simulator = AgipdSimulator(
        product="corrected", cells=AGIPD_CELLS, seed=7, paced=False, hit_fraction=0.1, peaks_per_hit=(15, 60)
    )
    try:
        for photons, bad_pixels, is_hit, truth_peaks in agipd_frames(simulator):
            peaks = [
                (p.fs, p.module * 512 + p.ss, true_snr(p.intensity, p.sigma_px, AGIPD_BACKGROUND_PHOTONS))
                for p in truth_peaks
            ]
            for mode, hit_finder in hit_finders.items():
                scores[mode].add(hit_finder.triage_agipd(photons, bad_pixels), is_hit, peaks)
    finally:
        simulator.stop()
    return scores


# Frames the samples must hold for the numbers to mean something: ≥ 200 frames per detector, 10 % hits.
MIN_BLANK_FRAMES = {"eiger_scores": 180, "agipd_scores": 300}
DETECTORS = pytest.mark.parametrize("detector", ["eiger_scores", "agipd_scores"], ids=["eiger_4m", "agipd_1m"])


@pytest.fixture
def score(request: pytest.FixtureRequest, detector: str, mode: str) -> Score:
    return request.getfixturevalue(detector)[mode]


@DETECTORS
@pytest.mark.parametrize("mode", MODES)
def test_hits_are_found_with_recall_099_and_precision_098(score: Score) -> None:
    assert score.true_hits >= 15, "the sample must hold enough hits to measure recall"
    assert score.recall >= 0.99, score
    assert score.precision >= 0.98, score


@DETECTORS
@pytest.mark.parametrize("mode", MODES)
def test_95_percent_of_snr10_peaks_are_recovered_within_one_pixel(score: Score) -> None:
    assert score.strong_peaks >= 300
    assert score.peak_recovery >= 0.95, score
    assert np.median(score.errors_px) < 0.2


@DETECTORS
@pytest.mark.parametrize("mode", MODES)
def test_blank_and_dark_frames_have_no_peaks(score: Score, detector: str) -> None:
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


def test_on_realistic_frames_hits_and_strong_peaks_meet_the_goals(realistic_eiger: dict[str, AccuracyScore]) -> None:
    """Low flux, SNR 3-300 peaks as close as 3 px, saturation, defects, an ice ring, a streak, a shadow."""
    for mode, score in realistic_eiger.items():
        found = score.metrics()
        assert score.true_hits >= 25 and score.band_true["snr_10"] >= 300, (mode, score)
        assert found["hit_recall"] >= 0.98 and found["hit_precision"] >= 0.98, (mode, found)
        assert found["peak_recall_snr_10"] >= 0.97, (mode, found)
        assert found["peak_precision"] >= 0.98, (mode, found)


def test_on_realistic_frames_fast_mode_is_within_001_of_full_mode_on_every_number(
        realistic_eiger: dict[str, AccuracyScore]) -> None:
    fast, full = (realistic_eiger[mode].metrics() for mode in ("fast", "full"))
    assert all(abs(fast[name] - full[name]) <= 0.01 for name in METRICS), (fast, full)

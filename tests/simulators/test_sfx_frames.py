from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from detpipe.simulators import DetectorGeometry, SfxFrames
from detpipe.simulators.detector_models import MASK_DEAD, MASK_GAP, MODULE_COLS, MODULE_ROWS
from detpipe.simulators.sfx_difficulty import PRESETS
from detpipe.simulators.sfx_frames import PEAK_INTENSITY_RANGE

N_FRAMES = 120


@pytest.fixture(scope="module")
def frames_1m() -> SfxFrames:
    return SfxFrames("1M", seed=11, hit_fraction=0.4, peaks_per_hit=(15, 60))


def test_frame_i_is_the_same_for_the_same_seed_and_differs_between_seeds() -> None:
    a, b = SfxFrames("500K", seed=3, hit_fraction=1.0), SfxFrames("500K", seed=3, hit_fraction=1.0)
    for i in (0, 5, 1234):
        np.testing.assert_array_equal(a.pixels(i), b.pixels(i))
        assert a.truth(i) == b.truth(i)
    other = SfxFrames("500K", seed=4, hit_fraction=1.0)
    assert not np.array_equal(a.pixels(5), other.pixels(5))
    assert a.truth(5).peaks != other.truth(5).peaks


def test_frames_do_not_depend_on_the_order_they_are_asked_for() -> None:
    forward, backward = SfxFrames("500K", seed=9), SfxFrames("500K", seed=9)
    first = [forward.pixels(i) for i in range(4)]
    last = [backward.pixels(i) for i in reversed(range(4))][::-1]
    for x, y in zip(first, last, strict=True):
        np.testing.assert_array_equal(x, y)


def test_hit_fraction_is_respected_over_many_frames(frames_1m: SfxFrames) -> None:
    hits = sum(bool(frames_1m.truth(i).is_hit) for i in range(N_FRAMES))
    expected, sigma = 0.4 * N_FRAMES, math.sqrt(N_FRAMES * 0.4 * 0.6)
    assert abs(hits - expected) < 4 * sigma, hits


def test_hits_carry_peaks_per_hit_peaks_and_misses_none(frames_1m: SfxFrames) -> None:
    for i in range(N_FRAMES):
        truth = frames_1m.truth(i)
        assert truth.index == i
        if truth.is_hit:
            assert 15 <= len(truth.peaks) <= 60
        else:
            assert truth.peaks == ()


def test_peaks_lie_inside_modules_apart_from_each_other_with_log_uniform_intensities(frames_1m: SfxFrames) -> None:
    mask = frames_1m.pixel_mask
    intensities = []
    for i in range(40):
        peaks = frames_1m.truth(i).peaks
        for n, peak in enumerate(peaks):
            row, col = round(peak.y), round(peak.x)
            window = mask[row - 6 : row + 7, col - 6 : col + 7]
            assert window.shape == (13, 13) and not window.any(), f"frame {i} peak {peak} touches a gap or dead pixel"
            assert 1.0 <= peak.sigma_px <= 1.3
            for other in peaks[n + 1 :]:
                assert math.hypot(peak.x - other.x, peak.y - other.y) >= PRESETS["easy"].min_separation_px
            intensities.append(peak.intensity)
    low, high = PEAK_INTENSITY_RANGE
    assert low <= min(intensities) and max(intensities) <= high
    median = float(np.median(intensities))
    assert 0.5 * math.sqrt(low * high) < median < 2 * math.sqrt(low * high)  # log-uniform: median = geometric mean


def test_a_pixel_at_a_truth_peak_centre_is_well_above_the_background(frames_1m: SfxFrames) -> None:
    index = next(i for i in range(N_FRAMES) if frames_1m.truth(i).is_hit)
    pixels = frames_1m.pixels(index).astype(np.int64)
    valid = frames_1m.pixel_mask == 0
    background = np.median(pixels[valid])
    for peak in frames_1m.truth(index).peaks:
        row, col = round(peak.y), round(peak.x)
        assert pixels[row, col] > background + 10, (peak, pixels[row, col], background)


def test_the_counts_of_a_peak_add_up_to_its_truth_intensity(frames_1m: SfxFrames) -> None:
    index = next(i for i in range(N_FRAMES) if frames_1m.truth(i).is_hit)
    pixels = frames_1m.pixels(index).astype(np.int64)
    mean_background = frames_1m._background.mean_image()
    for peak in frames_1m.truth(index).peaks:
        row, col = round(peak.y), round(peak.x)
        window = (slice(row - 6, row + 7), slice(col - 6, col + 7))
        signal = pixels[window].sum() - mean_background[window].sum()
        noise = math.sqrt(peak.intensity + mean_background[window].sum())
        assert abs(signal - peak.intensity) < 6 * noise + 0.01 * peak.intensity, (peak, signal)


@pytest.mark.parametrize(("bit_depth", "dtype"), [(16, np.uint16), (32, np.uint32)])
def test_gap_and_dead_pixels_hold_the_top_value_of_the_bit_depth(bit_depth: int, dtype: type) -> None:
    frames = SfxFrames("1M", seed=1, hit_fraction=1.0, bit_depth=bit_depth)
    pixels = frames.pixels(0)
    assert pixels.dtype == dtype and pixels.shape == (1062, 1028)
    masked = frames.pixel_mask != 0
    assert (frames.pixel_mask & MASK_GAP).any() and (frames.pixel_mask & MASK_DEAD).any()
    assert (pixels[masked] == 2**bit_depth - 1).all()
    assert (pixels[~masked] < 2**bit_depth - 1).all()


def test_without_pixel_mask_applied_gaps_read_zero() -> None:
    frames = SfxFrames("1M", seed=1).with_settings(pixel_mask_applied=False)
    assert (frames.pixels(0)[frames.pixel_mask != 0] == 0).all()


def test_background_has_a_water_ring_around_the_beam_centre() -> None:
    frames = SfxFrames("1M", seed=2, hit_fraction=0.0)
    stack = np.stack([frames.pixels(i) for i in range(8)]).astype(np.float64).mean(axis=0)
    height, width = frames.shape
    rows, cols = np.indices(frames.shape)
    radius = np.hypot(rows - height / 2, cols - width / 2)
    valid = frames.pixel_mask == 0
    ring_radius = 0.35 * width / 2
    on_ring = stack[valid & (abs(radius - ring_radius) < 3)].mean()
    inside = stack[valid & (radius < ring_radius / 2)].mean()
    assert 0.3 < inside < 1.0
    assert on_ring > inside + 1.5


def test_distinct_frames_repeat_pixels_and_truth_with_that_period() -> None:
    frames = SfxFrames("500K", seed=5, hit_fraction=0.5, distinct_frames=3)
    for i in range(3):
        np.testing.assert_array_equal(frames.pixels(i), frames.pixels(i + 3 * 7))
        assert frames.truth(i + 21).peaks == frames.truth(i).peaks
        assert frames.truth(i + 21).index == i + 21
    assert not np.array_equal(frames.pixels(0), frames.pixels(1))


def test_truth_sidecar_lists_every_frame_with_its_peaks(tmp_path: Path) -> None:
    frames = SfxFrames("500K", seed=8, hit_fraction=0.5)
    path = frames.write_truth(tmp_path / "truth.json", 10)
    document = json.loads(path.read_text())
    assert document["model"] == "500K" and document["seed"] == 8
    assert document["shape"] == [512, 1028] and document["dtype"] == "uint16"
    assert [f["index"] for f in document["frames"]] == list(range(10))
    for entry in document["frames"]:
        truth = frames.truth(entry["index"])
        assert entry["is_hit"] == truth.is_hit
        assert [(p["x"], p["y"], p["intensity"], p["sigma_px"]) for p in entry["peaks"]] == [
            (p.x, p.y, p.intensity, p.sigma_px) for p in truth.peaks
        ]


def test_peaks_stay_clear_of_module_edges_on_a_multi_module_detector() -> None:
    frames = SfxFrames("4M", seed=1, hit_fraction=1.0, peaks_per_hit=(60, 60))
    geometry = DetectorGeometry.of("4M")
    origins = list(geometry.module_origins())
    for peak in frames.truth(0).peaks:
        assert any(
            r0 + 6 < peak.y < r0 + MODULE_ROWS - 7 and c0 + 6 < peak.x < c0 + MODULE_COLS - 7 for r0, c0 in origins
        ), peak


def test_invalid_options_are_reported_together() -> None:
    with pytest.raises(ValueError, match="hit_fraction.*peaks_per_hit.*bit_depth"):
        SfxFrames("500K", hit_fraction=1.5, peaks_per_hit=(5, 2), bit_depth=12)

"""peakfinder8 on small hand-made frames (docs/triage.md): positions, panel rules, bounds, masks, caps.

Frames are 256 × 256 float32 with a seeded Poisson background and Gaussian spots of known sub-pixel
position; the beam sits at the image centre, so rings hold hundreds of pixels (as on a real detector,
a ring must be much larger than a spot for sigma clipping to ignore it).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from detpipe.pipeline.core.frame import Encoding
from detpipe.pipeline.core.triage_params import TriageParams
from detpipe.pipeline.triage import peakfinder8
from detpipe.pipeline.triage.detector_geometry import agipd_triage_geometry
from detpipe.pipeline.triage.geometry import TriageGeometry
from detpipe.pipeline.triage.hit_finder import HitFinder
from detpipe.simulators import bslz4_chunk

SIZE = 256
CENTRE = 128.0
PARAMS = TriageParams()


def geometry(
    panels: list[tuple[int, int, int, int]] | None = None,
    *,
    mask: np.ndarray | None = None,
    params: TriageParams = PARAMS,
) -> TriageGeometry:
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    radius = np.hypot(rows - CENTRE, cols - CENTRE)
    return TriageGeometry.build(
        radius,
        np.ones((SIZE, SIZE), np.uint8) if mask is None else mask,
        panels or [(0, SIZE, 0, SIZE)],
        min_res=params.min_res,
        max_res=params.max_res,
        pixels_per_ring=params.pixels_per_ring,
    )


def frame(spots: list[tuple[float, float]], *, photons: float = 3000.0, sigma: float = 1.0,
          background: float = 1.0, seed: int = 0) -> np.ndarray:
    """Poisson background plus Gaussian spots at (fs, ss), each integrating to ``photons``."""
    image = np.random.default_rng(seed).poisson(background, (SIZE, SIZE)).astype(np.float32)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    for fs, ss in spots:
        image += (photons / (2 * np.pi * sigma**2)) * np.exp(-((cols - fs) ** 2 + (rows - ss) ** 2) / (2 * sigma**2))
    return image


def ring_spots(n: int) -> list[tuple[float, float]]:
    """``n`` spots 5 px apart in radius (60 … 115 px) and 30° apart in angle: every 1-px ring crosses at
    most one spot, so each ring's sigma clipping converges to its background in five passes."""
    return [
        (CENTRE + (60 + 5 * k) * np.cos(np.pi * k / 6) + 0.3, CENTRE + (60 + 5 * k) * np.sin(np.pi * k / 6) + 0.2)
        for k in range(n)
    ]


def finder(params: TriageParams = PARAMS, **kwargs: object) -> HitFinder:
    return HitFinder(geometry(params=params, **kwargs), params)  # type: ignore[arg-type]


@pytest.mark.parametrize("fast_mode", [True, False])
def test_a_single_gaussian_spot_is_found_at_its_sub_pixel_position(fast_mode: bool) -> None:
    params = dataclasses.replace(PARAMS, fast_mode=fast_mode)
    result = finder(params).triage(frame([(70.3, 40.6)]))
    assert result.n_peaks == 1
    assert abs(result.peaks.fs[0] - 70.3) < 0.1
    assert abs(result.peaks.ss[0] - 40.6) < 0.1
    assert result.peaks.intensity[0] == pytest.approx(3000.0, rel=0.1)
    assert result.peaks.snr[0] >= PARAMS.minimum_snr
    assert result.peaks.fs.dtype == np.float32


def test_a_spot_on_a_panel_border_is_not_grown_across_panels() -> None:
    image = frame([(63.5, 100.2)], photons=20000.0)
    one_panel = HitFinder(geometry(), PARAMS).triage(image)
    two_panels = HitFinder(geometry([(0, SIZE, 0, 64), (0, SIZE, 64, SIZE)]), PARAMS).triage(image)

    assert one_panel.n_peaks == 1
    assert one_panel.peaks.fs[0] == pytest.approx(63.5, abs=0.05)
    assert two_panels.n_peaks == 2, "each panel grows its own half of the spot"
    left, right = sorted(two_panels.peaks.fs)
    assert 62.0 <= left <= 63.0 and 64.0 <= right <= 65.0
    assert two_panels.peaks.npix.sum() == one_panel.peaks.npix[0]


def test_border_pixels_never_seed() -> None:
    image = frame([])
    image[0, 50:52] = 500.0  # two bright pixels on the panel's first row: no seed may start there
    image[100, SIZE - 1] = image[101, SIZE - 1] = 500.0  # and on its last column
    assert finder().triage(image).n_peaks == 0

    image[1, 50:52] = 500.0  # the same pair one row inside the panel seeds, and grows onto the border
    result = finder().triage(image)
    assert result.n_peaks == 1
    assert result.peaks.npix[0] == 4


@pytest.mark.parametrize(
    ("min_pixel_count", "max_pixel_count", "found"),
    [(6, 6, 1), (7, 10, 0), (1, 5, 0), (2, 6, 1), (6, 200, 1)],
)
def test_the_pixel_count_bounds_are_inclusive(min_pixel_count: int, max_pixel_count: int, found: int) -> None:
    image = frame([], background=0.2)  # no background pixel reaches the threshold, even alone
    image[60:62, 80:83] = 50.0  # a flat-topped spot of exactly 2 × 3 = 6 pixels above threshold
    params = dataclasses.replace(PARAMS, min_pixel_count=min_pixel_count, max_pixel_count=max_pixel_count)
    result = finder(params).triage(image)
    assert result.n_peaks == found
    if found:
        assert result.peaks.npix[0] == 6
        assert result.peaks.fs[0] == pytest.approx(81.0) and result.peaks.ss[0] == pytest.approx(60.5)


@pytest.mark.parametrize("fast_mode", [True, False])
@pytest.mark.parametrize("background", [0.5, 1.0, 3.0])
def test_a_blank_poisson_frame_has_no_peaks(fast_mode: bool, background: float) -> None:
    params = dataclasses.replace(PARAMS, fast_mode=fast_mode)
    hit_finder = finder(params)
    for seed in range(4):
        result = hit_finder.triage(frame([], background=background, seed=seed))
        assert result.n_peaks == 0
        assert not result.is_hit


def test_max_num_peaks_caps_the_stored_peaks_but_n_peaks_counts_them_all() -> None:
    spots = ring_spots(12)
    params = dataclasses.replace(PARAMS, max_num_peaks=5, min_peaks=len(spots))
    result = finder(params).triage(frame(spots))
    assert result.n_peaks == len(spots)
    assert len(result.peaks) == 5
    assert all(len(column) == 5 for column in dataclasses.astuple(result.peaks))
    assert result.is_hit, "the hit rule uses every accepted peak, not only the stored ones"


def test_fast_and_full_ring_statistics_find_the_same_peaks_on_a_clean_frame() -> None:
    spots = ring_spots(12)
    image = frame(spots, photons=2000.0, background=0.2)  # clean: every ring's threshold is adc_threshold
    fast = finder(dataclasses.replace(PARAMS, fast_mode=True)).triage(image)
    full = finder(dataclasses.replace(PARAMS, fast_mode=False)).triage(image)
    assert fast.n_peaks == full.n_peaks == len(spots)
    order_fast, order_full = np.argsort(fast.peaks.fs), np.argsort(full.peaks.fs)
    for column in ("fs", "ss", "npix"):
        np.testing.assert_allclose(
            getattr(fast.peaks, column)[order_fast], getattr(full.peaks, column)[order_full], atol=1e-3
        )
    truth = np.sort(np.array([fs for fs, _ in spots], np.float32))
    np.testing.assert_allclose(np.sort(full.peaks.fs), truth, atol=0.1)


def test_masked_and_non_finite_pixels_are_never_part_of_a_peak() -> None:
    spot = (90.0, 70.0)  # centred on a pixel: (ss 70, fs 90) is the brightest
    image = frame([spot])
    hit_finder = finder()
    whole = hit_finder.triage(image)
    assert whole.n_peaks == 1

    frame_mask = np.ones((SIZE, SIZE), np.uint8)
    frame_mask[70, 90] = 0
    static_mask = frame_mask.copy()
    poisoned = image.copy()
    poisoned[70, 90] = np.inf
    for result in (
        hit_finder.triage(image, frame_mask),
        finder(mask=static_mask).triage(image),
        hit_finder.triage(poisoned),
    ):
        assert result.n_peaks == 1
        assert result.peaks.npix[0] == whole.peaks.npix[0] - 1
        assert result.peaks.intensity[0] < whole.peaks.intensity[0] - 0.1 * image[70, 90]
        assert np.isfinite(result.peaks.intensity[0])

    frame_mask[64:77, 84:97] = 0  # the whole spot
    assert hit_finder.triage(image, frame_mask).n_peaks == 0


@pytest.mark.parametrize(
    ("min_res", "max_res", "radii_found"),
    [(0.0, 0.0, [20, 50, 90]), (30.0, 80.0, [50]), (30.0, 0.0, [50, 90]), (0.0, 70.0, [20, 50])],
)
def test_min_res_and_max_res_cut_peaks_by_radius(min_res: float, max_res: float, radii_found: list[int]) -> None:
    spots = [(CENTRE + r + 0.3, CENTRE + 0.2) for r in (20, 50, 90)]
    params = dataclasses.replace(PARAMS, min_res=min_res, max_res=max_res)
    result = finder(params).triage(frame(spots))
    found = sorted(int(round(fs - CENTRE)) for fs in result.peaks.fs)
    assert found == radii_found


def test_the_lit_pixel_pre_veto_skips_peakfinding_below_min_lit_pixels() -> None:
    image = frame([(70.3, 40.6)], background=0.05)
    lit = int(np.count_nonzero(image > PARAMS.lit_pixel_threshold))
    counted = finder().triage(image)
    assert counted.lit_pixels == lit
    assert counted.n_peaks == 1 and not counted.vetoed

    vetoed = finder(dataclasses.replace(PARAMS, min_lit_pixels=lit + 1, min_peaks=0)).triage(image)
    assert vetoed.vetoed and vetoed.n_peaks == 0 and not vetoed.is_hit and len(vetoed.peaks) == 0
    assert vetoed.lit_pixels == lit
    kept = finder(dataclasses.replace(PARAMS, min_lit_pixels=lit)).triage(image)
    assert not kept.vetoed and kept.n_peaks == 1


def test_warm_up_compiles_every_kernel_variant_the_entry_points_use() -> None:
    HitFinder.warm_up_kernels()
    kernels = [k for k in vars(peakfinder8).values() if hasattr(k, "signatures")]
    compiled = {k.__name__: len(k.signatures) for k in kernels}

    image = frame([(70.3, 40.6)])
    frozen = image.copy()
    frozen.flags.writeable = False
    for fast_mode in (True, False):
        hit_finder = finder(dataclasses.replace(PARAMS, fast_mode=fast_mode))
        for pixels in (image, frozen):
            hit_finder.triage(pixels)
            hit_finder.triage(pixels, np.ones((SIZE, SIZE), np.uint8))
        counts = np.rint(image).astype(np.uint16)
        hit_finder.triage_eiger(Encoding.BSLZ4, bslz4_chunk(counts), (SIZE, SIZE), np.dtype(np.uint16))
        hit_finder.triage_eiger(Encoding.RAW, bytearray(counts.tobytes()), (SIZE, SIZE), np.dtype(np.uint16))
        agipd = HitFinder(agipd_triage_geometry(params=hit_finder.params), hit_finder.params)
        cell = np.zeros((16, 512, 128), np.float32)
        bad = np.zeros((16, 512, 128), np.uint32)
        agipd.triage_agipd(cell, bad)
        cell.flags.writeable = bad.flags.writeable = False
        agipd.triage_agipd(cell, bad)
        agipd.triage_agipd(cell)

    assert {k.__name__: len(k.signatures) for k in kernels} == compiled


def test_a_frame_of_more_peaks_than_max_peaks_is_no_hit_though_only_max_num_peaks_are_stored() -> None:
    """Why n_peaks counts every peak: a capped count would pass a frame of spurious peaks as a hit."""
    spots = ring_spots(12)
    params = dataclasses.replace(PARAMS, max_num_peaks=8, min_peaks=2, max_peaks=8)
    result = finder(params).triage(frame(spots))
    assert (result.n_peaks, len(result.peaks)) == (12, 8)
    assert not result.is_hit


LOW_FLUX_SIZE = 1024  # rings of up to ~3000 pixels, so a 100-pixel sample can miss every photon of a ring


def low_flux_frame(background: float, spots: list[tuple[float, float]], seed: int) -> np.ndarray:
    image = np.random.default_rng(seed).poisson(background, (LOW_FLUX_SIZE, LOW_FLUX_SIZE)).astype(np.float32)
    for fs, ss in spots:  # 300-photon Gaussian spots, sigma 1 px
        rows, cols = np.mgrid[int(ss) - 6:int(ss) + 7, int(fs) - 6:int(fs) + 7]
        image[rows, cols] += (300.0 / (2 * np.pi)) * np.exp(-((cols - fs) ** 2 + (rows - ss) ** 2) / 2)
    return image


@pytest.fixture(scope="module")
def low_flux_finders() -> dict[bool, HitFinder]:
    rows, cols = np.mgrid[0:LOW_FLUX_SIZE, 0:LOW_FLUX_SIZE]
    centre = LOW_FLUX_SIZE / 2
    built = TriageGeometry.build(np.hypot(rows - centre, cols - centre), np.ones((LOW_FLUX_SIZE,) * 2, np.uint8),
                                 [(0, LOW_FLUX_SIZE, 0, LOW_FLUX_SIZE)], min_res=0, max_res=0,
                                 pixels_per_ring=PARAMS.pixels_per_ring)
    return {fast: HitFinder(built, dataclasses.replace(PARAMS, fast_mode=fast)) for fast in (True, False)}


@pytest.mark.parametrize("background", [0.0, 0.005, 0.01, 0.05, 0.5])
def test_fast_mode_finds_what_full_mode_finds_at_low_flux(
        low_flux_finders: dict[bool, HitFinder], background: float) -> None:
    """A ring's 100-pixel sample that saw no photon (or one spot pixel among zeros) is recomputed from the
    whole ring: plain sampled statistics found 23 of these 40 peaks at zero background, 35 at 0.01."""
    centre = LOW_FLUX_SIZE / 2
    spots = [(centre + (100 + 9 * k) * np.cos(2.4 * k) + 0.3, centre + (100 + 9 * k) * np.sin(2.4 * k) + 0.2)
             for k in range(40)]
    for seed in range(2):
        image = low_flux_frame(background, spots, seed)
        fast, full = (low_flux_finders[mode].triage(image) for mode in (True, False))
        assert fast.n_peaks == full.n_peaks == len(spots)
        order_fast, order_full = np.argsort(fast.peaks.fs), np.argsort(full.peaks.fs)
        for column, tolerance in (("fs", 0.05), ("ss", 0.05), ("intensity", 0.02 * 300)):
            np.testing.assert_allclose(getattr(fast.peaks, column)[order_fast],
                                       getattr(full.peaks, column)[order_full], atol=tolerance)
        found = np.column_stack([fast.peaks.fs, fast.peaks.ss])
        for fs, ss in spots:
            assert np.hypot(*(found - (fs, ss)).T).min() < 0.2


def reference_clipping(values: np.ndarray, adc_threshold: float, min_snr: float) -> tuple[float, float, float]:
    """peakfinder8's five clipping passes in float64 on raw sums, as the reference computes them."""
    lower, upper, mean, std = -1e9, 1e9, 0.0, 0.0
    for _ in range(peakfinder8.CLIP_ITERATIONS):
        inside = values[(values > lower) & (values < upper)].astype(np.float64)
        if inside.size == 0:
            mean, std, upper, lower = 0.0, 0.0, float(peakfinder8.FLT_MAX), float(peakfinder8.FLT_MIN)
            continue
        mean = inside.sum() / inside.size
        variance = (inside * inside).sum() / inside.size - mean * mean
        std = np.sqrt(variance) if variance > 0 else 0.0
        upper, lower = max(adc_threshold, mean + min_snr * std), mean - min_snr * std
    return mean, std, upper


def clipping_rings() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {
        "zeros and three spot pixels": np.r_[np.zeros(1000), [40.0, 40.0, 40.0]],
        "one flat value": np.full(500, 5.0),
        "zeros and one faint tail pixel": np.r_[np.zeros(999), [0.8]],
        "0.01 photons per pixel": rng.poisson(0.01, 20000).astype(np.float64),
        "1 photon per pixel": rng.poisson(1.0, 20000).astype(np.float64),
        "a bright flat ring": np.r_[np.full(3000, 1000.0), [1001.0]],
    }


@pytest.mark.parametrize("name", list(clipping_rings()))
def test_ring_statistics_equal_a_float64_reference_on_rings_that_clip_to_one_value(name: str) -> None:
    values = np.random.default_rng(1).permutation(clipping_rings()[name]).astype(np.float32)
    offset, sigma, upper, kept = (np.zeros(1, np.float32) for _ in range(4))
    peakfinder8.ring_statistics(values, np.array([0, values.size], np.int64), PARAMS.adc_threshold,
                                PARAMS.minimum_snr, offset, sigma, upper, kept)
    mean, std, high = reference_clipping(values, PARAMS.adc_threshold, PARAMS.minimum_snr)
    assert upper[0] == pytest.approx(high, rel=1e-5)
    assert offset[0] == pytest.approx(mean, rel=1e-5, abs=1e-7)
    assert sigma[0] == pytest.approx(std, rel=1e-4, abs=1e-7)


@pytest.mark.parametrize(("max_saturated_peaks", "is_hit"), [(-1, True), (3, True), (2, False), (0, False)])
def test_saturated_peaks_are_counted_and_veto_the_hit_beyond_max_saturated_peaks(
        max_saturated_peaks: int, is_hit: bool) -> None:
    """OM's rule: more than max_saturated_peaks peaks whose brightest pixel reaches saturation_value, no hit."""
    spots = ring_spots(12)
    image = frame(spots)
    saturation = 60000.0
    for fs, ss in spots[:3]:
        image[int(round(ss)), int(round(fs))] = saturation  # the brightest pixel at the count-rate cut-off
    params = dataclasses.replace(PARAMS, saturation_value=saturation, max_saturated_peaks=max_saturated_peaks)
    result = finder(params).triage(image)
    assert (result.n_peaks, result.n_saturated, result.is_hit) == (12, 3, is_hit)
    unset = finder(dataclasses.replace(PARAMS, max_saturated_peaks=0)).triage(image)  # saturation_value 0: none
    assert (unset.n_saturated, unset.is_hit) == (0, True)

"""Serial-crystallography frames with ground truth: Poisson background, a water ring and Bragg peaks, made as
hard as ``difficulty`` says (``sfx_difficulty``: low flux, weak and close peaks, saturation, defects, ice
rings, a jet streak, a shadow).

Frame i depends only on (model, seed, difficulty, hit_fraction, peaks_per_hit, beam centre,
i % distinct_frames), never on which series or thread asked for it, so a receiver's output can be checked
frame by frame.
Masked pixels (gaps, dead pixels) carry 2**bit_depth − 1, as the DCU writes with ``pixel_mask_applied``;
every other pixel is clipped to 2**bit_depth − 2.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .detector_models import MODULE_COLS, MODULE_ROWS, DetectorGeometry, DetectorModel
from .frame_source import FrameTruth, Peak, write_truth_sidecar
from .sfx_background import BackgroundPool
from .sfx_difficulty import (
    HOT_PIXEL_COUNTS,
    PRESETS,
    SfxDifficulty,
    defect_pixels,
    peak_intensity_for_snr,
    shadow_rows,
    true_snr,
)

PEAK_SIGMA_RANGE_PX = (1.0, 1.3)
PEAK_INTENSITY_RANGE = (300.0, 30000.0)  # integrated photons, drawn log-uniform
SATURATED_PEAK_OVERFLOW = 2.0  # a saturated peak's expected central pixel, in units of the count-rate cut-off
PEAK_WINDOW_RADIUS_PX = 6  # rendered out to > 4.5 sigma; the rest of the flux is < 1e-4
PEAK_MARGIN_PX = PEAK_WINDOW_RADIUS_PX + 1  # from module edges (hence gaps) and dead pixels
_TRUTH_STREAM = 0x7A
_NOISE_STREAM = 0x9E
_DTYPES = {8: np.dtype(np.uint8), 16: np.dtype(np.uint16), 32: np.dtype(np.uint32)}


class SfxFrames:
    """A ``FrameSource`` of synthetic SFX frames for one detector model and bit depth.

    ``hit_fraction`` of frames are hits with ``peaks_per_hit`` (inclusive range) Gaussian peaks.
    ``distinct_frames``: when set, frame i is frame ``i % distinct_frames`` (truth too), so a benchmark
    can stream thousands of frames from a few cached blobs. ``pixel_mask_applied=False`` leaves gaps
    and dead pixels at 0 instead of the saturation marker.
    """

    def __init__(
        self,
        model: DetectorModel | str = DetectorModel.EIGER2_4M,
        *,
        seed: int = 0,
        hit_fraction: float = 0.1,
        peaks_per_hit: tuple[int, int] = (15, 60),
        bit_depth: int = 16,
        beam_center: tuple[float, float] | None = None,
        pixel_mask_applied: bool = True,
        distinct_frames: int | None = None,
        background: BackgroundPool | None = None,
        difficulty: SfxDifficulty = PRESETS["easy"],
    ) -> None:
        problems = []
        if not 0.0 <= hit_fraction <= 1.0:
            problems.append(f"hit_fraction {hit_fraction} is not within [0, 1]")
        if not 0 <= peaks_per_hit[0] <= peaks_per_hit[1]:
            problems.append(f"peaks_per_hit {peaks_per_hit} is not a (low, high) range with 0 <= low <= high")
        if bit_depth not in _DTYPES:
            problems.append(f"bit_depth {bit_depth} is not one of {sorted(_DTYPES)}")
        if distinct_frames is not None and distinct_frames < 1:
            problems.append(f"distinct_frames {distinct_frames} must be >= 1 or None")
        if problems:
            raise ValueError("; ".join(problems))
        self.geometry = DetectorGeometry.of(model)
        self.seed = seed
        self.hit_fraction = hit_fraction
        self.peaks_per_hit = (int(peaks_per_hit[0]), int(peaks_per_hit[1]))
        self.bit_depth = bit_depth
        self.pixel_mask_applied = pixel_mask_applied
        self.distinct_frames = distinct_frames
        self.difficulty = difficulty
        height, width = self.geometry.shape
        centre = beam_center if beam_center is not None else (width / 2.0, height / 2.0)
        self.beam_center = (float(centre[0]), float(centre[1]))
        reusable = background is not None and (
            background.geometry, background.seed, background.beam_center, background.difficulty
        ) == (self.geometry, seed, self.beam_center, difficulty)
        self._background = background if reusable else BackgroundPool(
            self.geometry, seed=seed, beam_center=self.beam_center, difficulty=difficulty
        )
        self._hot_rows, self._hot_cols, self._unmasked_dead_rows, self._unmasked_dead_cols = defect_pixels(
            difficulty, self.geometry.shape, seed
        )
        dead = self.geometry.dead_pixels()
        self._dead_rows = np.array([r for r, _ in dead], dtype=np.intp)
        self._dead_cols = np.array([c for _, c in dead], dtype=np.intp)

    def with_settings(
        self,
        *,
        bit_depth: int | None = None,
        beam_center: tuple[float, float] | None = None,
        pixel_mask_applied: bool | None = None,
    ) -> SfxFrames:
        """The same scene under new detector settings; shares the background pool when it still applies."""
        new_depth = self.bit_depth if bit_depth is None else bit_depth
        new_centre = self.beam_center if beam_center is None else (float(beam_center[0]), float(beam_center[1]))
        new_mask = self.pixel_mask_applied if pixel_mask_applied is None else pixel_mask_applied
        if (new_depth, new_centre, new_mask) == (self.bit_depth, self.beam_center, self.pixel_mask_applied):
            return self
        return SfxFrames(
            self.geometry.model,
            seed=self.seed,
            hit_fraction=self.hit_fraction,
            peaks_per_hit=self.peaks_per_hit,
            bit_depth=new_depth,
            beam_center=new_centre,
            pixel_mask_applied=new_mask,
            distinct_frames=self.distinct_frames,
            background=self._background,
            difficulty=self.difficulty,
        )

    @property
    def shape(self) -> tuple[int, int]:
        return self.geometry.shape

    @property
    def dtype(self) -> np.dtype:
        return _DTYPES[self.bit_depth]

    def mean_background(self) -> NDArray[np.float32]:
        """Expected photons per pixel of the diffuse scene (read-only): what a peak's true SNR is measured
        against, and what a benchmark subtracts to weigh the Bragg signal a reduction keeps."""
        return self._background.mean_image()

    @property
    def pixel_mask(self) -> NDArray[np.uint32]:
        return self.geometry.pixel_mask()

    @property
    def masked_value(self) -> int:
        """What gap and dead pixels hold: 2**bit_depth − 1 with the mask applied, else 0."""
        return (1 << self.bit_depth) - 1 if self.pixel_mask_applied else 0

    @property
    def saturation_value(self) -> int:
        """The highest count a real pixel reports; one below the masked-pixel marker."""
        return (1 << self.bit_depth) - 2

    def frame_key(self, index: int) -> int:
        if index < 0:
            raise IndexError(f"frame index {index} is negative; series frames count from 0")
        return index % self.distinct_frames if self.distinct_frames else index

    def truth(self, index: int) -> FrameTruth:
        is_hit, peaks = self._scene_truth(self.frame_key(index))
        return FrameTruth(index=index, is_hit=is_hit, peaks=peaks)

    def pixels(self, index: int) -> NDArray[np.unsignedinteger]:
        """A new (H, W) array of frame ``index``; callers may modify it."""
        key = self.frame_key(index)
        frame = self._background.realisation(self._background.slot_for(key)).astype(self.dtype)
        _, peaks = self._scene_truth(key)
        if peaks:
            self._render_peaks(frame, peaks, np.random.default_rng([self.seed, key, _NOISE_STREAM]))
        frame[self._hot_rows, self._hot_cols] = min(HOT_PIXEL_COUNTS, self.saturation_value)
        frame[self._unmasked_dead_rows, self._unmasked_dead_cols] = 0
        fill = self.masked_value
        for band in self.geometry.gap_row_bands():
            frame[band, :] = fill
        for band in self.geometry.gap_col_bands():
            frame[:, band] = fill
        frame[self._dead_rows, self._dead_cols] = fill
        return frame

    def describe(self) -> Mapping[str, Any]:
        return {
            "source": "sfx",
            "difficulty": self.difficulty.name,
            "model": self.geometry.model.value,
            "seed": self.seed,
            "hit_fraction": self.hit_fraction,
            "peaks_per_hit": list(self.peaks_per_hit),
            "distinct_frames": self.distinct_frames,
            "beam_center": list(self.beam_center),
        }

    def write_truth(self, path: str | Path, n_frames: int) -> Path:
        """JSON sidecar with the truth of frames 0 … n_frames-1 (see ``write_truth_sidecar``)."""
        return write_truth_sidecar(path, self, n_frames)

    def _scene_truth(self, key: int) -> tuple[bool, tuple[Peak, ...]]:
        rng = np.random.default_rng([self.seed, key, _TRUTH_STREAM])
        if not rng.random() < self.hit_fraction:
            return False, ()
        wanted = int(rng.integers(self.peaks_per_hit[0], self.peaks_per_hit[1] + 1))
        return True, self._place_peaks(rng, wanted)

    def _place_peaks(self, rng: np.random.Generator, wanted: int) -> tuple[Peak, ...]:
        """Rejection-sample peak centres inside modules, away from dead pixels, the shadow and each other."""
        scene = self.difficulty
        origins = list(self.geometry.module_origins())
        min_sep2 = scene.min_separation_px**2
        log_lo, log_hi = (math.log(v) for v in (scene.peak_snr or PEAK_INTENSITY_RANGE))
        shadow = shadow_rows(self.beam_center[1], self.shape[0]) if scene.shadow else None
        background = self.mean_background()
        peaks: list[Peak] = []
        for _ in range(50 * wanted):
            if len(peaks) == wanted:
                break
            row0, col0 = origins[int(rng.integers(len(origins)))]
            x = col0 + rng.uniform(PEAK_MARGIN_PX, MODULE_COLS - 1 - PEAK_MARGIN_PX)
            y = row0 + rng.uniform(PEAK_MARGIN_PX, MODULE_ROWS - 1 - PEAK_MARGIN_PX)
            if any((x - p.x) ** 2 + (y - p.y) ** 2 < min_sep2 for p in peaks):
                continue
            near_rows = np.abs(self._dead_rows - y) <= PEAK_MARGIN_PX
            if (near_rows & (np.abs(self._dead_cols - x) <= PEAK_MARGIN_PX)).any():
                continue
            if shadow is not None and shadow.start - PEAK_MARGIN_PX <= y < shadow.stop + PEAK_MARGIN_PX \
                    and x >= self.beam_center[0] - PEAK_MARGIN_PX:
                continue
            drawn = math.exp(rng.uniform(log_lo, log_hi))  # the intensity (easy) or the true SNR
            sigma = rng.uniform(*PEAK_SIGMA_RANGE_PX)
            saturated = bool(scene.saturated_fraction and rng.random() < scene.saturated_fraction)
            b = float(background[int(round(y)), int(round(x))])
            intensity = peak_intensity_for_snr(drawn, b, sigma) if scene.peak_snr else drawn
            if saturated:  # bright enough that its core, not one odd pixel, stands at the cut-off
                intensity = SATURATED_PEAK_OVERFLOW * self.saturation_value * 2.0 * math.pi * sigma * sigma
            peaks.append(Peak(x=float(x), y=float(y), intensity=float(intensity), sigma_px=float(sigma),
                              snr=true_snr(intensity, b, sigma), saturated=saturated))
        return tuple(peaks)

    def _render_peaks(
        self, frame: NDArray[np.unsignedinteger], peaks: tuple[Peak, ...], rng: np.random.Generator
    ) -> None:
        """Add Poisson-sampled Gaussian spots; the Gaussian is normalised over its window, so the
        expected sum of the added counts equals ``Peak.intensity`` (less what the count-rate cut-off clips: a
        saturated peak's core stands at the cut-off, as on a real detector)."""
        radius = PEAK_WINDOW_RADIUS_PX
        offsets = np.arange(-radius, radius + 1, dtype=np.float64)
        saturation = self.saturation_value
        for peak in peaks:
            row, col = int(round(peak.y)), int(round(peak.x))
            gy = np.exp(-0.5 * ((row + offsets - peak.y) / peak.sigma_px) ** 2)
            gx = np.exp(-0.5 * ((col + offsets - peak.x) / peak.sigma_px) ** 2)
            profile = np.outer(gy, gx)
            counts = rng.poisson(profile * (peak.intensity / profile.sum()))
            window = (slice(row - radius, row + radius + 1), slice(col - radius, col + radius + 1))
            total = frame[window].astype(np.int64) + counts
            frame[window] = np.minimum(total, saturation)

"""What the simulated AGIPD sees in each train: ids, lit cells, hits and Bragg peaks (the ground truth).

Train ``index`` depends only on (seed, scene settings, index), never on which thread or client asked, so
``AgipdSimulator.truth`` describes what any receiver got. Frames are identified by cellId and pulseId
(EuXFEL AGIPD documentation); here memory cells are used from cell 1 (as many EuXFEL runs skip cell 0) and pulses are 4
bunch slots apart (1.1 MHz), so position in the train, cellId and pulseId all differ and a receiver that
confuses them is caught.

Lit pattern: frame positions ``k`` with ``lit_pattern[k % len(lit_pattern)]`` False see no pulse (dark
frames: offsets and noise only). The default leaves the first frame and every 8th after it dark.
A lit frame is a hit with probability ``hit_fraction``; a hit has ``peaks_per_hit`` (inclusive) Gaussian
Bragg peaks, each inside one 64 × 128 ASIC, ≥ 5 px from its edges, from bad and defect pixels and from the
beamstop-holder shadow, ≥ ``min_separation_px`` from other peaks of its module (``agipd_difficulty``: 10 px in
``easy``). A peak's expected integrated intensity is log-uniform in ``PEAK_INTENSITY_RANGE`` photons, or, when the
difficulty gives ``peak_snr``, its true SNR is log-uniform in that range and the intensity follows from the mean
background under it (``sfx_difficulty.peak_intensity_for_snr``). Every peak's truth carries its true SNR.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .agipd_difficulty import PRESETS, in_shadow, mean_background
from .agipd_layout import ASIC_SS, ASICS_PER_MODULE, MEMORY_CELLS, MODULE_FS, MODULE_SS, MODULES, pixel_positions
from .sfx_difficulty import SfxDifficulty, peak_intensity_for_snr, true_snr

DEFAULT_LIT_PATTERN: tuple[bool, ...] = (False,) + (True,) * 7
PEAK_INTENSITY_RANGE = (50.0, 2000.0)
PEAK_SIGMA_RANGE_PX = (0.8, 1.2)
PEAK_WINDOW_RADIUS_PX = 4  # > 3.3 σ: the flux outside the window is below 1e-3 of the peak
PEAK_MARGIN_PX = PEAK_WINDOW_RADIUS_PX + 1
PULSE_SPACING = 4
_SCENE_STREAM = 0x5CE
_PEAK_COUNTS_STREAM = 0xC0A
_RECENT_TRAINS = 4


@dataclass(frozen=True, slots=True)
class AgipdPeak:
    """One Bragg peak. ``ss``/``fs`` are module pixel-index coordinates (0.0 is the centre of the first
    row/column of the module); ``intensity`` is the expected integrated photons, ``photons`` the
    Poisson-drawn total actually added to the frame, ``snr`` the true SNR ``I / sqrt(I + b·4πσ²)`` against the
    mean background ``b`` at the peak (``sfx_difficulty.true_snr``)."""

    frame: int  # position in the train (0 … cells-1)
    module: int
    ss: float
    fs: float
    intensity: float
    sigma_px: float
    photons: int
    snr: float


@dataclass(frozen=True, slots=True, eq=False)
class AgipdTrainTruth:
    """The truth of train ``index``; arrays have one entry per frame and are read-only."""

    index: int
    train_id: int
    cell_ids: NDArray[np.uint16]
    pulse_ids: NDArray[np.uint64]
    lit: NDArray[np.bool_]
    hits: NDArray[np.bool_]
    peaks: tuple[AgipdPeak, ...]
    modules_present: tuple[bool, ...]

    def peaks_in(self, frame: int) -> tuple[AgipdPeak, ...]:
        return tuple(p for p in self.peaks if p.frame == frame)


@dataclass(frozen=True, slots=True, eq=False)
class PeakPixels:
    """Photons the peaks of one frame add: ``counts[k]`` at flat index ``pixels[k]`` of (16, 512, 128)."""

    pixels: NDArray[np.intp]
    counts: NDArray[np.int64]


class AgipdScene:
    """Deterministic per-train truth; thread-safe (the sender thread and a test may ask at once).

    ``bad_pixels`` (module, ss, fs per row) are the pixels peaks keep clear of: the masked ones and the defects.
    """

    def __init__(
        self,
        *,
        seed: int,
        cells: int,
        first_train_id: int,
        hit_fraction: float,
        peaks_per_hit: tuple[int, int],
        lit_pattern: Sequence[bool],
        missing_modules: Mapping[int, set[int]],
        bad_pixels: NDArray[np.intp],
        difficulty: SfxDifficulty = PRESETS["easy"],
    ) -> None:
        self.seed = seed
        self.difficulty = difficulty
        self._mean_background = mean_background(difficulty)
        self.cells = cells
        self.first_train_id = first_train_id
        self.hit_fraction = hit_fraction
        self.peaks_per_hit = peaks_per_hit
        self.lit_pattern = tuple(bool(v) for v in lit_pattern)
        self.missing_modules = {int(k): frozenset(v) for k, v in missing_modules.items()}
        self._bad_pixels = bad_pixels
        positions = np.arange(cells)
        self.cell_ids = ((positions + 1) % MEMORY_CELLS).astype(np.uint16)
        self.pulse_ids = (positions * PULSE_SPACING).astype(np.uint64)
        self.lit = np.array([self.lit_pattern[k % len(self.lit_pattern)] for k in positions], dtype=bool)
        for array in (self.cell_ids, self.pulse_ids, self.lit):
            array.flags.writeable = False
        self._recent: OrderedDict[int, tuple[AgipdTrainTruth, dict[int, PeakPixels]]] = OrderedDict()
        self._lock = threading.Lock()

    def train_id(self, index: int) -> int:
        return self.first_train_id + index

    def modules_present(self, index: int) -> tuple[bool, ...]:
        missing = self.missing_modules.get(index, frozenset())
        return tuple(m not in missing for m in range(MODULES))

    def train(self, index: int) -> AgipdTrainTruth:
        return self._drawn(index)[0]

    def peak_pixels(self, index: int) -> dict[int, PeakPixels]:
        """Per hit frame, the photons its peaks add (overlapping windows summed)."""
        return self._drawn(index)[1]

    def _drawn(self, index: int) -> tuple[AgipdTrainTruth, dict[int, PeakPixels]]:
        """Both views of train ``index``, kept for the last few trains: the sender and a test often ask
        for the same train, and drawing one takes a few ms of Python."""
        if index < 0:
            raise IndexError(f"train index {index} is negative; trains count from 0")
        with self._lock:
            if index in self._recent:
                return self._recent[index]
        drawn = self._draw(index)
        with self._lock:
            self._recent[index] = drawn
            while len(self._recent) > _RECENT_TRAINS:
                self._recent.popitem(last=False)
        return drawn

    def _draw(self, index: int) -> tuple[AgipdTrainTruth, dict[int, PeakPixels]]:
        rng = np.random.default_rng([self.seed, _SCENE_STREAM, index])
        hits = self.lit & (rng.random(self.cells) < self.hit_fraction)
        hits.flags.writeable = False
        peaks: list[AgipdPeak] = []
        pixels: dict[int, PeakPixels] = {}
        for frame in (int(f) for f in np.flatnonzero(hits)):
            wanted = int(rng.integers(self.peaks_per_hit[0], self.peaks_per_hit[1] + 1))
            placed = self._place_peaks(rng, wanted)
            if placed.module.size == 0:
                continue
            counts_rng = np.random.default_rng([self.seed, _PEAK_COUNTS_STREAM, index, frame])
            window, counts = _render(placed, counts_rng)
            totals = counts.sum(axis=(1, 2))
            peaks.extend(
                AgipdPeak(frame, int(m), float(ss), float(fs), float(i), float(sg), int(n), float(snr))
                for m, ss, fs, i, sg, n, snr in zip(
                    placed.module, placed.ss, placed.fs, placed.intensity, placed.sigma_px, totals, placed.snr,
                    strict=True,
                )
            )
            flat, inverse = np.unique(window.ravel(), return_inverse=True)
            summed = np.bincount(inverse, weights=counts.ravel())  # windows may overlap by a pixel or two
            pixels[frame] = PeakPixels(pixels=flat, counts=np.rint(summed).astype(np.int64))
        truth = AgipdTrainTruth(
            index=index,
            train_id=self.train_id(index),
            cell_ids=self.cell_ids,
            pulse_ids=self.pulse_ids,
            lit=self.lit,
            hits=hits,
            peaks=tuple(peaks),
            modules_present=self.modules_present(index),
        )
        return truth, pixels

    def _place_peaks(self, rng: np.random.Generator, wanted: int) -> _PeakSet:
        """Rejection-sample centres inside ASICs, away from ASIC edges, bad pixels, the shadow and each other.

        Candidates are drawn in one batch (4 × wanted + 16 of them, plenty at these densities: 60
        peaks cover < 1 % of the detector) and accepted in order, so the result is deterministic.
        """
        scene = self.difficulty
        n = 4 * wanted + 16
        module = rng.integers(MODULES, size=n)
        ss = rng.integers(ASICS_PER_MODULE, size=n) * ASIC_SS + rng.uniform(
            PEAK_MARGIN_PX, ASIC_SS - 1 - PEAK_MARGIN_PX, n
        )
        fs = rng.uniform(PEAK_MARGIN_PX, MODULE_FS - 1 - PEAK_MARGIN_PX, n)
        low, high = scene.peak_snr or PEAK_INTENSITY_RANGE
        drawn = np.exp(rng.uniform(math.log(low), math.log(high), n))  # the intensity (easy) or the true SNR
        sigma = rng.uniform(*PEAK_SIGMA_RANGE_PX, n)
        bad = self._bad_pixels
        rejected = (
            (bad[None, :, 0] == module[:, None])
            & (np.abs(bad[None, :, 1] - ss[:, None]) <= PEAK_MARGIN_PX)
            & (np.abs(bad[None, :, 2] - fs[:, None]) <= PEAK_MARGIN_PX)
        ).any(axis=1)
        pixel = (module, np.rint(ss).astype(np.intp), np.rint(fs).astype(np.intp))
        if scene.shadow:
            x, y = pixel_positions()
            rejected |= in_shadow(x[pixel], y[pixel], margin_px=PEAK_MARGIN_PX)
        accepted: list[int] = []
        min_sep2 = scene.min_separation_px**2
        for k in np.flatnonzero(~rejected):
            if len(accepted) == wanted:
                break
            if all(
                module[j] != module[k] or (ss[j] - ss[k]) ** 2 + (fs[j] - fs[k]) ** 2 >= min_sep2 for j in accepted
            ):
                accepted.append(int(k))
        keep = np.asarray(accepted, dtype=np.intp)
        background, sigma = self._mean_background[tuple(axis[keep] for axis in pixel)], sigma[keep]
        intensity = drawn[keep]
        if scene.peak_snr:
            intensity = np.array([peak_intensity_for_snr(*v) for v in zip(intensity, background, sigma, strict=True)])
        snr = [true_snr(*v) for v in zip(intensity, background, sigma, strict=True)]
        return _PeakSet(module[keep], ss[keep], fs[keep], intensity, sigma, snr)


@dataclass(frozen=True, slots=True, eq=False)
class _PeakSet:
    """The peaks of one frame as parallel arrays."""

    module: NDArray[np.int64]
    ss: NDArray[np.float64]
    fs: NDArray[np.float64]
    intensity: NDArray[np.float64]
    sigma_px: NDArray[np.float64]
    snr: list[float]


def _render(peaks: _PeakSet, rng: np.random.Generator) -> tuple[NDArray[np.intp], NDArray[np.int64]]:
    """Flat indices into (16, 512, 128) and Poisson counts of each peak's (2r+1)² window around its
    nearest pixel, both (n, 2r+1, 2r+1). The Gaussian is normalised over the window, so the expected
    total of a peak equals its intensity."""
    offsets = np.arange(-PEAK_WINDOW_RADIUS_PX, PEAK_WINDOW_RADIUS_PX + 1)
    rows = np.rint(peaks.ss).astype(np.intp)[:, None] + offsets
    cols = np.rint(peaks.fs).astype(np.intp)[:, None] + offsets
    sigma = peaks.sigma_px[:, None]
    gy = np.exp(-0.5 * ((rows - peaks.ss[:, None]) / sigma) ** 2)
    gx = np.exp(-0.5 * ((cols - peaks.fs[:, None]) / sigma) ** 2)
    profile = gy[:, :, None] * gx[:, None, :]
    expected = profile * (peaks.intensity / profile.sum(axis=(1, 2)))[:, None, None]
    counts = rng.poisson(expected).astype(np.int64)
    window = np.ravel_multi_index(
        (peaks.module[:, None, None], rows[:, :, None], cols[:, None, :]), (MODULES, MODULE_SS, MODULE_FS)
    )
    return window, counts

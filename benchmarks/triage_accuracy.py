"""Triage accuracy against the simulators' ground truth, per difficulty preset and mode (``accuracy.*`` keys).

Hits: recall and precision of the hit decision. Peaks: recall within 1 px per band of true SNR (3–5, 5–10,
≥ 10; ``I / sqrt(I + b·4πσ²)``, docs/simulators.md) and precision, the share of reported peaks within 1 px of
a true one (every peak reported on a blank frame is a false one). Frames are triaged by both modes in the same
loop, so fast and full see the same pixels. Default ``TriageParams``. EIGER2 4M frames and AGIPD-1M corrected cells
(stacked (8192, 128) coordinates) come at each of their simulator's difficulty presets with 30 % hits.
``tests/pipeline/triage/test_accuracy.py`` holds the goals on the same scores.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from detpipe.pipeline.core.peak_list import FrameTriage
from detpipe.pipeline.core.triage_params import TriageParams
from detpipe.pipeline.triage.detector_geometry import agipd_triage_geometry, eiger_triage_geometry
from detpipe.pipeline.triage.geometry import TriageGeometry
from detpipe.pipeline.triage.hit_finder import HitFinder
from detpipe.simulators import AgipdSimulator, DetectorModel, SfxFrames
from detpipe.simulators.agipd_difficulty import PRESETS as AGIPD_PRESETS
from detpipe.simulators.sfx_difficulty import PRESETS, preset

from .bench_size import FULL, BenchSize

MODES = ("fast", "full")
MATCH_PX = 1.0
SNR_BANDS = (("snr_3_5", 3.0, 5.0), ("snr_5_10", 5.0, 10.0), ("snr_10", 10.0, math.inf))
METRICS = ("hit_recall", "hit_precision", *(f"peak_recall_{band}" for band, _, _ in SNR_BANDS), "peak_precision")
KEYS = (*(f"accuracy.eiger4m.{name}.{mode}.{metric}" for name in PRESETS for mode in MODES for metric in METRICS),
        *(f"accuracy.eiger4m.{name}.peaks_{band}" for name in PRESETS for band, _, _ in SNR_BANDS),
        *(f"accuracy.agipd1m.{name}.{mode}.{metric}" for name in AGIPD_PRESETS for mode in MODES for metric in METRICS),
        *(f"accuracy.agipd1m.{name}.peaks_{band}" for name in AGIPD_PRESETS for band, _, _ in SNR_BANDS))
HIT_FRACTION = 0.3
SEED = 2024
AGIPD_CELLS = 64

TruePeak = tuple[float, float, float]
"""(fs, ss, true SNR) of one simulated peak, in the triaged image's coordinates."""


@dataclass
class AccuracyScore:
    """Tallies of one mode over a series of frames; ``errors_px`` are the distances of the found peaks of
    SNR ≥ 10 from their truth."""

    true_hits: int = 0
    found_hits: int = 0
    false_hits: int = 0
    blank_frames: int = 0
    blank_peaks: int = 0
    reported_peaks: int = 0
    matched_peaks: int = 0
    band_true: dict[str, int] = field(default_factory=lambda: dict.fromkeys((b for b, _, _ in SNR_BANDS), 0))
    band_found: dict[str, int] = field(default_factory=lambda: dict.fromkeys((b for b, _, _ in SNR_BANDS), 0))
    errors_px: list[float] = field(default_factory=list, repr=False)

    def add(self, result: FrameTriage, is_hit: bool, peaks: Sequence[TruePeak]) -> None:
        if is_hit:
            self.true_hits += 1
            self.found_hits += result.is_hit
        else:
            self.false_hits += result.is_hit
            self.blank_frames += not peaks
            self.blank_peaks += result.n_peaks if not peaks else 0
        found = np.column_stack([result.peaks.fs, result.peaks.ss]).astype(np.float64)
        true = np.array([(fs, ss) for fs, ss, _ in peaks], np.float64).reshape(-1, 2)
        self.reported_peaks += len(found)
        if len(found) and len(true):
            distance = np.hypot(found[:, None, 0] - true[None, :, 0], found[:, None, 1] - true[None, :, 1])
            self.matched_peaks += int((distance.min(axis=1) <= MATCH_PX).sum())
            nearest = distance.min(axis=0)
        else:
            nearest = np.full(len(true), np.inf)
        for (_, _, snr), error in zip(peaks, nearest, strict=True):
            for band, low, high in SNR_BANDS:
                if low <= snr < high:
                    self.band_true[band] += 1
                    self.band_found[band] += int(error <= MATCH_PX)
            if snr >= 10.0 and error <= MATCH_PX:
                self.errors_px.append(float(error))

    def metrics(self) -> dict[str, float]:
        """Each ratio; 1.0 where nothing was there to find (no hit, no peak in a band, nothing reported: the
        ``peaks_<band>`` keys say how many true peaks each band held)."""
        def ratio(part: int, whole: int) -> float:
            return part / whole if whole else 1.0
        return {
            "hit_recall": ratio(self.found_hits, self.true_hits),
            "hit_precision": ratio(self.found_hits, self.found_hits + self.false_hits),
            **{f"peak_recall_{band}": ratio(self.band_found[band], self.band_true[band]) for band, _, _ in SNR_BANDS},
            "peak_precision": ratio(self.matched_peaks, self.reported_peaks),
        }


def finders(geometry: TriageGeometry, params: TriageParams) -> dict[str, HitFinder]:
    found = {mode: HitFinder(geometry, dataclasses.replace(params, fast_mode=mode == "fast")) for mode in MODES}
    for hit_finder in found.values():
        hit_finder.warm_up()
    return found


def score_eiger(difficulty: str, frames: int, *, seed: int = SEED, hit_fraction: float = HIT_FRACTION,
                params: TriageParams | None = None) -> dict[str, AccuracyScore]:
    """Both modes' scores over ``frames`` EIGER2 4M frames of the preset."""
    params = params or TriageParams()
    sfx = SfxFrames(DetectorModel.EIGER2_4M, seed=seed, hit_fraction=hit_fraction, difficulty=preset(difficulty))
    geometry = eiger_triage_geometry(
        sfx.shape, beam_center_x_px=sfx.beam_center[0], beam_center_y_px=sfx.beam_center[1],
        pixel_mask=sfx.pixel_mask, params=params,
    )
    hit_finders = finders(geometry, params)
    scores = {mode: AccuracyScore() for mode in MODES}
    for index in range(frames):
        pixels = sfx.pixels(index)
        image, frame_mask = pixels.astype(np.float32), (pixels != sfx.masked_value).astype(np.uint8)
        truth = sfx.truth(index)
        peaks = [(p.x, p.y, p.snr) for p in truth.peaks]
        for mode, hit_finder in hit_finders.items():
            scores[mode].add(hit_finder.triage(image, frame_mask), bool(truth.is_hit), peaks)
    return scores


def score_agipd(difficulty: str, trains: int, *, seed: int = 7, hit_fraction: float = HIT_FRACTION,
                params: TriageParams | None = None) -> dict[str, AccuracyScore]:
    """Both modes' scores over ``trains`` corrected AGIPD-1M trains of the preset, 64 cells each (every 8th dark)."""
    params = params or TriageParams()
    hit_finders = finders(agipd_triage_geometry(params=params), params)
    scores = {mode: AccuracyScore() for mode in MODES}
    simulator = AgipdSimulator(product="corrected", cells=AGIPD_CELLS, seed=seed, paced=False,
                               hit_fraction=hit_fraction, peaks_per_hit=(15, 60), difficulty=difficulty)
    try:  # trains are built on demand; the bridge is never started
        for train_index in range(trains):
            train, truth = simulator.train(train_index), simulator.truth.train(train_index)
            for cell in range(train.data.shape[0]):
                peaks = [(p.fs, p.module * 512 + p.ss, p.snr) for p in truth.peaks_in(cell)]
                for mode, hit_finder in hit_finders.items():
                    scores[mode].add(hit_finder.triage_agipd(train.data[cell], train.mask[cell]),
                                     bool(truth.hits[cell]), peaks)
    finally:
        simulator.stop()
    return scores


def bench_accuracy(size: BenchSize = FULL) -> dict[str, float]:
    results: dict[str, float] = {}
    for name in PRESETS:
        results.update(_keys(f"accuracy.eiger4m.{name}", score_eiger(name, size.accuracy_frames)))
    for name in AGIPD_PRESETS:
        results.update(_keys(f"accuracy.agipd1m.{name}", score_agipd(name, size.accuracy_trains)))
    return results


def _keys(prefix: str, scores: dict[str, AccuracyScore]) -> dict[str, float]:
    """``<prefix>.<mode>.<metric>`` for each mode, and ``<prefix>.peaks_<band>``: the true peaks per SNR band."""
    keys = {f"{prefix}.{mode}.{metric}": value for mode, score in scores.items()
            for metric, value in score.metrics().items()}
    keys.update({f"{prefix}.peaks_{band}": float(count) for band, count in scores["full"].band_true.items()})
    return keys

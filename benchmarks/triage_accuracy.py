"""Triage accuracy against the simulator's ground truth, per difficulty preset and mode (``accuracy.*`` keys).

Hits: recall and precision of the hit decision. Peaks: recall within 1 px per band of true SNR (3–5, 5–10,
≥ 10; the truth's ``snr``, docs/simulators.md) and precision, the share of reported peaks within 1 px of a true
one (every peak reported on a blank frame is a false one). Frames are triaged by both modes in the same loop,
so fast and full see the same pixels. Default ``TriageParams``; 30 % hits so recall is measured on enough hits.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from detpipe.pipeline.core.peak_list import FrameTriage
from detpipe.pipeline.core.triage_params import TriageParams
from detpipe.pipeline.triage.detector_geometry import eiger_triage_geometry
from detpipe.pipeline.triage.hit_finder import HitFinder
from detpipe.simulators import DetectorModel, SfxFrames
from detpipe.simulators.frame_source import FrameTruth
from detpipe.simulators.sfx_difficulty import PRESETS, preset

from .bench_size import FULL, BenchSize

MODES = ("fast", "full")
MATCH_PX = 1.0
SNR_BANDS = (("snr_3_5", 3.0, 5.0), ("snr_5_10", 5.0, 10.0), ("snr_10", 10.0, math.inf))
METRICS = ("hit_recall", "hit_precision", *(f"peak_recall_{band}" for band, _, _ in SNR_BANDS), "peak_precision")
KEYS = (*(f"accuracy.eiger4m.{name}.{mode}.{metric}" for name in PRESETS for mode in MODES for metric in METRICS),
        *(f"accuracy.eiger4m.{name}.peaks_{band}" for name in PRESETS for band, _, _ in SNR_BANDS))
HIT_FRACTION = 0.3
SEED = 2024


@dataclass
class AccuracyScore:
    """Tallies of one mode over a series of frames."""

    true_hits: int = 0
    found_hits: int = 0
    false_hits: int = 0
    reported_peaks: int = 0
    matched_peaks: int = 0
    band_true: dict[str, int] = field(default_factory=lambda: dict.fromkeys((b for b, _, _ in SNR_BANDS), 0))
    band_found: dict[str, int] = field(default_factory=lambda: dict.fromkeys((b for b, _, _ in SNR_BANDS), 0))

    def add(self, result: FrameTriage, truth: FrameTruth) -> None:
        if truth.is_hit:
            self.true_hits += 1
            self.found_hits += result.is_hit
        else:
            self.false_hits += result.is_hit
        found = np.column_stack([result.peaks.fs, result.peaks.ss]).astype(np.float64)
        true = np.array([(p.x, p.y) for p in truth.peaks], np.float64).reshape(-1, 2)
        self.reported_peaks += len(found)
        if len(found) and len(true):
            distance = np.hypot(found[:, None, 0] - true[None, :, 0], found[:, None, 1] - true[None, :, 1])
            self.matched_peaks += int((distance.min(axis=1) <= MATCH_PX).sum())
            recovered = distance.min(axis=0) <= MATCH_PX
        else:
            recovered = np.zeros(len(true), bool)
        for peak, hit in zip(truth.peaks, recovered, strict=True):
            for band, low, high in SNR_BANDS:
                if low <= peak.snr < high:
                    self.band_true[band] += 1
                    self.band_found[band] += int(hit)

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


def score_eiger(difficulty: str, frames: int, params: TriageParams | None = None) -> dict[str, AccuracyScore]:
    """Both modes' scores over ``frames`` EIGER2 4M frames of the preset."""
    params = params or TriageParams()
    sfx = SfxFrames(DetectorModel.EIGER2_4M, seed=SEED, hit_fraction=HIT_FRACTION, difficulty=preset(difficulty))
    geometry = eiger_triage_geometry(
        sfx.shape, beam_center_x_px=sfx.beam_center[0], beam_center_y_px=sfx.beam_center[1],
        pixel_mask=sfx.pixel_mask, params=params,
    )
    finders = {mode: HitFinder(geometry, dataclasses.replace(params, fast_mode=mode == "fast")) for mode in MODES}
    scores = {mode: AccuracyScore() for mode in MODES}
    for index in range(frames):
        pixels = sfx.pixels(index)
        image, frame_mask = pixels.astype(np.float32), (pixels != sfx.masked_value).astype(np.uint8)
        truth = sfx.truth(index)
        for mode, finder in finders.items():
            scores[mode].add(finder.triage(image, frame_mask), truth)
    return scores


def bench_accuracy(size: BenchSize = FULL) -> dict[str, float]:
    results: dict[str, float] = {}
    for name in PRESETS:
        scores = score_eiger(name, size.accuracy_frames)
        for mode, score in scores.items():
            results.update({f"accuracy.eiger4m.{name}.{mode}.{metric}": value
                            for metric, value in score.metrics().items()})
        results.update({f"accuracy.eiger4m.{name}.peaks_{band}": float(count)
                        for band, count in scores["full"].band_true.items()})
    return results

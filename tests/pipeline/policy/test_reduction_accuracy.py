"""What lossy reduction costs the science, against the AGIPD simulator's ground truth.

Peak error follows the spec's measurement: the change of a 5 × 5 box sum minus a ring background around each
true peak, divided by the peak's Poisson σ = sqrt(I). Corrected AGIPD frames are float photons with
electronic noise, so rounding to 0.5 photon really changes them.
"""

from __future__ import annotations

import numpy as np
import pytest

from detpipe.pipeline.policy.precision_rounding import RoundingError, round_precision
from detpipe.simulators import AgipdSimulator

TRAINS, CELLS = 2, 32


def box_minus_ring(module_image: np.ndarray, ss: float, fs: float) -> float:
    """5 × 5 sum around (ss, fs) minus 25 × the mean of the 9 × 9 ring outside it; NaN near module edges."""
    row, col = int(round(ss)), int(round(fs))
    if not (4 <= row < module_image.shape[0] - 4 and 4 <= col < module_image.shape[1] - 4):
        return float("nan")
    outer = module_image[row - 4:row + 5, col - 4:col + 5].astype(np.float64)
    inner = outer[2:7, 2:7]
    ring_mean = (outer.sum() - inner.sum()) / (81 - 25)
    return float(inner.sum() - 25 * ring_mean)


@pytest.fixture(scope="module")
def peak_errors() -> tuple[np.ndarray, RoundingError]:
    simulator = AgipdSimulator(product="corrected", cells=CELLS, seed=11, paced=False, hit_fraction=0.3)
    errors, rounding = [], RoundingError()
    try:
        for k in range(TRAINS):
            train, truth = simulator.train(k), simulator.truth.train(k)
            for frame in np.flatnonzero(truth.hits):
                photons = np.ascontiguousarray(train.data[frame])
                rounded = round_precision(photons, mantissa_bits=23, step_exponent=-1)
                rounding.add(photons, rounded)
                for peak in truth.peaks_in(int(frame)):
                    raw = box_minus_ring(photons[peak.module], peak.ss, peak.fs)
                    red = box_minus_ring(rounded[peak.module], peak.ss, peak.fs)
                    if np.isfinite(raw):
                        errors.append((red - raw) / np.sqrt(max(raw, 1.0)))
    finally:
        simulator.stop()
    return np.asarray(errors), rounding


def test_half_photon_rounding_keeps_peak_intensities_within_005_sigma_rms(peak_errors):
    errors, _ = peak_errors
    assert errors.size >= 100
    rms = float(np.sqrt(np.mean(errors**2)))
    assert 0 < rms <= 0.05, f"RMS peak error {rms:.4f} sigma over {errors.size} peaks"


def test_half_photon_rounding_error_is_bounded_by_half_a_step(peak_errors):
    """Mostly-empty pixels (0.1 photon background, 0.05 noise) round to 0, so the RMS stays below the uniform
    quantisation error step/sqrt(12) of well-filled pixels, and no pixel moves more than half a step."""
    _, rounding = peak_errors
    assert 0 < rounding.rms_photons <= 0.5 / np.sqrt(12)
    assert rounding.max_abs_photons <= 0.25

"""The simulated detector's physics: correction with the written constants gives back the truth photons,
the lit pattern and hit fraction hold, peaks sit where the spec says, and a seed fixes everything."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from detpipe.simulators import AgipdSimulator, AgipdTrainArrays
from detpipe.simulators.agipd_constants import MASK_BAD_PIXEL, NOISE_ADU, NOISE_CLIP_SIGMA

# A pixel's error is its clipped analog noise plus the rounding to whole ADU, times the stage's gain.
ERROR_ADU = NOISE_CLIP_SIGMA * NOISE_ADU + 0.5 + 1e-3


class Corrector:
    """docs/agipd_constants.md restated with numpy: one raw frame (16, 2, 512, 128) to photons."""

    def __init__(self, constants_file: Path) -> None:
        with h5py.File(constants_file, "r") as f:
            self.offset_pixel, self.offset_cell = f["offset_pixel"][()], f["offset_cell"][()]
            self.relgain, self.threshold, self.cell_ids = f["relgain"][()], f["threshold"][()], f["cell_ids"][()]

    def frame(self, raw: np.ndarray, cell_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(photons, stage, relgain of that stage) per pixel, each (16, 512, 128)."""
        row = int(np.flatnonzero(self.cell_ids == cell_id)[0])
        analog, digital = raw[:, 0], raw[:, 1]
        stage = (digital > self.threshold[:, 0]).astype(np.uint8) + (digital > self.threshold[:, 1])
        by_stage = [stage == s for s in range(3)]
        offset = np.select(by_stage, list(self.offset_pixel.transpose(1, 0, 2, 3)))
        offset += self.offset_cell[np.arange(16)[:, None, None], row, stage]
        gain = np.select(by_stage, list(self.relgain.transpose(1, 0, 2, 3)))
        return (analog - offset) * gain, stage, gain

    def stages_of_a_faithful_train(self, train: AgipdTrainArrays, expected: np.ndarray) -> set[int]:
        """The gain stages a raw train uses, after checking that every pixel corrects to ``expected`` (cells, 16,
        512, 128) within its stage's noise, and exactly in high gain, which resolves single photons."""
        stages_seen: set[int] = set()
        for frame, cell_id in enumerate(train.cell_ids):
            photons, stage, gain = self.frame(train.data[frame], int(cell_id))
            error = np.abs(photons - expected[frame])
            assert (error <= ERROR_ADU * gain).all(), f"frame {frame}: worst error {error.max()} photons"
            high = stage == 0
            assert (np.rint(photons[high]) == expected[frame][high]).all()
            stages_seen.update(np.unique(stage).tolist())
        return stages_seen


def test_correcting_raw_with_the_written_constants_gives_back_the_truth_photons(tmp_path: Path) -> None:
    """The one 64-cell test: every stage is reached and every pixel lands within its stage's noise."""
    with AgipdSimulator(product="raw", cells=64, seed=5, hit_fraction=0.5) as sim:
        constants = sim.write_constants(tmp_path / "agipd_constants.h5")
        train = sim.train(0)
        truth = sim.truth.photons(0)
    assert Corrector(constants).stages_of_a_faithful_train(train, truth) == {0, 1, 2}


def test_the_constants_file_has_the_documented_shapes(tmp_path: Path) -> None:
    with AgipdSimulator(cells=1, seed=5) as sim:
        path = sim.write_constants(tmp_path / "c.h5")
    with h5py.File(path, "r") as f:
        shapes = {name: (f[name].dtype, f[name].shape) for name in f}
    assert shapes == {
        "offset_pixel": (np.float32, (16, 3, 512, 128)),
        "offset_cell": (np.float32, (16, 352, 3)),
        "relgain": (np.float32, (16, 3, 512, 128)),
        "threshold": (np.float32, (16, 2, 512, 128)),
        "cell_ids": (np.uint16, (352,)),
    }


def test_corrected_data_are_the_truth_photons_with_gain_stage_and_bad_pixels_masked() -> None:
    with AgipdSimulator(product="corrected", cells=8, seed=5, hit_fraction=1.0) as sim:
        train = sim.train(0)
        truth = sim.truth.photons(0)
        relgain = sim.constants.relgain
    masked = train.mask != 0
    assert masked.any() and (train.mask[masked] == MASK_BAD_PIXEL).all()
    assert (train.data[masked] == 0).all()
    expected_stage = (truth >= 150).astype(np.uint8) + (truth >= 300)
    np.testing.assert_array_equal(train.gain, expected_stage)
    assert train.gain.max() >= 1
    per_frame = np.broadcast_to(relgain, (8, *relgain.shape))
    stage_gain = np.take_along_axis(per_frame, expected_stage[:, :, None], 2)[:, :, 0]
    error = np.abs(train.data - truth)
    assert (error[~masked] <= NOISE_CLIP_SIGMA * NOISE_ADU * stage_gain[~masked] + 1e-4).all()


def test_unlit_frames_carry_no_photons_and_lit_ones_follow_the_pattern() -> None:
    pattern = (False, True, True)
    with AgipdSimulator(product="corrected", cells=7, seed=5, hit_fraction=1.0, lit_pattern=pattern) as sim:
        truth = sim.truth.train(0)
        photons = sim.truth.photons(0)
        data = sim.train(0).data
    np.testing.assert_array_equal(truth.lit, [False, True, True, False, True, True, False])
    assert not photons[~truth.lit].any() and photons[truth.lit].sum(axis=(1, 2, 3)).min() > 0
    np.testing.assert_array_equal(truth.hits, truth.lit)  # hit_fraction 1: every lit frame, no dark one
    assert np.abs(data[~truth.lit]).max() < 1.0  # dark frames: noise only


def test_default_lit_pattern_leaves_the_first_frame_and_every_eighth_dark() -> None:
    with AgipdSimulator(cells=20, seed=5) as sim:
        lit = sim.truth.lit
    assert list(np.flatnonzero(~lit)) == [0, 8, 16]


def test_hit_fraction_and_peaks_per_hit_are_respected() -> None:
    with AgipdSimulator(cells=64, seed=5, hit_fraction=0.3, peaks_per_hit=(15, 60)) as sim:
        trains = [sim.truth.train(i) for i in range(10)]
    lit = sum(int(t.lit.sum()) for t in trains)
    hits = sum(int(t.hits.sum()) for t in trains)
    assert 0.22 < hits / lit < 0.38
    assert all(not (t.hits & ~t.lit).any() for t in trains)
    for t in trains:
        for frame in np.flatnonzero(t.hits):
            assert 15 <= len(t.peaks_in(int(frame))) <= 60
        assert {p.frame for p in t.peaks} == set(np.flatnonzero(t.hits))


def test_peaks_lie_inside_one_asic_away_from_its_edges_and_hold_their_photons() -> None:
    with AgipdSimulator(product="corrected", cells=4, seed=5, hit_fraction=1.0) as sim:
        truth = sim.truth.train(0)
        photons = sim.truth.photons(0)
        background_max = sim.truth.photons(0)[~truth.hits].max()
    assert truth.peaks
    for peak in truth.peaks:
        asic_row = peak.ss - 64 * (round(peak.ss) // 64)
        assert 4.5 <= asic_row <= 58.5 and 4.5 <= peak.fs <= 122.5, peak
        assert 50 <= peak.intensity <= 2000 and 0.8 <= peak.sigma_px <= 1.2
        row, col = round(peak.ss), round(peak.fs)
        window = photons[peak.frame, peak.module, row - 4 : row + 5, col - 4 : col + 5]
        assert window.sum() >= peak.photons  # the peak's photons plus a little background
        assert window.sum() <= peak.photons + 81 * background_max + 2000  # neighbours may overlap a corner


def test_a_seed_fixes_every_train_and_another_seed_changes_it() -> None:
    options = {"product": "raw", "cells": 4, "hit_fraction": 0.5}
    with AgipdSimulator(seed=9, **options) as a, AgipdSimulator(seed=9, **options) as b:  # type: ignore[arg-type]
        for index in (0, 3):
            np.testing.assert_array_equal(a.train(index).data, b.train(index).data)
            assert a.truth.train(index).peaks == b.truth.train(index).peaks
        np.testing.assert_array_equal(a.truth.photons(1), b.truth.photons(1))
    with AgipdSimulator(seed=10, **options) as c:  # type: ignore[arg-type]
        other = c.train(0).data
    with AgipdSimulator(seed=9, **options) as d:  # type: ignore[arg-type]
        assert not np.array_equal(other, d.train(0).data)


@pytest.mark.parametrize("layout", ["file", "online"])
def test_train_arrays_do_not_depend_on_layout_or_sources(layout: str) -> None:
    with AgipdSimulator(cells=5, seed=9, hit_fraction=1.0) as reference, AgipdSimulator(
        cells=5, seed=9, hit_fraction=1.0, layout=layout, sources="modules"
    ) as other:
        np.testing.assert_array_equal(reference.train(2).data, other.train(2).data)

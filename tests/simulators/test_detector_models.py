from __future__ import annotations

import numpy as np
import pytest

from detpipe.simulators import DetectorGeometry, DetectorModel
from detpipe.simulators.detector_models import MASK_DEAD, MASK_GAP

# (model, height, width) from the DECTRIS EIGER2 specifications
EIGER2_SIZES = [
    ("500K", 512, 1028),
    ("1M", 1062, 1028),
    ("4M", 2162, 2068),
    ("9M", 3262, 3108),
    ("16M", 4362, 4148),
]


@pytest.mark.parametrize(("model", "height", "width"), EIGER2_SIZES)
def test_every_model_has_the_eiger2_image_size(model: str, height: int, width: int) -> None:
    geometry = DetectorGeometry.of(model)
    assert geometry.shape == (height, width)
    assert geometry.description == f"Dectris EIGER2 Si {model}"


def test_gap_bits_cover_exactly_the_38_row_and_12_column_gaps_of_a_4m() -> None:
    mask = DetectorGeometry.of(DetectorModel.EIGER2_4M).pixel_mask()
    gap = (mask & MASK_GAP).astype(bool)
    gap_rows = np.flatnonzero(gap.all(axis=1))
    gap_cols = np.flatnonzero(gap.all(axis=0))
    assert list(gap_rows) == [r for start in (512, 1062, 1612) for r in range(start, start + 38)]
    assert list(gap_cols) == list(range(1028, 1040))
    assert gap.sum() == 3 * 38 * 2068 + 12 * 2162 - 3 * 38 * 12


def test_dead_pixels_are_marked_inside_modules_and_the_same_every_time() -> None:
    geometry = DetectorGeometry.of("1M")
    mask = geometry.pixel_mask()
    dead = np.argwhere(mask & MASK_DEAD)
    assert len(dead) == 2 * 3
    assert not (mask[tuple(dead.T)] & MASK_GAP).any()
    assert [tuple(p) for p in dead] == sorted(DetectorGeometry.of("1M").dead_pixels())
    assert not mask.flags.writeable


def test_a_500k_has_no_gaps() -> None:
    mask = DetectorGeometry.of("500K").pixel_mask()
    assert not (mask & MASK_GAP).any()

"""ROI and module selection (a lossy reduction): kept masks, dropped pixels, configuration errors."""

from __future__ import annotations

import numpy as np
import pytest

from detpipe.pipeline.core.errors import ConfigError
from detpipe.pipeline.eiger.panels import eiger_panels
from detpipe.pipeline.policy.pixel_selection import (
    agipd_module_rectangles,
    dropped_fraction,
    kept_pixel_mask,
    select_pixels,
)
from detpipe.pipeline.policy.reduction_params import Roi

EIGER2_4M = (2162, 2068)
SMALL = (6, 8)
TWO_MODULES = np.array([[0, 3, 0, 8], [3, 6, 0, 8]], np.int32)


def test_no_modules_and_no_rois_keeps_every_pixel() -> None:
    kept = kept_pixel_mask(SMALL, module_rectangles=TWO_MODULES, modules=(), rois=())
    assert kept.shape == SMALL and kept.dtype == np.bool_ and kept.all()


def test_kept_pixels_are_the_union_of_modules_and_rois() -> None:
    kept = kept_pixel_mask(SMALL, module_rectangles=TWO_MODULES, modules=[1], rois=[Roi(x=2, y=1, width=3, height=1)])
    expected = np.zeros(SMALL, bool)
    expected[3:6, :] = True
    expected[1, 2:5] = True
    np.testing.assert_array_equal(kept, expected)


def test_eiger_4m_module_selection_keeps_exactly_that_module() -> None:
    panels = eiger_panels(EIGER2_4M)
    kept = kept_pixel_mask(EIGER2_4M, module_rectangles=panels, modules=[3], rois=[])
    ss0, ss1, fs0, fs1 = panels[3]
    assert kept.sum() == (ss1 - ss0) * (fs1 - fs0) == 512 * 1028
    assert kept[ss0:ss1, fs0:fs1].all()


def test_agipd_modules_stack_along_slow_scan() -> None:
    rectangles = agipd_module_rectangles()
    assert rectangles.shape == (16, 4)
    np.testing.assert_array_equal(rectangles[3], [1536, 2048, 0, 128])
    kept = kept_pixel_mask((16 * 512, 128), module_rectangles=rectangles, modules=[3, 4, 8, 15], rois=[])
    assert kept.sum() == 4 * 512 * 128
    assert kept[15 * 512 :, :].all() and not kept[: 3 * 512, :].any()


def test_every_bad_module_and_roi_is_reported_with_the_valid_range() -> None:
    with pytest.raises(ConfigError) as raised:
        kept_pixel_mask(EIGER2_4M, module_rectangles=eiger_panels(EIGER2_4M), modules=[9, 2, 12],
                        rois=[Roi(x=2000, y=0, width=100, height=10), Roi(x=0, y=0, width=10, height=10)])
    problems = raised.value.problems
    assert len(problems) == 3
    assert "module 9 does not exist: this 2162×2068 image has modules 0..7" in problems[0]
    assert "module 12 does not exist" in problems[1]
    assert "[2000, 0, 100, 10]" in problems[2] and "x + width <= 2068" in problems[2]


def test_selected_integer_frame_marks_dropped_pixels_and_leaves_the_original() -> None:
    image = np.arange(48, dtype=np.uint32).reshape(SMALL)
    kept = kept_pixel_mask(SMALL, module_rectangles=TWO_MODULES, modules=[0], rois=())
    selected = select_pixels(image, kept, 2**32 - 1)
    np.testing.assert_array_equal(selected[:3], image[:3])
    assert (selected[3:] == 2**32 - 1).all()
    assert image[5, 7] == 47


def test_selected_float_frame_reads_nan_where_dropped() -> None:
    image = np.ones(SMALL, np.float32)
    kept = np.zeros(SMALL, bool)
    kept[0, 0] = True
    selected = select_pixels(image, kept, None)
    assert selected[0, 0] == 1.0 and np.isnan(selected).sum() == 47


def test_integer_frames_need_a_marker_for_dropped_pixels() -> None:
    with pytest.raises(ValueError, match="masked_value"):
        select_pixels(np.zeros(SMALL, np.uint16), np.ones(SMALL, bool), None)


def test_dropped_fraction_counts_valid_pixels_only() -> None:
    kept = np.zeros(SMALL, bool)
    kept[:3] = True
    assert dropped_fraction(kept) == 0.5
    valid = np.ones(SMALL, bool)
    valid[4:] = False  # gaps: no data whether kept or not
    assert dropped_fraction(kept, valid) == pytest.approx(8 / 32)
    assert dropped_fraction(kept, np.zeros(SMALL, bool)) == 0.0

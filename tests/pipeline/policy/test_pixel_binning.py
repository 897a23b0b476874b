"""2 × 2 binning (a lossy reduction): block sums, masked markers, saturation and pixel-mask OR."""

from __future__ import annotations

import numpy as np
import pytest

from detpipe.pipeline.policy.pixel_binning import bin2x2, bin_pixel_mask

EIGER16_MARKER = 2**16 - 1


def block_sums(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    wide = image[:h, :w].astype(np.float64 if image.dtype.kind == "f" else np.int64)
    return wide.reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3))


def test_bins_are_sums_of_2x2_blocks_and_odd_edges_are_dropped() -> None:
    image = np.random.default_rng(0).integers(0, 1000, (7, 9)).astype(np.uint16)
    binned = bin2x2(image, masked_value=EIGER16_MARKER)
    assert binned.shape == (3, 4) and binned.dtype == np.uint16
    np.testing.assert_array_equal(binned, block_sums(image))


def test_a_bin_touching_a_masked_pixel_is_masked() -> None:
    image = np.ones((4, 4), np.uint16)
    image[1, 2] = EIGER16_MARKER
    binned = bin2x2(image, masked_value=EIGER16_MARKER)
    np.testing.assert_array_equal(binned, [[4, EIGER16_MARKER], [4, 4]])


def test_integer_sums_saturate_below_the_marker_or_at_the_dtype_maximum() -> None:
    bright = np.full((2, 4), 60_000, np.uint16)
    np.testing.assert_array_equal(bin2x2(bright, masked_value=EIGER16_MARKER), [[EIGER16_MARKER - 1] * 2])
    np.testing.assert_array_equal(bin2x2(bright, masked_value=None), [[EIGER16_MARKER] * 2])
    eiger32 = np.full((2, 2), 2**32 - 2, np.uint32)
    assert bin2x2(eiger32, masked_value=2**32 - 1)[0, 0] == 2**32 - 2
    negative = np.full((2, 2), -100, np.int8)
    assert bin2x2(negative, masked_value=None)[0, 0] == -128


def test_float_bins_sum_and_propagate_nan() -> None:
    image = np.arange(16, dtype=np.float32).reshape(4, 4) / 4
    image[3, 3] = np.nan
    binned = bin2x2(image, masked_value=None)
    assert binned.dtype == np.float32
    expected = block_sums(image).astype(np.float32)
    np.testing.assert_array_equal(binned, expected)  # NaN compares equal to NaN here
    assert binned[0, 1] == np.float32((2 + 3 + 6 + 7) / 4)
    assert np.isnan(binned[1, 1]) and np.isfinite(binned[:, 0]).all()


def test_float_bins_honour_an_explicit_marker() -> None:
    image = np.ones((2, 4), np.float32)
    image[0, 0] = -1.0
    np.testing.assert_array_equal(bin2x2(image, masked_value=-1.0), [[-1.0, 4.0]])


def test_binned_pixel_mask_keeps_every_bad_bit_of_its_block() -> None:
    mask = np.zeros((4, 5), np.uint32)
    mask[0, 1] = 1  # gap
    mask[1, 0] = 8  # noisy
    mask[3, 3] = 2  # dead
    mask[2, 4] = 16  # in the dropped odd column
    binned = bin_pixel_mask(mask)
    assert binned.dtype == np.uint32
    np.testing.assert_array_equal(binned, [[9, 0], [0, 2]])


def test_binning_refuses_non_images() -> None:
    with pytest.raises(ValueError, match="2-D"):
        bin2x2(np.zeros(8, np.uint16), masked_value=None)
    with pytest.raises(TypeError, match="int64"):
        bin2x2(np.zeros((2, 2), np.int64), masked_value=None)
    with pytest.raises(TypeError, match="bit flags"):
        bin_pixel_mask(np.zeros((2, 2), np.float32))

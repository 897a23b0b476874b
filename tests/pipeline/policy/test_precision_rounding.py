"""Precision rounding (a lossy reduction): errb_round semantics for float32, significant bits for integers.

The float32 reference below is written from the definition (kept LSB = 2**max(abspw, exponent − mnbits),
half to even) in float64 arithmetic, independently of the kernel's bit manipulation. The hand-checked
values were traced through EXtra-redu's ``rounding_impl.c`` and confirmed with the 1.1.0 wheel's
``errb_round``; three checks are EXtra-redu's own ``lossy/tests/test_rounding.py`` cases. (EXtra-redu is
not a test dependency: these values stand in for it.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from detpipe.pipeline.policy.precision_rounding import RoundingError, round_precision

EIGER32_MARKER = 2**32 - 1
SETTINGS = [(23, None), (10, None), (5, None), (3, None), (0, None), (23, -1), (23, 0), (5, -1), (10, 2),
            (7, -10), (23, 10), (2, 3)]


def errb_round_reference(x: np.ndarray, mnbits: int, abspw: int | None) -> np.ndarray:
    """errb_round by its definition; subnormals count from exponent −127, as errb_round's does."""
    wide = x.astype(np.float64)
    out = wide.copy()
    rounds = np.isfinite(wide) & (wide != 0)
    _, exponent = np.frexp(wide[rounds])  # |x| = f * 2**exponent, f in [0.5, 1)
    leading = np.maximum(exponent - 1, -127)
    step_power = leading - mnbits if abspw is None else np.maximum(abspw, leading - mnbits)
    step = np.exp2(step_power.astype(np.float64))
    out[rounds] = np.round(wide[rounds] / step) * step + 0.0  # np.round is half to even; + 0.0 turns -0 into +0
    out[wide == 0] = 0.0
    return out.astype(np.float32)


def mixed_float32(seed: int) -> np.ndarray:
    """Negatives, zeros, photon-sized values, huge and tiny normals, subnormals, NaN and ±inf."""
    rng = np.random.default_rng(seed)
    magnitudes = np.exp2(rng.uniform(-40, 40, 4000))
    photons = rng.poisson(2.0, 2000) + rng.normal(0, 0.3, 2000)
    subnormals = rng.integers(1, 0x7FFFFF, 200, dtype=np.uint32).view(np.float32)
    values = np.concatenate([
        magnitudes * rng.choice([-1, 1], magnitudes.size), photons, -photons, subnormals,
        [0.0, -0.0, np.nan, np.inf, -np.inf, 1.0, -1.0, 2.0**-126, 2.0**-10, 2.0**-11],
    ]).astype(np.float32)
    return values


def half_way_float32(mnbits: int, abspw: int | None) -> np.ndarray:
    """Values exactly half a kept step above a kept value, where half-to-even decides."""
    kept = min(mnbits, 10)  # an odd number of kept + 2 significant bits is a tie at ``kept`` mantissa bits
    odd = 2 * np.arange(2**kept, 2**kept + 64, dtype=np.float64) + 1
    ties = [np.ldexp(odd, p) for p in (-20, 0, 7)]
    if abspw is not None:
        ties.append((np.arange(-64, 64) + 0.5) * 2.0**abspw)
    values = np.concatenate(ties)
    return np.concatenate([values, -values]).astype(np.float32)


@pytest.mark.parametrize(("mnbits", "abspw"), SETTINGS)
def test_float32_rounding_matches_the_errb_round_definition(mnbits: int, abspw: int | None) -> None:
    values = np.concatenate([mixed_float32(seed=mnbits), half_way_float32(mnbits, abspw)])
    rounded = round_precision(values, mantissa_bits=mnbits, step_exponent=abspw)
    with np.errstate(over="ignore"):
        expected = errb_round_reference(values, mnbits, abspw)
    np.testing.assert_array_equal(rounded.view(np.uint32), expected.view(np.uint32))


def test_float32_rounding_agrees_with_hand_traced_errb_round_values() -> None:
    cases = [  # (value, mnbits, abspw, errb_round's result)
        (1.3, 2, None, 1.25),  # 1.0100110…b keeps 1.01b
        (9.0, 2, None, 8.0),  # 1.001b × 2**3: a tie, 1.00b is even
        (11.0, 2, None, 12.0),  # 1.011b × 2**3: a tie, rounds up to the even 1.10b
        (-0.74, 23, -1, -0.5),
        (0.25, 23, -1, 0.0),  # half a 0.5 step: even is 0
        (0.75, 23, -1, 1.0),
        (-0.2, 23, -1, 0.0),  # the C writes all-zero bits: +0.0, the sign is dropped
        (1000.3, 5, -1, 1008.0),  # relative precision wins: 1.1111101…b × 2**9 keeps 1.11111b
        (3.4028235e38, 5, None, math.inf),  # the significand overflows into exponent 255
    ]
    for value, mnbits, abspw, expected in cases:
        rounded = round_precision(np.array([value], np.float32), mantissa_bits=mnbits, step_exponent=abspw)
        assert rounded.view(np.uint32)[0] == np.array([expected], np.float32).view(np.uint32)[0], (value, mnbits)


def test_float32_rounding_passes_extra_redus_own_tests() -> None:
    steps = np.arange(-256.0, 256.125, 0.125, dtype=np.float32)
    np.testing.assert_array_equal(round_precision(steps, mantissa_bits=23, step_exponent=0), np.round(steps))
    counts = np.arange(0, 65520, dtype=np.float32)
    as_half = counts.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(round_precision(counts, mantissa_bits=10, step_exponent=None), as_half)
    fine = np.arange(0, 16384, 0.0625, dtype=np.float32)
    expected = fine.astype(np.float16).astype(np.float32)
    fractional = expected != np.round(expected)
    expected[fractional] = np.round(fine[fractional]).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(round_precision(fine, mantissa_bits=10, step_exponent=0), expected)


def test_23_mantissa_bits_and_no_step_is_the_identity() -> None:
    floats = mixed_float32(seed=1)
    same = round_precision(floats, mantissa_bits=23, step_exponent=None)
    np.testing.assert_array_equal(same.view(np.uint32)[floats != 0], floats.view(np.uint32)[floats != 0])
    rng = np.random.default_rng(2)
    for dtype in (np.uint16, np.uint32, np.int32):
        high = min(2**23, np.iinfo(dtype).max)
        counts = rng.integers(0, high, 5000).astype(dtype)
        np.testing.assert_array_equal(round_precision(counts, mantissa_bits=23, step_exponent=None), counts)
    full = np.array([0, 1, 2**32 - 2, 2**31 + 12345], np.uint32)
    np.testing.assert_array_equal(round_precision(full, mantissa_bits=32, step_exponent=None), full)


@pytest.mark.parametrize(("mnbits", "abspw"), SETTINGS)
def test_rounding_twice_equals_rounding_once(mnbits: int, abspw: int | None) -> None:
    floats = mixed_float32(seed=3)
    once = round_precision(floats, mantissa_bits=mnbits, step_exponent=abspw)
    twice = round_precision(once, mantissa_bits=mnbits, step_exponent=abspw)
    np.testing.assert_array_equal(twice.view(np.uint32), once.view(np.uint32))
    counts = np.random.default_rng(4).integers(0, 2**32 - 1, 5000, dtype=np.uint32)
    counts[:3] = [EIGER32_MARKER, 2**32 - 2, 2**32 - 3]
    mbits = max(mnbits, 1)
    once_int = round_precision(counts, mantissa_bits=mbits, step_exponent=abspw, masked_value=EIGER32_MARKER)
    twice_int = round_precision(once_int, mantissa_bits=mbits, step_exponent=abspw, masked_value=EIGER32_MARKER)
    np.testing.assert_array_equal(twice_int, once_int)


def test_result_is_a_new_array_of_the_same_dtype_and_shape() -> None:
    frame = np.arange(24, dtype=np.float32).reshape(2, 3, 4) + 0.3
    rounded = round_precision(frame, mantissa_bits=3, step_exponent=None)
    assert rounded.shape == frame.shape and rounded.dtype == frame.dtype
    assert not np.shares_memory(rounded, frame)
    assert frame[0, 0, 0] == np.float32(0.3)


def test_half_photon_step_adds_the_uniform_quantisation_error() -> None:
    rng = np.random.default_rng(5)
    frame = (rng.poisson(3.0, 200_000) + rng.normal(0.0, 0.5, 200_000)).astype(np.float32)
    rounded = round_precision(frame, mantissa_bits=23, step_exponent=-1)
    error = RoundingError()
    error.add(frame, rounded)
    assert error.rms_photons == pytest.approx(0.5 / math.sqrt(12), rel=0.10)
    assert error.max_abs_photons <= 0.25


def python_int_rounding(value: int, mantissa_bits: int, step_exponent: int) -> int:
    magnitude = abs(value)
    dropped = max(magnitude.bit_length() - mantissa_bits, step_exponent, 0)
    quotient, rest = divmod(magnitude, 1 << dropped)
    half = (1 << dropped) >> 1
    if dropped and (rest > half or (rest == half and quotient % 2 == 1)):
        quotient += 1
    return (quotient << dropped) * (1 if value >= 0 else -1)


@pytest.mark.parametrize(("mantissa_bits", "step_exponent"), [(1, 0), (3, 0), (8, 0), (8, 4), (23, 2), (2, 12)])
def test_integer_rounding_keeps_significant_bits_half_to_even(mantissa_bits: int, step_exponent: int) -> None:
    rng = np.random.default_rng(6)
    values = np.concatenate([rng.integers(-(2**24), 2**24, 3000), np.arange(-300, 300)]).astype(np.int32)
    rounded = round_precision(values, mantissa_bits=mantissa_bits, step_exponent=step_exponent)
    expected = [python_int_rounding(int(v), mantissa_bits, step_exponent) for v in values]
    np.testing.assert_array_equal(rounded, np.array(expected, np.int64))


def test_integer_steps_of_one_or_less_are_no_absolute_rounding() -> None:
    counts = np.arange(0, 1000, dtype=np.uint16)
    for step_exponent in (None, 0, -3):
        np.testing.assert_array_equal(round_precision(counts, mantissa_bits=16, step_exponent=step_exponent), counts)
    assert set(round_precision(counts, mantissa_bits=16, step_exponent=2) % 4) == {0}


@pytest.mark.parametrize("mantissa_bits", [1, 3, 8, 23, 32])
def test_integer_rounding_never_overflows_or_produces_the_eiger_marker(mantissa_bits: int) -> None:
    top = np.array([EIGER32_MARKER, 2**32 - 2, 2**32 - 3, 2**32 - 256, 2**32 - 2**20, 2**31], np.uint32)
    for step_exponent in (None, 4):
        rounded = round_precision(top, mantissa_bits=mantissa_bits, step_exponent=step_exponent,
                                  masked_value=EIGER32_MARKER)
        assert rounded[0] == EIGER32_MARKER
        assert (rounded[1:] < EIGER32_MARKER).all()
        assert (rounded[1:] >= 2**31).all()  # clamped below the marker, never wrapped round to small numbers
    rounded_23 = round_precision(top, mantissa_bits=23, step_exponent=None, masked_value=EIGER32_MARKER)
    assert rounded_23[1] == 2**32 - 2**9  # the largest 23-bit value below the marker
    eiger16 = np.array([65535, 65534, 65533, 65000], np.uint16)
    rounded_16 = round_precision(eiger16, mantissa_bits=16, step_exponent=None, masked_value=65535)
    np.testing.assert_array_equal(rounded_16, eiger16)
    rounded_2 = round_precision(eiger16, mantissa_bits=2, step_exponent=None, masked_value=65535)
    np.testing.assert_array_equal(rounded_2, [65535, 49152, 49152, 49152])


def test_signed_rounding_clamps_to_the_dtype_range() -> None:
    rounded = round_precision(np.array([-128, -127, 127, 5, -5, 6], np.int8), mantissa_bits=2, step_exponent=None)
    np.testing.assert_array_equal(rounded, [-128, -128, 96, 4, -4, 6])


def test_eiger_4m_frame_keeps_its_markers() -> None:
    frame = np.random.default_rng(7).integers(0, 20, (2162, 2068), dtype=np.uint32)
    frame[512:550, :] = EIGER32_MARKER
    rounded = round_precision(frame, mantissa_bits=2, step_exponent=None, masked_value=EIGER32_MARKER)
    assert rounded.shape == frame.shape
    np.testing.assert_array_equal(rounded == EIGER32_MARKER, frame == EIGER32_MARKER)


def test_unsupported_dtypes_and_bit_counts_are_refused() -> None:
    with pytest.raises(TypeError, match="float64"):
        round_precision(np.zeros(3), mantissa_bits=5, step_exponent=None)
    with pytest.raises(ValueError, match="0..23"):
        round_precision(np.zeros(3, np.float32), mantissa_bits=24, step_exponent=None)


def test_rounding_error_counts_only_valid_unmasked_pixels() -> None:
    original = np.array([0, 4, 9, 100, EIGER32_MARKER, 7], np.uint32)
    rounded = np.array([1, 5, 8, 100, EIGER32_MARKER, 0], np.uint32)
    valid = np.array([True, True, True, True, True, False])
    error = RoundingError()
    error.add(original, rounded, valid, masked_value=EIGER32_MARKER)
    floats = np.array([[0.0, 4.0], [np.nan, 9.0]], np.float32)
    error.add(floats, np.array([[0.5, 4.5], [np.nan, 8.0]], np.float32))
    assert error.pixels == 4 + 3
    assert error.sum_sq_photons == pytest.approx(3 + 1.5)
    assert error.rms_photons == pytest.approx(math.sqrt(4.5 / 7))
    sum_sq_sigma = (1 + 1 / 4 + 1 / 9) + (0.25 + 0.25 / 4 + 1 / 9)
    assert error.rms_sigma == pytest.approx(math.sqrt(sum_sq_sigma / 7))
    assert error.max_abs_photons == 1.0


def test_rounding_error_without_pixels_reads_zero() -> None:
    error = RoundingError()
    error.add(np.full(4, np.nan, np.float32), np.full(4, np.nan, np.float32))
    assert (error.pixels, error.rms_photons, error.rms_sigma) == (0, 0.0, 0.0)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_rounding_error_over_many_blocks_equals_a_plain_numpy_count(dtype: type) -> None:
    """The kernel counts blocks of pixels and measures only blocks holding a change: checked against the
    definition on a frame of several blocks and a tail, changes in some blocks only, markers, NaN, invalid."""
    rng = np.random.default_rng(11)
    original = rng.poisson(40.0, 3 * 4096 + 123).astype(dtype)
    marker = 65535
    original[rng.choice(original.size, 50, replace=False)] = marker
    rounded = original.copy()
    changed = np.concatenate([rng.choice(4096, 30, replace=False) + 4096, original.size - 1 - np.arange(5)])
    rounded[changed] = original[changed] + 3
    valid = rng.random(original.size) > 0.1
    if dtype == np.float32:
        original[7], rounded[4096 + 9] = np.nan, np.nan  # NaN read, and a NaN rounding of a number
    error = RoundingError.of(original, rounded, valid, masked_value=marker)

    o, r = original.astype(np.float64), rounded.astype(np.float64)
    counted = valid & ~np.isnan(o) & ~np.isnan(r) & (o != marker)
    delta = (r - o)[counted]
    assert error.pixels == np.count_nonzero(counted)
    assert error.sum_sq_photons == pytest.approx(np.sum(delta**2))
    assert error.sum_sq_sigma == pytest.approx(np.sum(delta**2 / np.maximum(o[counted], 1.0)))
    assert error.max_abs_photons == np.max(np.abs(delta)) == 3.0

"""Precision rounding (a lossy reduction): fewer significant bits, so the lossless back end compresses better.

Dropping low mantissa bits, or rounding to an absolute step of 2**k photons, turns noise bits into zeros
that bitshuffle packs away: 5 mantissa bits or a 0.5-photon step give 2.8–6.8× on AGIPD float32 frames
for 0.02–0.08 σ on integrated peaks (published comparisons). The added variance of a step Δ is Δ²/12, so
any step ≤ √I adds at most 1/12 of the Poisson variance.

float32 follows ``extra_redu.errb_round(inp, mnbits, abspw)`` (EXtra-redu 1.0.2 and 1.1.0,
``extra_redu/lossy/rounding_impl.c``, BSD-3-Clause, © European XFEL): the kept LSB of a value with biased
exponent e is 2**max(abspw, e - 127 - mnbits), half to even, on the float's bit pattern; a value whose
mantissa rounds to zero becomes +0.0. errb_round is scalar C at 0.19 GB/s; these branch-free kernels
take ≈ 10 ms per Eiger 4M float32 frame on one core of the development VM (errb_round 1.1.0: 61 ms), and
are bit-identical to the 1.1.0 wheel on every finite normal value of at least 2**(abspw - 9)
(checked on 4M random bit patterns per setting). Three deliberate deviations, where the C is undefined
or wrong:
- NaN and ±inf pass through unchanged (the C rounds a NaN's payload, and can turn it into -0.0);
- a value below 2**(abspw - 9) becomes 0, as the arithmetic intends: the C shifts a uint32 by 32 bits
  or more there (undefined), and the x86 build masks the count to 5 bits, so such values keep most of
  their bits: ~0.5 % of simulated AGIPD pixels (Poisson 1.5 + N(0, 0.15)) at a 1-photon step, all < 0.002 ph;
- subnormals (< 1.2e-38) are re-encoded correctly (the C writes the doubled significand back and so
  doubles them, even with mnbits = 23).

Integers (Eiger counts) keep at most ``mantissa_bits`` significant bits, the leading one included, and
round to a multiple of 2**k for k >= 1, half to even. The Eiger marker 2**bits - 1 (``masked_value``)
is kept, and a value that would round onto it or past the dtype's range is clamped to the largest
rounded value below: a rounded pixel must never read as masked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

NO_ABSOLUTE_STEP = -150  # errb_round's default abspw: 2**-150 is below every float32's LSB
MAX_FLOAT32_MANTISSA_BITS = 23
_MAX_INTEGER_BITS = 32  # integer kernels work in int64, so 32-bit pixels cannot overflow


@njit(cache=True, nogil=True)
def _drop_bits_half_even(m: int, dropped: int) -> int:  # pragma: no cover - compiled
    """``m`` (0 <= m < 2**34) rounded to a multiple of 2**dropped (0..34), half to even; branch-free."""
    one = np.int64(1) << dropped
    rest = m & (one - 1)
    truncated = m - rest
    half = one >> 1
    odd = ((truncated >> dropped) & 1) == 1
    up = (rest > half) | ((rest == half) & odd & (dropped > 0))
    return truncated + np.int64(up) * one


@njit(cache=True, nogil=True)
def _bit_length(a: int) -> int:  # pragma: no cover - compiled
    """Significant bits of ``a`` (0 <= a < 2**34), by branch-free binary search so the pixel loop has no data-dependent branch."""
    n = np.int64(0)
    for width in (32, 16, 8, 4, 2, 1):
        step = np.int64(a >= (np.int64(1) << width)) * width
        n += step
        a >>= step
    return n + np.int64(a > 0)


@njit(cache=True, nogil=True)
def _round_float32_bits(
    values: np.ndarray,  # float32 (N,)
    bits: np.ndarray,  # uint32 (N,): the same memory as ``values``
    mnbits: int,
    abspw: int,
    has_mask: bool,
    masked_value: float,
    out: np.ndarray,  # uint32 (N,), every element written
) -> None:  # pragma: no cover - compiled
    """errb_round_f on every element, in int64 so no shift is ever undefined, and without branches."""
    for i in range(bits.size):
        b = np.int64(bits[i])
        e = (b >> 23) & 0xFF
        subnormal = e == 0
        # errb_round's significand: value = m * 2**(e - 150); a subnormal (e = 0) carries fraction << 1.
        m = ((b & 0x7FFFFF) << np.int64(subnormal)) | (np.int64(not subnormal) << 23)
        kept = min(e - abspw - 127, mnbits)  # significand bits after the leading one
        m = _drop_bits_half_even(m, min(23 - kept, 25))  # 25 dropped bits zero every m < 2**25
        # A significand that overflowed to 2**24 moves the exponent up (254 + 1 = inf); a subnormal's
        # 2**24 >> 1 is the smallest normal, exactly.
        normal = (b & 0x80000000) | ((e + np.int64(m == 0x1000000)) << 23) | (m & 0x7FFFFF)
        rounded = (b & 0x80000000) | (m >> 1) if subnormal else normal
        rounded = 0 if m == 0 else rounded
        keep = (e == 0xFF) | (has_mask & (values[i] == masked_value))
        out[i] = b if keep else rounded


# Pixels the kernels below pass over branch-free (vectorised) before they walk the block again, only if it holds
# a pixel to round (``_round_integers``) or one rounding changed (``_frame_error``).
_BLOCK_PIXELS = 4096


@njit(cache=True, nogil=True)
def _round_integers(
    values: np.ndarray,  # any integer dtype of <= 32 bits, (N,)
    mantissa_bits: int,
    step_exponent: int,  # 0 = no absolute step
    has_mask: bool,
    masked_value: int,
    masked_substitute: int,  # the rounded value nearest ``masked_value`` towards zero
    positive_cap: int,  # the largest rounded magnitude a positive (negative) value may take
    negative_cap: int,
    unchanged_below: int,  # 0 <= v < this is its own rounding (2**mantissa_bits without a step, else 0)
    out: np.ndarray,  # same dtype as ``values``, (N,), every element written
) -> None:  # pragma: no cover - compiled
    """Sign-magnitude rounding; out-of-range results and the marker clamp towards zero (module docstring).

    Most pixels of a diffraction frame are a few counts, which keep all their bits, or the marker of a gap. A
    branch-free pass copies a block of pixels and counts the others, and only a block holding one is walked
    again to round them. Per EIGER2 4M frame: rounding every pixel in one pass (the compiler makes the
    rounding a select evaluated for every pixel) 13 ms, listing the pixels to round in the copying pass
    (a store per pixel, not vectorised) 2.1 ms, blocks 0.9 ms."""
    for start in range(0, values.size, _BLOCK_PIXELS):
        block, block_out = values[start : start + _BLOCK_PIXELS], out[start : start + _BLOCK_PIXELS]
        to_round = 0
        for j in range(block.size):
            v = np.int64(block[j])
            block_out[j] = v
            to_round += np.int64(not _keeps_its_bits(v, unchanged_below, has_mask, masked_value))
        if to_round == 0:
            continue
        for j in range(block.size):
            v = np.int64(block[j])
            if _keeps_its_bits(v, unchanged_below, has_mask, masked_value):
                continue
            block_out[j] = _rounded_integer(v, mantissa_bits, step_exponent, has_mask, masked_value,
                                            masked_substitute, positive_cap, negative_cap)


@njit(cache=True, nogil=True, inline="always")
def _keeps_its_bits(v: int, unchanged_below: int, has_mask: bool, masked_value: int) -> bool:  # pragma: no cover
    """A pixel rounding leaves as it is: a small count or the marker."""
    return (0 <= v < unchanged_below) | (has_mask & (v == masked_value))


@njit(cache=True, nogil=True)
def _rounded_integer(v: int, mantissa_bits: int, step_exponent: int, has_mask: bool, masked_value: int,
                     masked_substitute: int, positive_cap: int, negative_cap: int) -> int:  # pragma: no cover
    """One pixel's sign-magnitude rounding (``_round_integers``' arguments)."""
    negative = v < 0
    a = -v if negative else v
    dropped = min(max(_bit_length(a) - mantissa_bits, step_exponent, 0), 34)
    r = min(_drop_bits_half_even(a, dropped), negative_cap if negative else positive_cap)
    rounded = -r if negative else r
    return masked_substitute if has_mask & (rounded == masked_value) & (r != 0) else rounded


def _largest_rounded_at_most(a: int, mantissa_bits: int, step_exponent: int) -> int:
    """The largest integer magnitude <= ``a`` that rounding leaves unchanged (0 when ``a`` <= 0)."""
    if a <= 0:
        return 0
    dropped = max(a.bit_length() - mantissa_bits, step_exponent, 0)
    return (a >> dropped) << dropped


def round_precision(
    values: np.ndarray,
    *,
    mantissa_bits: int,
    step_exponent: int | None,
    masked_value: int | float | None = None,
) -> np.ndarray:
    """A new array of ``values``' dtype and shape, rounded as the module docstring says.

    ``mantissa_bits``: float32 keeps this many bits after the leading one (errb_round's ``mnbits``,
    0..23, 23 = lossless); integers keep this many significant bits (1..32; 23 is lossless below 2**23).
    ``step_exponent``: k of the absolute step 2**k (errb_round's ``abspw``); None = no absolute step.
    Integers ignore k <= 0, since every integer is already a multiple of 1. Pixels equal to
    ``masked_value`` are copied unchanged; NaN and ±inf always are.
    """
    values = np.asarray(values)
    flat = np.ascontiguousarray(values).reshape(-1)
    if values.dtype == np.float32:
        if not 0 <= mantissa_bits <= MAX_FLOAT32_MANTISSA_BITS:
            raise ValueError(f"float32 keeps 0..{MAX_FLOAT32_MANTISSA_BITS} mantissa bits, got {mantissa_bits}")
        abspw = NO_ABSOLUTE_STEP if step_exponent is None else int(step_exponent)
        has_mask = masked_value is not None and not math.isnan(float(masked_value))
        out = np.empty(flat.size, dtype=np.uint32)
        _round_float32_bits(flat, flat.view(np.uint32), int(mantissa_bits), abspw, has_mask,
                            float(masked_value) if has_mask else 0.0, out)
        return out.view(np.float32).reshape(values.shape)
    if values.dtype.kind in "iu" and values.dtype.itemsize * 8 <= _MAX_INTEGER_BITS:
        if not 1 <= mantissa_bits <= _MAX_INTEGER_BITS:
            raise ValueError(f"integer pixels keep 1..{_MAX_INTEGER_BITS} significant bits, got {mantissa_bits}")
        info = np.iinfo(values.dtype)
        step = 0 if step_exponent is None else max(int(step_exponent), 0)
        marker = _integer_marker(masked_value)
        substitute = 0
        if marker is not None and marker != 0:
            substitute = _largest_rounded_at_most(abs(marker) - 1, mantissa_bits, step) * (1 if marker > 0 else -1)
        out = np.empty(flat.size, dtype=values.dtype)
        _round_integers(flat, int(mantissa_bits), step, marker is not None, 0 if marker is None else marker,
                        substitute, _largest_rounded_at_most(int(info.max), mantissa_bits, step),
                        _largest_rounded_at_most(-int(info.min), mantissa_bits, step),
                        (1 << mantissa_bits) if step == 0 else 0, out)
        return out.reshape(values.shape)
    raise TypeError(f"precision rounding takes float32 or integer pixels of up to {_MAX_INTEGER_BITS} bits, "
                    f"got {values.dtype}; convert float64 frames to float32 first")


def _integer_marker(masked_value: int | float | None) -> int | None:
    if masked_value is None:
        return None
    if not float(masked_value).is_integer():
        raise ValueError(f"an integer image's masked_value must be an integer, got {masked_value!r}")
    return int(masked_value)


@njit(cache=True, nogil=True)
def _frame_error(
    original: np.ndarray,  # (N,), any numeric dtype, photons
    rounded: np.ndarray,  # (N,), same size
    counted: np.ndarray,  # (N,) bool, True = count the pixel
    has_mask: bool,
    masked_value: np.generic,  # in the frame's dtype; ignored without has_mask
) -> tuple[int, float, float, float]:  # pragma: no cover - compiled
    """(pixels, Σ Δ², Σ Δ²/max(I, 1), max |Δ|) over the counted pixels, NaN and masked ones skipped.

    Rounding leaves most pixels of a diffraction frame unchanged (3 in 100,000 of a simulated EIGER2 4M frame
    at 8 bits): each block of pixels is counted in a branch-free pass the compiler vectorises, and only a block
    holding a changed pixel is walked again to measure it: ~1 ms a 4M frame, where numpy's passes took 3.4 ms."""
    pixels = 0
    sum_sq = 0.0
    sum_sq_sigma = 0.0
    max_abs = 0.0
    unmasked = np.int64(not has_mask)
    for start in range(0, original.size, _BLOCK_PIXELS):
        block, block_rounded = original[start : start + _BLOCK_PIXELS], rounded[start : start + _BLOCK_PIXELS]
        block_counted = counted[start : start + _BLOCK_PIXELS]
        changes = 0
        for j in range(block.size):
            a = block[j]
            # a == a is False for NaN only; written as integer products so that the loop vectorises
            pixels += np.int64(block_counted[j]) * np.int64(a == a) * (np.int64(a != masked_value) | unmasked)
            changes += np.int64(a != block_rounded[j])
        if changes == 0:
            continue
        for j in range(block.size):
            a = block[j]
            if a == block_rounded[j] or not block_counted[j] or (has_mask and a == masked_value):
                continue
            o = np.float64(a)
            r = np.float64(block_rounded[j])
            if math.isnan(o):
                continue
            if math.isnan(r):  # counted above, but its error cannot be measured
                pixels -= 1
                continue
            delta = r - o
            sum_sq += delta * delta
            sum_sq_sigma += delta * delta / max(o, 1.0)
            max_abs = max(max_abs, abs(delta))
    return pixels, sum_sq, sum_sq_sigma, max_abs


@dataclass(slots=True)
class RoundingError:
    """The error precision rounding added, summed over the kept frames of a run.

    ``rms_sigma`` is the RMS error in units of each pixel's Poisson σ = sqrt(max(I, 1)) photons: the
    number that says whether rounding is visible next to counting noise (a step Δ ≤ √I
    gives at most sqrt(1/12) ≈ 0.29 σ). Masked and NaN pixels are never counted.
    """

    pixels: int = 0
    sum_sq_photons: float = 0.0
    sum_sq_sigma: float = 0.0
    max_abs_photons: float = 0.0

    def add(
        self,
        original: np.ndarray,
        rounded: np.ndarray,
        valid_mask: np.ndarray | None = None,
        *,
        masked_value: int | float | None = None,
    ) -> None:
        """Count one frame: ``original`` and ``rounded`` in photons, ``valid_mask`` True = count the pixel."""
        self.merge(RoundingError.of(original, rounded, valid_mask, masked_value=masked_value))

    def merge(self, other: RoundingError) -> None:
        """Add the pixels and errors ``other`` counted (one frame, reduced on another thread)."""
        self.pixels += other.pixels
        self.sum_sq_photons += other.sum_sq_photons
        self.sum_sq_sigma += other.sum_sq_sigma
        self.max_abs_photons = max(self.max_abs_photons, other.max_abs_photons)

    @classmethod
    def of(
        cls,
        original: np.ndarray,
        rounded: np.ndarray,
        valid_mask: np.ndarray | None = None,
        *,
        masked_value: int | float | None = None,
    ) -> RoundingError:
        """The error of one frame (``add``'s arguments), as a new count: pure, so frames are measured in parallel."""
        original = np.ascontiguousarray(original).reshape(-1)
        rounded = np.ascontiguousarray(rounded).reshape(-1)
        if rounded.size != original.size:
            raise ValueError(f"rounded frame has {rounded.size} pixels, the original {original.size}")
        counted = np.ones(original.size, dtype=np.bool_)
        if valid_mask is not None:
            counted = np.ascontiguousarray(valid_mask, dtype=np.bool_).reshape(-1)
            if counted.size != original.size:
                raise ValueError(f"valid_mask has {counted.size} pixels, the frame {original.size}")
        has_mask = masked_value is not None and not math.isnan(float(masked_value))
        if has_mask and original.dtype.kind in "iu":  # a marker the dtype cannot hold marks no pixel
            has_mask = np.iinfo(original.dtype).min <= masked_value <= np.iinfo(original.dtype).max
        marker = original.dtype.type(masked_value if has_mask else 0)
        pixels, sum_sq, sum_sq_sigma, max_abs = _frame_error(original, rounded, counted, has_mask, marker)
        return cls(int(pixels), float(sum_sq), float(sum_sq_sigma), float(max_abs))

    @property
    def rms_photons(self) -> float:
        """RMS change per counted pixel, in photons; 0.0 before any pixel was counted."""
        return math.sqrt(self.sum_sq_photons / self.pixels) if self.pixels else 0.0

    @property
    def rms_sigma(self) -> float:
        """RMS change per counted pixel, in units of the pixel's Poisson σ; 0.0 before any pixel."""
        return math.sqrt(self.sum_sq_sigma / self.pixels) if self.pixels else 0.0

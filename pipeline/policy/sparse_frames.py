"""Sparsification of a frame (pyFAI sparsify-Bragg): a radial background model plus the pixels standing out of it.

pyFAI's ``sparsify-Bragg`` model on the CPU. Pixels are binned by radius (equal-width bins from 0 to the
largest valid radius); each bin is sigma-clipped (as pyFAI's ``sigma_clip.cl``: up to ``cycles`` passes,
values farther than ``threshold_sigma``·std from the mean are discarded for good, population std, stop
when a pass discards nothing) into ``background_avg``/``background_std``; a pixel is kept when
``I − bg(r) > max(noise, threshold_sigma·√(std(r)² + noise²))``, bg and std interpolated linearly between
bin centres (``numpy.interp``, densify's rule). That is pyFAI's ``find_intense`` kernel (``sparsify.cl``):
``noise`` is added in quadrature *and* is a floor. The plain ``max(threshold_sigma·std, noise)`` of
pyFAI sparsify-Bragg keeps every pixel ≥ 3 counts of a Poisson(0.5) background (1.4 % of an Eiger 4M frame);
the quadrature rule keeps 0.05 %, in line with pyFAI's measured 0.061 %.

Empty bins (every pixel masked) take values interpolated between populated neighbours, so densify never
meets a NaN. Masked pixels (static mask 0, ``== masked_value`` — Eiger's 2**bits − 1 marker — or
non-finite) never enter the statistics and are never kept. Kernels follow ``peakfinder8``: flat arrays
in, nothing allocated inside. Output is deterministic; indices ascend.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit
from numpy.typing import DTypeLike, NDArray

from ..core.errors import ConfigError, FrameRejected

_NAN, _INF = np.float32(np.nan), np.float32(np.inf)
_BLOCK = 64  # pixels per vectorised pre-test of the pick scan (as peakfinder8's seed scan)
# Re-association lets LLVM vectorise the clipped sums; NaN semantics are kept (masked pixels are NaN).
_REDUCTION_MATH = {"reassoc", "contract", "nsz", "arcp"}


@dataclass(frozen=True, slots=True, eq=False)
class RadialBins:
    """Equal-width radial bins of one detector layout; arrays are read-only.

    ``bin_index`` int32 (H, W): bin of each pixel, −1 where masked. ``radius`` float32 (n_bins,): bin centres
    (pixels). ``pixels`` int32 / ``start`` int64 (n_bins + 1,): CSR table, bin b is ``pixels[start[b]:
    start[b + 1]]``, ascending. ``position`` int32 (H·W,): each valid pixel's slot in that table (−1 masked),
    to fill the bin-major buffer reading the frame in raster order (2× faster than gathering, as
    peakfinder8.scatter_ring_values). ``pixel_radius`` float32 (H, W): radius, NaN where masked — pyFAI's
    ``mask`` dataset (pyFAI's sparse layout)."""

    bin_index: NDArray[np.int32]
    radius: NDArray[np.float32]
    pixels: NDArray[np.int32]
    start: NDArray[np.int64]
    position: NDArray[np.int32]
    pixel_radius: NDArray[np.float32]

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.bin_index.shape[0]), int(self.bin_index.shape[1])

    @property
    def n_bins(self) -> int:
        return int(self.radius.size)

    @classmethod
    def build(cls, radius: NDArray[np.floating], mask: NDArray[np.generic], *, n_bins: int) -> RadialBins:
        """Bins of ``radius`` (H, W) pixels over ``mask`` (nonzero/True = valid; a non-finite radius is
        masked too). pyFAI's default is 800 bins (≈ 1.9 px wide on an Eiger 4M). Sorting the detector by
        bin takes ≈ 0.3 s for 4.5 M pixels; build once per geometry."""
        radius, mask = np.asarray(radius, dtype=np.float32), np.asarray(mask)
        problems = [f"radius map must be 2-D (H, W), got shape {radius.shape}"] if radius.ndim != 2 else []
        if mask.shape != radius.shape:
            problems.append(f"mask shape {mask.shape} differs from the radius map's {radius.shape}")
        if n_bins < 1:
            problems.append(f"n_bins must be >= 1, got {n_bins}")
        if problems:
            raise ConfigError(problems)
        valid = (mask != 0) & np.isfinite(radius) & (radius >= 0)
        r_max = float(radius[valid].max(initial=0.0))
        width = r_max / n_bins if r_max > 0 else 1.0
        bin_index = np.minimum((np.where(valid, radius, 0.0) / width).astype(np.int64), n_bins - 1).astype(np.int32)
        bin_index[~valid] = -1
        flat = bin_index.reshape(-1)
        pixels = np.flatnonzero(flat >= 0)
        key = flat[pixels].astype(np.int16 if n_bins < 2**15 else np.int32)  # 16-bit keys: numpy's radix sort
        order = np.argsort(key, kind="stable")
        position = np.full(flat.size, -1, dtype=np.int32)
        position[pixels[order]] = np.arange(order.size, dtype=np.int32)
        start = np.concatenate([[0], np.cumsum(np.bincount(key, minlength=n_bins))]).astype(np.int64)
        centres = ((np.arange(n_bins) + 0.5) * width).astype(np.float32)
        arrays = (bin_index, centres, pixels[order].astype(np.int32), start, position,
                  np.where(valid, radius, _NAN).astype(np.float32))
        for array in arrays:
            array.flags.writeable = False
        return cls(*arrays)


@dataclass(frozen=True, slots=True, eq=False)
class SparseFrame:
    """One sparsified frame: ``index`` uint32 flat row-major indices (ascending) of the kept pixels,
    ``intensity`` their values in the input dtype, and the frame's background model per bin
    (``background_avg``, ``background_std`` float32 (n_bins,), in counts)."""

    index: NDArray[np.uint32]
    intensity: NDArray[np.generic]
    background_avg: NDArray[np.float32]
    background_std: NDArray[np.float32]

    @property
    def nbytes(self) -> int:
        """Bytes of index + intensity: what the frame adds to a sparse file before compression."""
        return int(self.index.nbytes + self.intensity.nbytes)


def sparsify(
    image: np.ndarray, bins: RadialBins, *, threshold_sigma: float, noise: float, cycles: int = 5,
    masked_value: float | None = None,
) -> SparseFrame:
    """Background model and kept pixels of ``image`` (H, W), any integer dtype or float32 (module docstring).

    pyFAI's defaults are ``threshold_sigma = 3`` (its ``cutoff_pick``), ``noise = 1``, ``cycles = 5``. A
    frame whose shape or dtype does not fit raises ``FrameRejected`` (``shape_mismatch``,
    ``unsupported_dtype``), which a stage runner counts. Eiger 4M uint16, one core of the 2-core
    development VM: ≈ 18 ms/frame (scatter 6, clipping 6, pick 5, allocation and copies the rest).
    """
    if image.shape != bins.shape:
        raise FrameRejected("shape_mismatch", f"frame {image.shape}, radial bins {bins.shape}")
    if image.dtype.kind not in "ui" and image.dtype not in (np.float32, np.float64):
        raise FrameRejected("unsupported_dtype", f"{image.dtype}; sparsify takes integer or float32 frames")
    flat = np.ascontiguousarray(image).reshape(-1)
    use_marker, marker = masked_value is not None, 0.0 if masked_value is None else float(masked_value)
    values = np.empty(bins.pixels.size, dtype=np.float32)
    scatter_bin_values(flat, bins.position, use_marker, marker, values)
    avg, std, count = (np.empty(bins.n_bins, dtype=t) for t in (np.float32, np.float32, np.int64))
    clip_bins(values, bins.start, float(threshold_sigma), int(cycles), avg, std, count)
    if 0 < (filled := np.flatnonzero(count)).size < count.size:  # empty bins: linear between populated ones
        empty = np.flatnonzero(count == 0)
        avg[empty] = np.interp(empty, filled, avg[filled])
        std[empty] = np.interp(empty, filled, std[filled])
    kept = np.empty(flat.size, dtype=np.uint32)  # untouched pages cost nothing: only kept pixels are written
    n = pick_pixels(flat, bins.bin_index.reshape(-1), bins.pixel_radius.reshape(-1), use_marker, marker, bins.radius,
                    avg, std, float(threshold_sigma), float(noise), np.empty(bins.n_bins), kept)
    index = kept[:n].copy()  # a copy, so the 4 M-entry scratch array is freed
    return SparseFrame(index=index, intensity=flat[index], background_avg=avg, background_std=std)


def densify(
    sparse: SparseFrame, bins: RadialBins, shape: tuple[int, int], dtype: DTypeLike, *, dummy: float
) -> np.ndarray:
    """The frame rebuilt as fabio's ``densify-Bragg`` does: background interpolated at each
    pixel's radius, kept intensities pasted at their index, rounded for integer dtypes, masked = ``dummy``."""
    if tuple(shape) != bins.shape:
        raise ValueError(f"shape {tuple(shape)} differs from the radial bins' {bins.shape}")
    return densify_frame(sparse, bins.pixel_radius, bins.radius, dtype, dummy=dummy)


def densify_frame(
    sparse: SparseFrame, pixel_radius: NDArray[np.floating], radius: NDArray[np.floating], dtype: DTypeLike,
    *, dummy: float,
) -> np.ndarray:
    """``densify`` from the file's arrays: ``pixel_radius`` (pyFAI ``mask``, NaN = masked) and bin centres."""
    dense = np.interp(pixel_radius, radius, sparse.background_avg)  # float64; NaN radius gives NaN
    dense.reshape(-1)[sparse.index] = sparse.intensity
    if np.dtype(dtype).kind in "ui":  # half away from zero, as fabio (numpy.round's half-to-even is not)
        dense = np.trunc(dense + np.copysign(0.5, dense))
    dense[~np.isfinite(pixel_radius)] = dummy
    return dense.astype(dtype)


@njit(cache=True, nogil=True)
def scatter_bin_values(
    image: np.ndarray, position: np.ndarray, use_marker: bool, marker: float, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """``out[position[i]] = image[i]`` as float32 for every statically valid pixel; the marker value and
    non-finite values are written as NaN, which ``clip_bins`` drops."""
    for i in range(image.size):
        p = position[i]
        if p >= 0:
            v, f = image[i], np.float32(image[i])
            out[p] = _NAN if (use_marker and v == marker) or not (abs(f) < _INF) else f


@njit(cache=True, nogil=True)
def clip_bins(
    values: np.ndarray, start: np.ndarray, threshold_sigma: float, cycles: int,
    avg: np.ndarray, std: np.ndarray, count: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Per bin of the float32 bin-major ``values`` (NaN = masked in this frame), up to ``cycles`` passes that
    discard |v − mean| > threshold_sigma·std for good; writes float32 ``avg``, ``std`` and the int64
    ``count`` of survivors (0 = empty bin), each (n_bins,).

    A value survives when it lay inside every window so far, and windows are intervals, so the survivors
    are exactly the values inside the running intersection [lo, hi]: each pass is one branch-free,
    vectorised sum over the bin (no compaction), and an unchanged count means nothing was discarded.
    """
    for b in range(start.size - 1):
        vals = values[start[b] : start[b + 1]]
        lo, hi = -np.inf, np.inf
        n, mean, sd = _window_stats(vals, lo, hi, 0.0)
        for _ in range(cycles):
            lo, hi = max(lo, mean - threshold_sigma * sd), min(hi, mean + threshold_sigma * sd)
            m, new_mean, new_sd = _window_stats(vals, lo, hi, mean)
            if m == n:
                break
            n, mean, sd = m, new_mean, new_sd
        avg[b], std[b], count[b] = mean, sd, n


@njit(cache=True, nogil=True, fastmath=_REDUCTION_MATH)
def _window_stats(
    vals: np.ndarray, lo: float, hi: float, pivot: float
) -> tuple[int, float, float]:  # pragma: no cover - compiled
    """Count, mean and population std of ``lo <= v <= hi`` (NaN fails both tests; (0, 0, 0) if none), summed
    as v − pivot in float64 lanes: centred on the previous mean, the variance loses no precision."""
    n = s1 = s2 = 0.0
    for k in range(vals.size):
        v = np.float64(vals[k])
        inside = (v >= lo) & (v <= hi)
        d = v - pivot if inside else 0.0
        s1 += d
        s2 += d * d
        n += np.float64(inside)
    if n == 0.0:
        return 0, 0.0, 0.0
    centred = s1 / n
    return int(n), pivot + centred, np.sqrt(max(s2 / n - centred * centred, 0.0))


@njit(cache=True, nogil=True)
def pick_pixels(
    image: np.ndarray, bin_index: np.ndarray, pixel_radius: np.ndarray, use_marker: bool, marker: float,
    centres: np.ndarray, avg: np.ndarray, std: np.ndarray, cutoff: float, noise: float,
    floors: np.ndarray, out_index: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Writes the flat indices of the kept pixels (module docstring) to ``out_index`` in ascending order and
    returns their count.

    A pixel of bin b interpolates between bins b − 1 … b + 1, so ``floors[b]`` (float64 (n_bins,) scratch)
    = lowest mean + threshold(lowest std) of those three bounds its threshold from below. Blocks of
    ``_BLOCK`` pixels are pre-tested (vectorised) against the lowest floor, which skips ~80 % of an SFX
    frame; the pixels of the other blocks are tested against their bin's floor, and only the few above it
    (≈ 0.13 % of the frame, twice the kept pixels) are interpolated.
    """
    last = avg.size - 1
    for b in range(avg.size):
        lo, hi = max(b - 1, 0), min(b + 1, last)
        a, s = min(avg[lo], avg[b], avg[hi]), min(std[lo], std[b], std[hi])
        f = a + max(noise, cutoff * np.sqrt(s * s + noise * noise))
        floors[b] = f - 1e-6 * (abs(f) + 1.0)  # margin for the rounding of the interpolation below
    lowest = np.float32(floors.min())
    n = 0
    for begin in range(0, image.size, _BLOCK):
        stop = min(begin + _BLOCK, image.size)
        if _count_at_least(image[begin:stop], lowest) == 0:
            continue
        for i in range(begin, stop):
            v, b = image[i], bin_index[i]
            if b < 0 or not (np.float64(v) >= floors[b]) or (use_marker and v == marker):
                continue
            bg, sd = _interpolate(pixel_radius[i], centres, avg, std)
            x = np.float64(v)
            if x - bg > max(noise, cutoff * np.sqrt(sd * sd + noise * noise)) and abs(x) < np.inf:
                out_index[n] = i
                n += 1
    return n


@njit(cache=True, nogil=True)
def _interpolate(
    r: float, centres: np.ndarray, avg: np.ndarray, std: np.ndarray
) -> tuple[float, float]:  # pragma: no cover - compiled
    """Background and std at radius ``r``, as ``numpy.interp`` computes them (densify's rule): linear between
    the bracketing bin centres, the end values beyond them."""
    last = centres.size - 1
    if r <= centres[0] or last == 0:
        return np.float64(avg[0]), np.float64(std[0])
    if r >= centres[last]:
        return np.float64(avg[last]), np.float64(std[last])
    j = min(max(int((r - centres[0]) / (centres[1] - centres[0])), 0), last - 1)
    while j > 0 and r < centres[j]:
        j -= 1
    while j < last - 1 and r >= centres[j + 1]:
        j += 1
    dx, span = np.float64(r) - centres[j], np.float64(centres[j + 1]) - centres[j]
    bg = (np.float64(avg[j + 1]) - avg[j]) / span * dx + avg[j]
    return bg, (np.float64(std[j + 1]) - std[j]) / span * dx + std[j]


@njit(cache=True, nogil=True)
def _count_at_least(values: np.ndarray, floor: np.float32) -> int:  # pragma: no cover - compiled
    """How many of ``values`` reach ``floor``; a slice loop LLVM vectorises (peakfinder8._count_above)."""
    n = 0
    for k in range(values.size):
        n += np.float32(values[k]) >= floor
    return n


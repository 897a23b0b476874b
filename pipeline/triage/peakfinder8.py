"""numba kernels of peakfinder8 (Barty et al., J. Appl. Cryst. 2014; OM) and of the per-frame preparation around it.

Only kernels live here: they take and return arrays and scalars, allocate nothing, and know nothing of
geometry objects or parameter dataclasses (``hit_finder.HitFinder`` wires them up). Every image argument
is the flattened, C-contiguous (H·W,) view of a 2-D frame; ``width`` turns a flat index back into
(ss, fs). A mask is uint8, 1 = use.

Masking. The ring tables (``geometry.RingTable``) hold only pixels of the static mask; a pixel
masked for one frame only (Eiger's 2**bits − 1 marker, AGIPD's per-cell bad-pixel bits, a user's
per-frame mask) is written as NaN by the preparation kernels, and NaN fails every comparison, so the
ring statistics read no mask. Non-finite values count as masked everywhere: the few tests ±inf would
pass (seed, growth, local background, lit count) check finiteness after the cheap threshold test.

Ring statistics (step 2) run over a ring-major buffer of pixel values filled once per frame (gathered
in ring order for the sparse sampled table, scattered from a raster-order read for the full table);
each ring's slice then stays in L1/L2 for its five clipping passes.

Deliberate deviation from CrystFEL (``peakfinder8.c``): a local background whose variance is exactly 0
(all disc pixels equal) gets sigma 0.01, like a disc with no background pixel at all; CrystFEL sets the
peak's SNR to 0 then, which rejects every peak on a perfectly flat background. The local-background disc
is symmetric (−2·lbr … +2·lbr, as OM's peakfinder8 describes it), where CrystFEL's loop stops one pixel
short on the positive side.

Timings on the 2-core development VM (one core, Eiger 4M): full ring statistics ≈ 8 ms scatter + 5 ms
clipping; sampled ≈ 0.5 + 0.4 ms; seed scan + growth + local background ≈ 3 ms; lit count ≈ 1.5 ms.
"""

from __future__ import annotations

import numpy as np
from numba import njit

CLIP_ITERATIONS = 5  # hard-coded in OM and CrystFEL (peakfinder8's sigma clipping)
FLT_MAX = np.float32(np.finfo(np.float32).max)
FLT_MIN = np.float32(np.finfo(np.float32).tiny)  # C's FLT_MIN: the smallest *positive* normal float
_START_THRESHOLD = 1e9  # initial ±threshold of the clipping loop
_INF = np.float32(np.inf)
_NAN = np.float32(np.nan)
_NO_BACKGROUND_SIGMA = 0.01  # local sigma when the disc has no usable background pixel (CrystFEL's value)
_SCAN_BLOCK = 64  # pixels per vectorised pre-test of the seed scan
# A clipped variance at most this fraction of the squared distance to the pivot may be float32 residue of
# a window holding one value only; such a ring is checked exactly (_clip_ring).
_RESIDUE_SUSPECT = 1e-3

# Rows of the peak table ``find_peaks`` fills (one column per stored peak).
PEAK_FS, PEAK_SS, PEAK_INTENSITY, PEAK_SNR, PEAK_NPIX, PEAK_MAX_VALUE = range(6)
PEAK_ROWS = 6
_REJECTED, _ACCEPTED, _ACCEPTED_SATURATED = 0, 1, 2  # what _measure decides about a candidate

# Re-association lets LLVM vectorise the float reductions of the clipping passes; NaN and inf semantics
# are kept (no "nnan"/"ninf"), because frame-masked pixels are NaN in the value buffer.
_REDUCTION_MATH = {"reassoc", "contract", "nsz", "arcp"}


@njit(cache=True, nogil=True)
def prepare_eiger_image(
    raw: np.ndarray,  # uint8/16/32 (H·W,) as decoded
    static_mask: np.ndarray,  # uint8 (H·W,), 1 = use
    masked_value: int,  # 2**bit_depth − 1: what the DCU writes into gap, dead and masked pixels (pixel_mask_applied)
    lit_threshold: float,
    out_image: np.ndarray,  # float32 (H·W,), every element written; NaN where masked
    out_mask: np.ndarray,  # uint8 (H·W,), every element written
) -> int:  # pragma: no cover - compiled
    """One pass: float32 copy, per-frame mask = static AND (value != masked_value), and the lit-pixel count
    (masked-in pixels above ``lit_threshold``) so the pre-veto needs no second pass over the frame.

    Masked pixels are written as NaN, so the ring statistics need not read the mask (module docstring).
    """
    lit = 0
    threshold = np.float32(lit_threshold)
    for i in range(raw.size):
        v = raw[i]
        use = (static_mask[i] != 0) & (v != masked_value)
        f = np.float32(v) if use else _NAN
        out_image[i] = f
        out_mask[i] = use
        lit += f > threshold
    return lit


@njit(cache=True, nogil=True)
def apply_frame_mask(
    image: np.ndarray,  # float32 (H·W,)
    static_mask: np.ndarray,  # uint8 (H·W,), 1 = use
    frame_mask: np.ndarray,  # any integer type (H·W,)
    nonzero_is_bad: bool,  # True: bad-pixel bits (AGIPD's corrected ``image.mask``); False: 1 = good
    lit_threshold: float,
    out_image: np.ndarray,  # float32 (H·W,): the image, NaN where not used
    out_mask: np.ndarray,  # uint8 (H·W,): static AND frame mask AND finite
) -> int:  # pragma: no cover - compiled
    """A per-frame mask, in either convention, folded into a NaN-masked copy; returns the lit count."""
    lit = 0
    threshold = np.float32(lit_threshold)
    for i in range(image.size):
        v = image[i]
        use = (static_mask[i] != 0) & ((frame_mask[i] != 0) != nonzero_is_bad) & (np.abs(v) < _INF)
        f = v if use else _NAN
        out_image[i] = f
        out_mask[i] = use
        lit += f > threshold
    return lit


@njit(cache=True, nogil=True)
def count_lit_pixels(image: np.ndarray, mask: np.ndarray, threshold: float) -> int:  # pragma: no cover
    """Masked-in, finite pixels strictly above ``threshold`` (the lit-pixel pre-veto, docs/triage.md)."""
    lit = 0
    floor = np.float32(threshold)
    for i in range(image.size):
        v = image[i]
        lit += (v > floor) & (v < _INF) & (mask[i] != 0)  # branch-free: about 40 % of pixels are lit
    return lit


@njit(cache=True, nogil=True)
def gather_ring_values(image: np.ndarray, ring_pixels: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """``out[k] = image[ring_pixels[k]]``: the ring-major value buffer, read in ring order. Best for the
    sparse sampled table (≈ 0.3 ms for 150 k pixels of a 4M frame)."""
    for k in range(ring_pixels.size):
        out[k] = image[ring_pixels[k]]


@njit(cache=True, nogil=True)
def scatter_ring_values(
    image: np.ndarray, raster_pixels: np.ndarray, ring_position: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    """``out[ring_position[k]] = image[raster_pixels[k]]``: the same buffer, but the frame is read in raster
    order. For the full table this halves the cost (≈ 8 ms instead of ≈ 19 ms for a 4M frame on the
    development VM): reading every pixel in ring order misses the cache on almost every row jump, while
    scattered stores are absorbed by the store buffer."""
    for k in range(raster_pixels.size):
        out[ring_position[k]] = image[raster_pixels[k]]


@njit(cache=True, nogil=True)
def ring_statistics(
    values: np.ndarray,  # float32 ring-major buffer from gather_ring_values / scatter_ring_values
    ring_start: np.ndarray,  # int64 (n_rings + 1,): ring b is values[ring_start[b]:ring_start[b + 1]]
    adc_threshold: float,
    min_snr: float,
    offset: np.ndarray,  # float32 (n_rings,) out: clipped mean
    sigma: np.ndarray,  # float32 (n_rings,) out: clipped standard deviation
    upper: np.ndarray,  # float32 (n_rings,) out: seed/growth threshold
    kept: np.ndarray,  # float32 (n_rings,) out: pixels inside the last pass's window
) -> float:  # pragma: no cover - compiled
    """Five passes of symmetric sigma clipping per ring (peakfinder8's step 2, ``_clip_ring``); returns
    min(upper), a floor below which no pixel can seed, so the seed scan can skip the ring lookup for most
    pixels. Each ring's slice stays in L1/L2 for its five passes."""
    floor = FLT_MAX
    for ring in range(ring_start.size - 1):
        mean, std, high, n = _clip_ring(values[ring_start[ring] : ring_start[ring + 1]], adc_threshold, min_snr)
        offset[ring] = mean
        sigma[ring] = std
        upper[ring] = high
        kept[ring] = n
        floor = min(floor, high)
    return floor


@njit(cache=True, nogil=True)
def refine_degenerate_rings(
    image: np.ndarray,  # float32 (H·W,), NaN where masked for this frame
    full_pixels: np.ndarray,  # int32: the full ring table (every statically masked-in pixel, by ring)
    full_start: np.ndarray,  # int64 (n_rings + 1,)
    sampled_start: np.ndarray,  # int64 (n_rings + 1,): the sampled table the statistics came from
    adc_threshold: float,
    min_snr: float,
    offset: np.ndarray,  # float32 (n_rings,) in/out
    sigma: np.ndarray,  # float32 (n_rings,) in/out
    upper: np.ndarray,  # float32 (n_rings,) in/out
    kept: np.ndarray,  # float32 (n_rings,) from ring_statistics on the sample
    scratch: np.ndarray,  # float32, at least the longest full ring
) -> float:  # pragma: no cover - compiled
    """Fast mode's fallback: a ring whose sample says little about it is recomputed from all of its pixels,
    exactly as full mode computes it. That is a sample that ended with sigma 0 (every sampled pixel equal:
    all zero at low flux, or a flat background) or with less than half of it inside the last window.

    A sample of a hundred pixels from a ring of thousands sees no photon at 0.01 photons/pixel: an all-zero
    sample clips itself empty (upper = FLT_MAX) and every peak on the ring vanishes, and a sample that caught
    one pixel of a spot among zeros clips down to that spot (upper ≈ 80 photons). Rings with a genuine
    spread keep their sampled statistics, so on ordinary data this costs two comparisons per ring.
    Returns the new min(upper)."""
    floor = FLT_MAX
    for ring in range(offset.size):
        first, last = full_start[ring], full_start[ring + 1]
        sampled = sampled_start[ring + 1] - sampled_start[ring]
        if (sigma[ring] == 0.0 or 2 * kept[ring] < sampled) and last - first > sampled:
            n = last - first
            for k in range(n):
                scratch[k] = image[full_pixels[first + k]]
            mean, std, high, _ = _clip_ring(scratch[:n], adc_threshold, min_snr)
            offset[ring] = mean
            sigma[ring] = std
            upper[ring] = high
        floor = min(floor, upper[ring])
    return floor


@njit(cache=True, nogil=True)
def _clip_ring(ring_values: np.ndarray, adc_threshold: float, min_snr: float
               ) -> tuple[float, float, float, float]:  # pragma: no cover - compiled
    """One ring's five clipping passes: (mean, sigma, upper, pixels inside the window) after the last one.

    Per pass, the pixels strictly between the ring's lower and upper threshold give mean and sigma, then
    ``upper = max(adc_threshold, mean + min_snr·sigma)`` and ``lower = mean − min_snr·sigma``. A ring left
    empty gets ``upper = FLT_MAX`` and ``lower = FLT_MIN`` (the reference's quirk: a tiny positive number,
    so a ring emptied by σ = 0 also drops its zero and negative pixels on the next pass). Frame-masked
    pixels are NaN, which no comparison lets through.

    The first pass sums in float64; the next four sum ``v − previous mean`` in float32, which vectorises
    twice as wide and, being centred, loses no precision that matters for a threshold (relative error
    < 1e-4 of σ² for 25 k-pixel rings). A pass after one that emptied the ring has no mean to centre on
    and sums in float64 again (raw float32 sums of 3000 values of 1000 lose σ entirely). One case needs more: when every pixel inside the window has the
    same value, the reference's variance is exactly 0 but the centred float32 sums leave a residue
    (1e-4 … 1e-23), which shifts when the clipping empties the ring and so the final threshold. A variance
    that small next to the distance from the pivot is therefore checked exactly (``_single_value``).
    """
    adc = np.float32(adc_threshold)
    lower = np.float32(-_START_THRESHOLD)
    high = np.float32(_START_THRESHOLD)
    mean = 0.0
    std = 0.0
    n = 0.0
    for _ in range(CLIP_ITERATIONS):
        if n == 0:  # the first pass, or one after a pass that emptied the ring: no mean to centre on
            total, squares, n = _clipped_sums64(ring_values, lower, high)
            pivot = 0.0
        else:
            pivot = mean
            total, squares, n = _clipped_sums32(ring_values, lower, high, np.float32(pivot))
        if n == 0:
            mean = 0.0
            std = 0.0
            high = FLT_MAX
            lower = FLT_MIN
            continue
        centred_mean = total / n
        variance = squares / n - centred_mean * centred_mean
        mean = pivot + centred_mean
        if variance <= _RESIDUE_SUSPECT * centred_mean * centred_mean:
            single, value = _single_value(ring_values, lower, high)
            if single:
                mean, variance = value, 0.0
        std = np.sqrt(variance) if variance > 0.0 else 0.0
        high = max(adc, np.float32(mean + min_snr * std))
        lower = np.float32(mean - min_snr * std)
    return mean, std, high, n


@njit(cache=True, nogil=True)
def _single_value(values: np.ndarray, lower: np.float32, upper: np.float32
                  ) -> tuple[bool, float]:  # pragma: no cover - compiled
    """(True, v) when every value strictly between the bounds equals v; (False, 0) otherwise."""
    found = False
    first = np.float32(0.0)
    for k in range(values.size):
        v = values[k]
        if (v > lower) & (v < upper):
            if not found:
                found, first = True, v
            elif v != first:
                return False, 0.0
    return found, np.float64(first)


@njit(cache=True, nogil=True, fastmath=_REDUCTION_MATH)
def _clipped_sums64(
    values: np.ndarray, lower: np.float32, upper: np.float32
) -> tuple[float, float, float]:  # pragma: no cover - compiled
    """Σv, Σv², n over ``lower < v < upper`` in float64 (a select, not a branch, so the loop vectorises)."""
    total = 0.0
    squares = 0.0
    n = 0.0
    for k in range(values.size):
        v = values[k]
        inside = (v > lower) & (v < upper)
        x = np.float64(v) if inside else 0.0
        total += x
        squares += x * x
        n += np.float64(inside)  # a conditional expression here would stop the vectoriser
    return total, squares, n


@njit(cache=True, nogil=True, fastmath=_REDUCTION_MATH)
def _clipped_sums32(
    values: np.ndarray, lower: np.float32, upper: np.float32, pivot: np.float32
) -> tuple[float, float, float]:  # pragma: no cover - compiled
    """Σ(v − pivot), Σ(v − pivot)², n over ``lower < v < upper``, accumulated in float32 lanes."""
    total = np.float32(0.0)
    squares = np.float32(0.0)
    n = np.float32(0.0)
    for k in range(values.size):
        v = values[k]
        inside = (v > lower) & (v < upper)
        x = v - pivot if inside else np.float32(0.0)
        total += x
        squares += x * x
        n += np.float32(inside)
    return np.float64(total), np.float64(squares), np.float64(n)


@njit(cache=True, nogil=True)
def find_peaks(
    image: np.ndarray,  # float32 (H·W,)
    mask: np.ndarray,  # uint8 (H·W,)
    ring_index: np.ndarray,  # int32 (H·W,): rint(radius), every entry in 0 … n_rings − 1
    width: int,
    panels: np.ndarray,  # int32 (n, 4): [ss0, ss1, fs0, fs1], half-open
    offset: np.ndarray,  # float32 (n_rings,) from ring_statistics
    upper: np.ndarray,  # float32 (n_rings,) from ring_statistics
    seed_floor: float,  # min(upper), from ring_statistics
    min_snr: float,
    min_pixel_count: int,
    max_pixel_count: int,
    local_bg_radius: int,
    taken: np.ndarray,  # uint8 (H·W,) all zero on entry, all zero again on return
    marked: np.ndarray,  # int32 (H·W,) work list: every pixel grown into a candidate peak
    peaks: np.ndarray,  # float32 (PEAK_ROWS, max_num_peaks) out: the first peaks found
    saturation: float,  # a peak whose brightest pixel reaches this is saturated; 0 = none is
    saturated: np.ndarray,  # int64 (1,) out: accepted peaks that are saturated (all of them, stored or not)
) -> int:  # pragma: no cover - compiled
    """Steps 3–9 of peakfinder8 (Barty et al., J. Appl. Cryst. 2014) over every panel; returns the number of
    accepted peaks (all of them, even beyond the ``peaks.shape[1]`` stored).

    A seed is a masked-in pixel above its ring's threshold, not taken, at least one pixel inside its
    panel. Rows are pre-tested in blocks of ``_SCAN_BLOCK`` pixels against ``seed_floor`` with a
    vectorised loop, so the ring lookup runs only for the rare candidate pixels.
    """
    n_marked = 0
    n_peaks = 0
    saturated[0] = 0
    floor = np.float32(seed_floor)
    for p in range(panels.shape[0]):
        ss0, ss1, fs0, fs1 = panels[p, 0], panels[p, 1], panels[p, 2], panels[p, 3]
        for ss in range(ss0 + 1, ss1 - 1):
            row = ss * width
            scan = image[row + fs0 + 1 : row + fs1 - 1]  # the panel's row without its border pixels
            for block in range(0, scan.size, _SCAN_BLOCK):
                if _count_above(scan[block : block + _SCAN_BLOCK], floor) == 0:
                    continue
                for fs in range(fs0 + 1 + block, min(fs0 + 1 + block + _SCAN_BLOCK, fs1 - 1)):
                    seed = row + fs
                    v = image[seed]
                    if not (v > floor and v > upper[ring_index[seed]]):
                        continue
                    if taken[seed] != 0 or mask[seed] == 0 or not np.isfinite(v):
                        continue
                    first = n_marked
                    n_marked = _grow(
                        image, mask, ring_index, width, ss0, ss1, fs0, fs1, upper, seed, taken, marked, n_marked
                    )
                    outcome = _measure(
                        image, mask, ring_index, width, ss0, ss1, fs0, fs1, offset, upper, taken, marked, first,
                        n_marked, min_snr, min_pixel_count, max_pixel_count, local_bg_radius, peaks, n_peaks,
                        saturation,
                    )
                    if outcome != _REJECTED:
                        n_peaks += 1
                        saturated[0] += outcome == _ACCEPTED_SATURATED
    for k in range(n_marked):
        taken[marked[k]] = 0
    return n_peaks


@njit(cache=True, nogil=True)
def _count_above(values: np.ndarray, floor: np.float32) -> int:  # pragma: no cover - compiled
    """How many of ``values`` exceed ``floor``; written over a slice so that LLVM vectorises it (the
    same test inlined in the row loop ran 5× slower)."""
    n = 0
    for k in range(values.size):
        n += values[k] > floor
    return n


@njit(cache=True, nogil=True)
def _grow(
    image: np.ndarray, mask: np.ndarray, ring_index: np.ndarray, width: int,
    ss0: int, ss1: int, fs0: int, fs1: int, upper: np.ndarray, seed: int,
    taken: np.ndarray, marked: np.ndarray, n_marked: int,
) -> int:  # pragma: no cover - compiled
    """Step 4: 8-connected breadth-first fill from ``seed`` inside the panel; the new pixels are appended
    to ``marked`` (the queue itself) and the new list length is returned.

    Every grown pixel stays taken whether the candidate is accepted or not: a rejected cluster would be
    regrown identically from each of its pixels, so keeping them marked changes no result and saves the
    work (CrystFEL keeps them marked too).
    """
    taken[seed] = 1
    marked[n_marked] = seed
    n_marked += 1
    head = n_marked - 1
    while head < n_marked:
        q = marked[head]
        head += 1
        qss = q // width
        qfs = q - qss * width
        for nss in range(max(qss - 1, ss0), min(qss + 2, ss1)):
            for nfs in range(max(qfs - 1, fs0), min(qfs + 2, fs1)):
                n = nss * width + nfs
                if taken[n] != 0:
                    continue
                w = image[n]
                if w > upper[ring_index[n]] and mask[n] != 0 and np.isfinite(w):
                    taken[n] = 1
                    marked[n_marked] = n
                    n_marked += 1
    return n_marked


@njit(cache=True, nogil=True)
def _measure(
    image: np.ndarray, mask: np.ndarray, ring_index: np.ndarray, width: int,
    ss0: int, ss1: int, fs0: int, fs1: int, offset: np.ndarray, upper: np.ndarray,
    taken: np.ndarray, marked: np.ndarray, first: int, end: int,
    min_snr: float, min_pixel_count: int, max_pixel_count: int, local_bg_radius: int,
    peaks: np.ndarray, n_peaks: int, saturation: float,
) -> int:  # pragma: no cover - compiled
    """Steps 5–9 for the candidate ``marked[first:end]``: ``_ACCEPTED`` or ``_ACCEPTED_SATURATED`` (its
    brightest raw pixel at or above ``saturation`` > 0; stored in column ``n_peaks`` of ``peaks`` if there is
    room), or ``_REJECTED``."""
    npix = end - first
    if npix < min_pixel_count or npix > max_pixel_count:  # step 5, inclusive
        return _REJECTED
    # First centre of mass, weighted by I − offset of each pixel's own ring (step 4).
    sum_i = 0.0
    sum_fs = 0.0
    sum_ss = 0.0
    for k in range(first, end):
        q = marked[k]
        qss = q // width
        qfs = q - qss * width
        weight = np.float64(image[q]) - offset[ring_index[q]]
        sum_i += weight
        sum_fs += weight * qfs
        sum_ss += weight * qss
    if abs(sum_i) < 1e-10:
        return _REJECTED
    com_fs = int(np.rint(sum_fs / abs(sum_i)))
    com_ss = int(np.rint(sum_ss / abs(sum_i)))
    # Step 6: local background over a disc of radius 2·local_bg_radius, clipped to the panel.
    radius = 2 * local_bg_radius
    bg_n = 0
    bg_sum = 0.0
    bg_squares = 0.0
    bg_max = 0.0
    for bss in range(max(com_ss - radius, ss0), min(com_ss + radius + 1, ss1)):
        dss = bss - com_ss
        for bfs in range(max(com_fs - radius, fs0), min(com_fs + radius + 1, fs1)):
            dfs = bfs - com_fs
            if dss * dss + dfs * dfs > radius * radius:
                continue
            b = bss * width + bfs
            w = image[b]
            if w < upper[ring_index[b]] and taken[b] == 0 and mask[b] != 0 and np.isfinite(w):
                x = np.float64(w)
                bg_n += 1
                bg_sum += x
                bg_squares += x * x
                bg_max = max(bg_max, x)
    if bg_n > 0:
        local_offset = bg_sum / bg_n
        variance = bg_squares / bg_n - local_offset * local_offset
        local_sigma = np.sqrt(variance) if variance > 0.0 else _NO_BACKGROUND_SIGMA
    else:
        local_offset = np.float64(offset[ring_index[com_ss * width + com_fs]])
        local_sigma = _NO_BACKGROUND_SIGMA
    # Step 7: re-integration with the local offset; centre of mass weighted by raw intensities.
    total = 0.0
    raw_total = 0.0
    raw_fs = 0.0
    raw_ss = 0.0
    max_value = 0.0
    raw_max = -np.inf
    for k in range(first, end):
        q = marked[k]
        qss = q // width
        qfs = q - qss * width
        x = np.float64(image[q])
        total += x - local_offset
        raw_total += x
        raw_fs += x * qfs
        raw_ss += x * qss
        max_value = max(max_value, x - local_offset)
        raw_max = max(raw_max, x)
    if abs(raw_total) < 1e-10:
        return _REJECTED
    peak_fs = raw_fs / abs(raw_total)
    peak_ss = raw_ss / abs(raw_total)
    # Step 8: acceptance.
    snr = total / local_sigma
    if snr < min_snr or max_value < bg_max - local_offset:
        return _REJECTED
    if peak_fs < fs0 or peak_fs > fs1 - 1 or peak_ss < ss0 or peak_ss > ss1 - 1:
        return _REJECTED
    if n_peaks < peaks.shape[1]:
        peaks[PEAK_FS, n_peaks] = peak_fs
        peaks[PEAK_SS, n_peaks] = peak_ss
        peaks[PEAK_INTENSITY, n_peaks] = total
        peaks[PEAK_SNR, n_peaks] = snr
        peaks[PEAK_NPIX, n_peaks] = npix
        peaks[PEAK_MAX_VALUE, n_peaks] = max_value
    return _ACCEPTED_SATURATED if 0.0 < saturation <= raw_max else _ACCEPTED

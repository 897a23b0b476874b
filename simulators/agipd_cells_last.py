"""Numba kernel that assembles a train in the ``online`` (cells-last) layout from pool slots.

In online order the pulse axis is innermost, so writing frame by frame stores every value 2·cells bytes
apart; numpy does that, or the equivalent transpose of a file-order train, at ≈ 0.5 s per 64-cell raw
train (≈ 4 ns per element). Walking the output in memory order instead reads at most
``LIT_SLOTS + DARK_SLOTS`` slot rows per output row, all in L1, and stores contiguously: ≈ 0.15–0.2 s.

Both numba's import (≈ 0.4 s) and compilation (≈ 1 s per dtype, less from the on-disk cache of
``cache=True``) are deferred to the first online train, so ``import detpipe.simulators`` stays cheap
and file-layout simulators never pay them; the simulator calls ``warm_up`` for its dtype when it starts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np


def warm_up(dtype: np.dtype) -> None:
    """Compile (or load from cache) the kernel for ``dtype`` now."""
    slots = np.zeros((1, 1, 1, 1), dtype=dtype)
    fill_cells_last(slots, np.zeros(1, np.intp), np.zeros((1, 1), dtype=dtype), np.empty((1, 1, 1, 1), dtype=dtype))


def fill_cells_last(slots: np.ndarray, slot_of_cell: np.ndarray, shift: np.ndarray, out: np.ndarray) -> None:
    """``out[l, f, s, c] = slots[slot_of_cell[c], l, f, s] + shift[c, l]``.

    ``slots`` (P, L, FS, SS), ``shift`` (C, L) and ``out`` (L, FS, SS, C) share one dtype; for unsigned
    integers the sum wraps modulo 2**bits, so a negative shift may be passed as its two's complement.
    """
    _compiled()(slots, slot_of_cell, shift, out)


@functools.cache
def _compiled() -> Callable[..., None]:
    from numba import njit  # deferred on purpose: see the module docstring

    return njit(cache=True, nogil=True)(_fill_cells_last)


def _fill_cells_last(slots: np.ndarray, slot_of_cell: np.ndarray, shift: np.ndarray, out: np.ndarray) -> None:
    lines, fs_size, ss_size, cells = out.shape
    for line in range(lines):
        for f in range(fs_size):
            for s in range(ss_size):
                for c in range(cells):
                    out[line, f, s, c] = slots[slot_of_cell[c], line, f, s] + shift[c, line]

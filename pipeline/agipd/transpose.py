"""The numba kernel that turns AGIPD's online pixel order (…, fs, ss, pulse) into file order (pulse, …, ss, fs).

The online pipeline sends ``(module, fs, ss, pulse)`` (as karabo-bridge-py's simulator does), so the canonical
train needs a full transposed copy of every online train; it is the receiver's most expensive step. NumPy's
``copyto(out, a.transpose(3, 0, 2, 1))`` walks one side with a 128 KiB or 4 MiB stride and took 0.9 s
per 64-cell corrected train (256 MiB) on the 2-core development VM; this tiled loop (8 × 8 pixel tiles,
16 rows of ss per tile, so both sides stay within a few pages per tile) took 0.13–0.25 s. It is
single-threaded on purpose: the receiver thread owns it and the other cores belong to later stages.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_TILE = 8  # pulses × fast-scan pixels per tile (32 or 64 B rows: one cache line on either side)
_ROWS = 16  # slow-scan rows per tile


@njit(cache=True, nogil=True)
def _transpose_tiled(src: np.ndarray, dst: np.ndarray) -> None:  # pragma: no cover - compiled
    blocks, nfs, nss, npulse = src.shape
    for k in range(blocks):
        for s0 in range(0, nss, _ROWS):
            s1 = min(s0 + _ROWS, nss)
            for f0 in range(0, nfs, _TILE):
                f1 = min(f0 + _TILE, nfs)
                for p0 in range(0, npulse, _TILE):
                    p1 = min(p0 + _TILE, npulse)
                    for ss in range(s0, s1):
                        for fs in range(f0, f1):
                            for p in range(p0, p1):
                                dst[p, k, ss, fs] = src[k, fs, ss, p]


def online_to_file(src: np.ndarray, dst: np.ndarray) -> None:
    """Copy ``src[k, fs, ss, p]`` into ``dst[p, k, ss, fs]``; ``k`` is any leading block (module, module×gain).

    ``dst`` may be a strided view (one module of a train, or its analog plane); dtypes may differ only
    where the assignment is a plain cast (uint16 gain into a uint8 plane). Releases the GIL.
    """
    if src.ndim != 4 or dst.shape != (src.shape[3], src.shape[0], src.shape[2], src.shape[1]):
        raise ValueError(f"cannot transpose {src.shape} online into {dst.shape} file order")
    if src.size:
        _transpose_tiled(src, dst)


def warm_up() -> None:
    """Compile (or load from the numba cache) the common signatures now, not on the first train: a
    first-train stall of about a second would back up the bridge."""
    for dtype in (np.float32, np.uint16):
        src = np.zeros((2, 2, 2, 2), dtype)
        dst = np.zeros((2, 2, 2, 2, 2), dtype)
        online_to_file(src, dst[:, :, 0])  # strided destination
        online_to_file(src, np.zeros((2, 2, 2, 2), dtype))  # contiguous destination

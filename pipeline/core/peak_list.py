"""What triage learns about one image: its peak list (Cheetah/CrystFEL CXI columns) and the hit decision."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, slots=True, eq=False)
class PeakList:
    """The stored peaks of one image, at most ``max_num_peaks`` of them, in the order peakfinder8 found them.

    Coordinates are pixel *indices* ((0, 0) = centre of the first pixel, Cheetah/OM convention):
    ``fs`` is the fast-scan (column) and ``ss`` the slow-scan (row) centre of mass. For AGIPD the image is
    the stacked (16·512, 128) frame, so ``ss = module·512 + ss_in_module``. ``intensity`` is the
    background-subtracted integrated signal, ``snr`` = intensity / local sigma, ``npix`` the pixel count,
    ``max_value`` the brightest background-subtracted pixel. All arrays are float32 and of equal length.
    """

    fs: NDArray[np.float32]
    ss: NDArray[np.float32]
    intensity: NDArray[np.float32]
    snr: NDArray[np.float32]
    npix: NDArray[np.float32]
    max_value: NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.fs.shape[0])

    @classmethod
    def empty(cls) -> PeakList:
        nothing = np.zeros(0, dtype=np.float32)
        return cls(nothing, nothing, nothing, nothing, nothing, nothing)


@dataclass(frozen=True, slots=True, eq=False)
class FrameTriage:
    """The triage outcome of one image (an Eiger frame, or one memory cell of an AGIPD train).

    ``n_peaks`` counts every accepted peak, even beyond the ``max_num_peaks`` stored in ``peaks`` (OM's API
    reports the capped count; counting all keeps a frame of thousands of spurious peaks out of a
    ``max_peaks`` hit rule), so the hit rule can be re-applied offline. ``vetoed`` is True when the lit-pixel pre-veto
    decided "miss" and peakfinder8 did not run (``n_peaks`` is then 0). ``lit_pixels`` counts masked-in
    pixels above ``lit_pixel_threshold``. ``time_ms`` is the worker's time for this image, decoding included.
    """

    n_peaks: int
    peaks: PeakList
    lit_pixels: int
    is_hit: bool
    vetoed: bool = False
    n_saturated: int = 0  # accepted peaks whose brightest pixel reached the saturation value
    time_ms: float = 0.0

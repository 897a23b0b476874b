"""How one frame of a master's image stack becomes a flat picture, and where a peak lands on it.

An EIGER frame is already the picture; its gaps and dead pixels (``pixel_mask`` bits, and the value 2**bits-1
the detector writes there) become 0, so an autoscaling viewer is not blinded by 65535s. An AGIPD frame is 16
modules; they are placed as the detector sees them (the quadrant geometry triage uses, in ``agipd.geometry``),
raw data by their analog value. Peak positions are stored in the triage's coordinates (EIGER: the frame; AGIPD:
the 16 modules stacked along slow scan), so they are mapped through the same placement.
"""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np
from numpy.typing import NDArray

from ..agipd.geometry import MODULE_SS, agipd_pixel_positions
from ..core.frame import masked_pixel_value
from .run_files import RunKind

PIXEL_MASK_PATH = "/entry/instrument/detector/pixel_mask"


@dataclass(frozen=True)
class DisplayLayout:
    """``mask`` is True where the picture has no valid pixel (gap, masked, between modules)."""

    kind: RunKind
    mask: NDArray[np.bool_]
    invalid_value: int | None = None  # EIGER: the value a masked pixel holds, 2**bits - 1
    columns: NDArray[np.intp] | None = None  # AGIPD: picture column and row of each (module, ss, fs) pixel
    rows: NDArray[np.intp] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape  # type: ignore[return-value]

    def picture(self, frame: np.ndarray) -> NDArray[np.float32]:
        """The frame as a float32 picture, 0 wherever no valid pixel is."""
        if self.kind is RunKind.EIGER:
            picture = frame.astype(np.float32)
            invalid = self.mask | ~np.isfinite(picture)
            if self.invalid_value is not None:
                invalid |= frame == self.invalid_value
            picture[invalid] = 0.0
            return picture
        assert self.rows is not None and self.columns is not None
        modules = frame[:, 0] if frame.ndim == 4 else frame  # raw: (module, analog/digital, ss, fs)
        picture = np.zeros(self.shape, np.float32)
        picture[self.rows, self.columns] = np.nan_to_num(modules.astype(np.float32), nan=0.0)
        return picture

    def peak_positions(self, fs: np.ndarray, ss: np.ndarray) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Picture (x, y) of peaks at triage coordinates (``fs``, ``ss``)."""
        if self.kind is RunKind.EIGER:
            return np.asarray(fs, np.float64), np.asarray(ss, np.float64)
        assert self.rows is not None and self.columns is not None
        ss_px = np.clip(np.rint(ss).astype(np.intp), 0, self.rows.size // self.rows.shape[-1] - 1)
        fs_px = np.clip(np.rint(fs).astype(np.intp), 0, self.rows.shape[-1] - 1)
        module, row = np.divmod(ss_px, MODULE_SS)
        return (self.columns[module, row, fs_px].astype(np.float64),
                self.rows[module, row, fs_px].astype(np.float64))


def display_layout(handle: h5py.File, kind: RunKind) -> DisplayLayout:
    stack = handle["/entry/data/data"]
    if kind is RunKind.EIGER:
        mask = np.zeros(stack.shape[1:], bool)
        if PIXEL_MASK_PATH in handle:
            mask = handle[PIXEL_MASK_PATH][()] != 0
        return DisplayLayout(kind, mask, invalid_value=masked_pixel_value(stack.dtype))
    x, y = agipd_pixel_positions()
    # Viewed along the beam x grows to the left and y upwards; pixel centres sit on half pixels, and floor
    # (not rint, which rounds halves to even) keeps neighbours apart.
    columns = np.floor(x.max() - x).astype(np.intp)
    rows = np.floor(y.max() - y).astype(np.intp)
    covered = np.zeros((rows.max() + 1, columns.max() + 1), bool)
    covered[rows, columns] = True
    return DisplayLayout(kind, ~covered, columns=columns, rows=rows)

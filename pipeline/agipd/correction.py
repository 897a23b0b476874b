"""The optional AGIPD correction stage: raw trains in, corrected trains (photons) out.

``stage = (digital > t0) + (digital > t1)``; ``photons = (analog − offset[stage]) × relgain[stage]`` with
``offset = offset_pixel[m, stage] + offset_cell[m, row(cellId), stage]`` (European XFEL AGIPD documentation,
docs/agipd_constants.md). The output carries ``gain`` = stage (uint8) and ``mask`` (uint32): bit 0
(``MASK_UNKNOWN_CELL``) for a cellId the constants do not describe, bit 1 (``MASK_NOT_FINITE``) for a
NaN/inf result. An unknown cell is flagged, never a crash: it is corrected with the per-pixel offset
alone. Corrected trains pass through unchanged, and the raw train is never modified, so a data policy
that keeps raw still writes the detector's bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..core.errors import FrameRejected
from ..core.series import EndOfSeries, SeriesStart
from ..core.stage_stats import StageStats
from ..core.train import AGIPD_MODULES, MODULE_SHAPE, Product, Train
from .constants import AgipdConstants, load_constants
from .correction_kernel import MASK_NOT_FINITE, MASK_UNKNOWN_CELL, correct_train

__all__ = ["AgipdCorrection", "AgipdCorrectionStats", "MASK_NOT_FINITE", "MASK_UNKNOWN_CELL"]


@dataclass
class AgipdCorrectionStats(StageStats):
    """Stage counters plus what the mask bits flag: frames whose cellId the constants lack, and pixels
    whose corrected value is not finite (both are masked, not rejected)."""

    frames_unknown_cell: int = 0
    pixels_not_finite: int = 0

    def reset(self) -> None:
        super().reset()
        self.frames_unknown_cell = self.pixels_not_finite = 0


class AgipdCorrection:
    """A pipeline stage (``Stage`` protocol) over ``Train`` items; ``stats`` counts trains.

    Cost of a 64-cell raw train (128 MiB in; 256 MiB float32, 64 MiB gain, 256 MiB mask out): 170–185 ms
    on the 2-core development VM, allocation of the outputs included; single-threaded numba
    (correction_kernel).
    """

    def __init__(self, constants: AgipdConstants | Path | str) -> None:
        """``constants`` is a loaded ``AgipdConstants`` or the path of a constants file."""
        self.constants = constants if isinstance(constants, AgipdConstants) else load_constants(constants)
        self.stats = AgipdCorrectionStats()
        self._warm_up()

    def start_series(self, start: SeriesStart) -> None:
        """Nothing per series: the constants are fixed for the stage's lifetime."""

    def process(self, frame: Train) -> Train:
        """The corrected train for a raw one; a corrected train as it is. Raises ``FrameRejected``
        (``wrong_shape``, ``wrong_dtype``) for a raw train that is not (frames, 16, 2, 512, 128) uint16."""
        if frame.product is Product.CORRECTED:
            return frame
        out = self.correct(frame)
        self.stats.processed += 1
        self.stats.bytes_processed += frame.nbytes
        return out

    def correct(self, train: Train) -> Train:
        raw = train.data
        if raw.dtype != np.uint16:
            raise FrameRejected("wrong_dtype", f"raw train {train.train_id} is {raw.dtype}, not uint16")
        if raw.ndim != 5 or raw.shape[1:] != (AGIPD_MODULES, 2, *MODULE_SHAPE):
            raise FrameRejected("wrong_shape", f"raw train {train.train_id} has shape {raw.shape}")
        if train.cell_ids.shape != (raw.shape[0],):
            raise FrameRejected("wrong_shape", f"train {train.train_id}: {train.cell_ids.shape} cellIds")
        shape = (raw.shape[0], AGIPD_MODULES, *MODULE_SHAPE)
        data = np.empty(shape, np.float32)  # the kernel writes every element, missing modules as 0
        gain = np.empty(shape, np.uint8)
        mask = np.empty(shape, np.uint32)
        c = self.constants
        rows = c.cell_rows(train.cell_ids)
        self.stats.frames_unknown_cell += int((rows < 0).sum())
        self.stats.pixels_not_finite += correct_train(
            np.ascontiguousarray(raw), rows, np.asarray(train.modules_present, bool),
            c.threshold, c.offset_pixel, c.offset_cell, c.relgain, data, gain, mask,
        )
        return replace(train, product=Product.CORRECTED, data=data, gain=gain, mask=mask)

    def finish(self, end: EndOfSeries) -> None:
        """Nothing to flush: every train is complete when it leaves ``process``."""

    def abort(self, reason: str) -> None:
        """No files or buffers to release."""

    def _warm_up(self) -> None:
        """Compile (or load from numba's cache) the kernel for writeable and read-only raw buffers now:
        a 64-cell train arriving during a compile would wait about a second."""
        raw = np.zeros((1, AGIPD_MODULES, 2, 1, 1), np.uint16)
        c = self.constants
        pixel = (..., slice(0, 1), slice(0, 1))
        constants = [np.ascontiguousarray(a[pixel]) for a in (c.threshold, c.offset_pixel, c.relgain)]
        for data in (raw, _read_only(raw)):  # the signature differs for a received (read-only) buffer
            out = np.zeros((1, AGIPD_MODULES, 1, 1), np.float32)
            correct_train(
                data, np.zeros(1, np.int32), np.ones(AGIPD_MODULES, bool), constants[0], constants[1],
                c.offset_cell, constants[2], out, np.zeros(out.shape, np.uint8), np.zeros(out.shape, np.uint32),
            )


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view

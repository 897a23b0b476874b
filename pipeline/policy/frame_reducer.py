"""The pixel side of an Eiger RED frame: spatial selection, precision rounding, 2×2 binning or sparsification,
then bitshuffle-LZ4, in the order of reduction_params.

When no step changes pixels (event selection only), a kept frame's chunk is copied as the detector
compressed it, never decoded. ``reduce`` is pure (it returns what the frame adds to the run's metrics instead of
counting it), so the data policy stage reduces several kept frames at once on its reduction threads. Otherwise the chunk is decoded once and re-compressed once, with the same
chunk layout as the detector's (12-byte header, 8192-byte blocks), so RED files read like raw ones.
Dropped pixels (outside the kept modules/ROIs) hold the Eiger masked-pixel value 2**bits − 1 and bit 8
("user-defined mask") of the RED ``pixel_mask``, so every NXmx reader already ignores them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from ..core.chunk_framing import bslz4_chunk, decode_chunk_pixels
from ..core.frame import Encoding, Frame, masked_pixel_value
from ..core.series import DetectorConfig, SeriesStart
from ..eiger.panels import eiger_panels
from .pixel_binning import bin2x2, bin_pixel_mask
from .pixel_selection import kept_pixel_mask, select_pixels
from .precision_rounding import RoundingError, round_precision
from .reduction_params import ReductionParams
from .reduction_stats import ReductionStats
from .sparse_frames import RadialBins, SparseFrame, sparsify

NOT_KEPT_MASK_BIT = np.uint32(1 << 8)  # NXmx pixel_mask bit 8: user-defined mask


def _radius_map(config: DetectorConfig) -> NDArray[np.float32]:
    height, width = config.shape
    cx = width / 2.0 if config.beam_center_x_px is None else float(config.beam_center_x_px)
    cy = height / 2.0 if config.beam_center_y_px is None else float(config.beam_center_y_px)
    rows = np.arange(height, dtype=np.float32)[:, None] - np.float32(cy)
    cols = np.arange(width, dtype=np.float32)[None, :] - np.float32(cx)
    return np.hypot(rows, cols).astype(np.float32)


@dataclass(slots=True)
class ReducedFrame:
    """One kept frame reduced (``red``: a RED frame or its sparse form), and what it adds to the run's metrics."""

    red: Frame | SparseFrame
    bytes_kept_uncompressed: int
    pixels_considered: int
    pixels_dropped: int = 0
    rounding: RoundingError | None = None

    def count_into(self, stats: ReductionStats) -> None:
        stats.bytes_kept_uncompressed += self.bytes_kept_uncompressed
        stats.pixels_considered += self.pixels_considered
        stats.pixels_dropped += self.pixels_dropped
        if self.rounding is not None:
            stats.rounding.merge(self.rounding)


class EigerFrameReducer:
    """Reduces the kept frames of one series (pure: the same frame always gives the same bytes)."""

    def __init__(self, params: ReductionParams, start: SeriesStart) -> None:
        if start.config is None:
            raise ValueError("a RED series needs the detector configuration (image shape); the stream sent none "
                             "and the detector's REST config was not read")
        self.params = params
        self.config = start.config
        self.masked_value = masked_pixel_value(self.config.dtype)
        shape = self.config.shape
        self.valid: NDArray[np.bool_] = (np.ones(shape, dtype=bool) if start.pixel_mask is None
                                         else np.asarray(start.pixel_mask) == 0)
        self.kept: NDArray[np.bool_] | None = None
        if params.modules or params.rois:
            self.kept = kept_pixel_mask(shape, module_rectangles=eiger_panels(shape), modules=params.modules,
                                        rois=params.rois)
        self.bins: RadialBins | None = None
        if params.sparse:
            usable = self.valid if self.kept is None else self.valid & self.kept
            self.bins = RadialBins.build(_radius_map(self.config), usable, n_bins=params.sparse_radial_bins)
        self._valid_pixels = int(np.count_nonzero(self.valid))
        self._dropped_pixels = 0 if self.kept is None else int(np.count_nonzero(self.valid & ~self.kept))

    @staticmethod
    def check(params: ReductionParams, shape: tuple[int, int]) -> None:
        """Raises ``ConfigError`` at Prepare when the modules/ROIs do not fit the detector's images, rather than
        failing after Start."""
        if params.modules or params.rois:
            kept_pixel_mask(shape, module_rectangles=eiger_panels(shape), modules=params.modules, rois=params.rois)

    @property
    def changes_pixels(self) -> bool:
        return self.kept is not None or self.params.lossy

    def red_start(self, start: SeriesStart) -> SeriesStart:
        """The RED series' header: binning halves the image and doubles the pixels; dropped pixels are masked."""
        mask = None if start.pixel_mask is None else np.asarray(start.pixel_mask, dtype=np.uint32).copy()
        if self.kept is not None:
            mask = np.zeros(self.config.shape, np.uint32) if mask is None else mask
            mask[~self.kept] |= NOT_KEPT_MASK_BIT
        config = self.config
        if self.params.binning == 2:
            mask = None if mask is None else bin_pixel_mask(mask)
            config = replace(
                config, shape=(config.shape[0] // 2, config.shape[1] // 2),
                x_pixel_size_m=2 * config.x_pixel_size_m, y_pixel_size_m=2 * config.y_pixel_size_m,
                beam_center_x_px=None if config.beam_center_x_px is None else (config.beam_center_x_px - 0.5) / 2,
                beam_center_y_px=None if config.beam_center_y_px is None else (config.beam_center_y_px - 0.5) / 2,
            )
        return replace(start, config=config, pixel_mask=mask)

    def reduce(self, frame: Frame) -> ReducedFrame:
        """The RED frame (or its sparse form) made from a kept raw frame; it keeps the raw frame's index until the
        stage numbers it in the RED stack."""
        counts = {"bytes_kept_uncompressed": frame.nbytes_uncompressed, "pixels_considered": self._valid_pixels}
        if not self.changes_pixels:
            return ReducedFrame(frame, **counts)  # the detector's chunk as it is: no copy
        pixels = decode_chunk_pixels(frame.encoding, frame.blob, frame.shape, frame.dtype)
        if self.kept is not None:
            pixels = select_pixels(pixels, self.kept, self.masked_value)
        if self.bins is not None:
            sparse = sparsify(pixels, self.bins, threshold_sigma=self.params.sparse_threshold_sigma,
                              noise=self.params.sparse_noise, masked_value=self.masked_value)
            return ReducedFrame(sparse, **counts, pixels_dropped=self._valid_pixels - int(sparse.index.size))
        rounding = None
        if self.params.rounds:
            rounded = round_precision(pixels, mantissa_bits=self.params.mantissa_bits,
                                      step_exponent=self.params.rounding_exponent, masked_value=self.masked_value)
            rounding = RoundingError.of(pixels, rounded, self.valid, masked_value=self.masked_value)
            pixels = rounded
        if self.params.binning == 2:
            pixels = bin2x2(pixels, masked_value=self.masked_value)
        red = replace(frame, shape=(int(pixels.shape[0]), int(pixels.shape[1])),
                      encoding=Encoding.BSLZ4, blob=bslz4_chunk(pixels))
        return ReducedFrame(red, **counts, pixels_dropped=self._dropped_pixels, rounding=rounding)

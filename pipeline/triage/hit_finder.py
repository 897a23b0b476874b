"""Hit triage of one image: lit-pixel pre-veto, peakfinder8, hit rule (Barty et al., J. Appl. Cryst. 2014; OnDA/OM).

``HitFinder`` is a pure object: it owns its preallocated numba workspace and returns a ``FrameTriage``
per image; it keeps no statistics and never drops anything (the stage that wraps it decides). One
``HitFinder`` serves one thread: the workspace is reused by every call. Nothing is allocated per frame
except the returned peak arrays, the buffer bitshuffle decodes into (``triage_eiger``), and a float32
copy of an image that is not already C-contiguous float32.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..core.chunk_framing import decode_chunk_pixels
from ..core.errors import FrameRejected
from ..core.frame import Encoding
from ..core.peak_list import FrameTriage, PeakList
from ..core.triage_params import TriageParams
from . import peakfinder8 as pf8
from .geometry import TriageGeometry

AGIPD_PIXELS = 16 * 512 * 128


@dataclass(frozen=True, slots=True, eq=False)
class _Workspace:
    """Buffers reused by every frame, sized once from the geometry and parameters: ≈ 60 MB for an
    Eiger 4M in full mode (four per-pixel arrays plus the ring-major values), ≈ 45 MB in fast mode."""

    image: NDArray[np.float32]  # (H·W,) prepared Eiger frame
    mask: NDArray[np.uint8]  # (H·W,) per-frame mask
    taken: NDArray[np.uint8]  # (H·W,) zero between frames
    marked: NDArray[np.int32]  # (H·W,)
    values: NDArray[np.float32]  # ring-major pixel values, one per ring-table entry
    offset: NDArray[np.float32]  # (n_rings,)
    sigma: NDArray[np.float32]
    upper: NDArray[np.float32]
    kept: NDArray[np.float32]  # (n_rings,) pixels inside each ring's last clipping window
    saturated: NDArray[np.int64]  # (1,) saturated peaks of the last image
    ring_scratch: NDArray[np.float32]  # fast mode: the longest full ring, for refine_degenerate_rings
    peaks: NDArray[np.float32]  # (PEAK_ROWS, max_num_peaks)

    @classmethod
    def for_geometry(cls, geometry: TriageGeometry, *, fast_mode: bool, max_num_peaks: int) -> _Workspace:
        pixels = geometry.radius.size
        rings = geometry.n_rings
        return cls(
            image=np.zeros(pixels, dtype=np.float32),
            mask=np.zeros(pixels, dtype=np.uint8),
            taken=np.zeros(pixels, dtype=np.uint8),
            marked=np.zeros(pixels, dtype=np.int32),
            values=np.zeros(geometry.rings(fast_mode=fast_mode).n_pixels, dtype=np.float32),
            offset=np.zeros(rings, dtype=np.float32),
            sigma=np.zeros(rings, dtype=np.float32),
            upper=np.zeros(rings, dtype=np.float32),
            kept=np.zeros(rings, dtype=np.float32),
            saturated=np.zeros(1, dtype=np.int64),
            ring_scratch=np.zeros(int(np.diff(geometry.full_rings.start).max(initial=0)) if fast_mode else 0,
                                  dtype=np.float32),
            peaks=np.zeros((pf8.PEAK_ROWS, max_num_peaks), dtype=np.float32),
        )


class HitFinder:
    """Finds Bragg peaks in one image and applies the hit rule ``min_peaks <= n_peaks <= max_peaks`` (and, when
    ``max_saturated_peaks >= 0``, at most that many saturated peaks).

    ``geometry`` must describe the images (shape, panels, radius); when it was built for another radius
    cut or ring sample size than ``params`` asks for, it is rebuilt once here. Images are float32 in the
    detector's unit (counts for an Eiger, photons for corrected AGIPD), the thresholds of ``params`` too.
    Non-finite pixels are treated as masked.
    """

    def __init__(self, geometry: TriageGeometry, params: TriageParams) -> None:
        self.params = params
        self.geometry = geometry.for_params(params)
        self._rings = self.geometry.rings(fast_mode=params.fast_mode)
        self._static_mask = self.geometry.mask.reshape(-1)
        self._ring_index = self.geometry.ring_index.reshape(-1)
        self._work = _Workspace.for_geometry(
            self.geometry, fast_mode=params.fast_mode, max_num_peaks=params.max_num_peaks
        )

    @property
    def shape(self) -> tuple[int, int]:
        return self.geometry.shape

    # -- public entry points ------------------------------------------------------------------------
    def triage(self, image: NDArray[np.float32], mask: NDArray[np.uint8] | None = None) -> FrameTriage:
        """Triage a prepared float32 (H, W) image; ``mask`` (nonzero = good) is AND-ed with the geometry's."""
        t0 = time.perf_counter()
        flat = self._flat_image(image)
        if mask is None:
            lit = pf8.count_lit_pixels(flat, self._static_mask, self.params.lit_pixel_threshold)
            return self._finish(flat, self._static_mask, lit, t0)
        work = self._work
        lit = pf8.apply_frame_mask(
            flat, self._static_mask, self._flat_mask(mask), False, self.params.lit_pixel_threshold, work.image,
            work.mask,
        )
        return self._finish(work.image, work.mask, lit, t0)

    def triage_eiger(
        self, encoding: Encoding, blob: bytes | memoryview, shape: tuple[int, int], dtype: np.dtype
    ) -> FrameTriage:
        """Decode one Eiger frame blob (bslz4, lz4 or raw) and triage it; ``time_ms`` includes decoding.

        Pixels equal to 2**bits − 1 are masked (the DCU's marker for gap, dead and masked pixels
        when pixel_mask_applied is set). Raises ``FrameRejected`` ("shape_mismatch", "undecodable") for a frame that
        cannot be triaged.
        """
        t0 = time.perf_counter()
        dtype = np.dtype(dtype)
        if tuple(shape) != self.shape:
            raise FrameRejected("shape_mismatch", f"frame shape {tuple(shape)} is not the geometry's {self.shape}")
        if dtype.kind != "u":
            raise FrameRejected("dtype_mismatch", f"Eiger pixels are unsigned integers, got {dtype}")
        try:
            raw = decode_chunk_pixels(encoding, blob, tuple(shape), dtype)
        except ValueError as err:
            raise FrameRejected("undecodable", str(err)) from err
        work = self._work
        lit = pf8.prepare_eiger_image(
            np.ascontiguousarray(raw).reshape(-1),
            self._static_mask,
            (1 << (8 * dtype.itemsize)) - 1,
            self.params.lit_pixel_threshold,
            work.image,
            work.mask,
        )
        return self._finish(work.image, work.mask, lit, t0)

    def triage_agipd(self, image: NDArray[np.float32], cell_mask: NDArray[np.uint32] | None = None) -> FrameTriage:
        """Triage one corrected AGIPD-1M frame, (16, 512, 128) or stacked (8192, 128), in photons.

        ``cell_mask`` holds the frame's bad-pixel bits (nonzero = bad), as corrected data carry them in
        ``image.mask``; it is AND-ed with the geometry mask. Peak ``ss`` is in stacked rows
        (``module·512 + ss``).
        """
        t0 = time.perf_counter()
        if np.size(image) != AGIPD_PIXELS or self.shape[0] * self.shape[1] != AGIPD_PIXELS:
            raise FrameRejected("shape_mismatch", f"AGIPD frame shape {np.shape(image)} does not fit {self.shape}")
        flat = self._flat_image(np.reshape(image, self.shape))
        if cell_mask is None:
            lit = pf8.count_lit_pixels(flat, self._static_mask, self.params.lit_pixel_threshold)
            return self._finish(flat, self._static_mask, lit, t0)
        bad = np.ascontiguousarray(cell_mask).reshape(-1)
        if bad.size != AGIPD_PIXELS:
            raise FrameRejected("shape_mismatch", f"AGIPD mask shape {np.shape(cell_mask)} does not fit {self.shape}")
        work = self._work
        lit = pf8.apply_frame_mask(
            flat, self._static_mask, bad, True, self.params.lit_pixel_threshold, work.image, work.mask
        )
        return self._finish(work.image, work.mask, lit, t0)

    def warm_up(self) -> None:
        """Compile (or load from numba's on-disk cache) every kernel before the first real frame."""
        self.warm_up_kernels()

    @staticmethod
    def warm_up_kernels() -> None:
        """``warm_up`` without an instance (worker processes call it before their geometry exists).

        Every kernel runs once on a tiny frame, so the first real frame is not charged seconds of
        compilation. numba compiles read-only and writable arrays separately (AGIPD trains and raw
        blobs arrive read-only, decoded bslz4 and shared-memory views are writable): both are exercised.
        """
        size = 8
        rows, cols = np.mgrid[0:size, 0:size]
        geometry = TriageGeometry.build(
            np.hypot(rows - 3.5, cols - 3.5), np.ones((size, size), np.uint8), [(0, size, 0, size)],
            min_res=0, max_res=0, pixels_per_ring=4,
        )
        tiny = HitFinder(geometry, TriageParams(pixels_per_ring=4, max_num_peaks=4))
        work, static = tiny._work, tiny._static_mask
        frame = np.zeros((size, size), np.float32)
        frame[4, 4] = 100.0
        good = np.ones((size, size), np.uint8)
        bad = np.zeros((size, size), np.uint32)
        frozen = [a.copy() for a in (frame, good, bad)]
        for array in frozen:
            array.flags.writeable = False
        values = np.zeros(geometry.full_rings.n_pixels, np.float32)
        for image in (frame, frozen[0]):
            for mask in (None, good, frozen[1]):
                tiny.triage(image, mask)
            for cell_mask in (bad, frozen[2]):
                pf8.apply_frame_mask(image.reshape(-1), static, cell_mask.reshape(-1), True, 0.5, work.image,
                                     work.mask)
            for table in (geometry.full_rings, geometry.sampled_rings):
                pf8.gather_ring_values(image.reshape(-1), table.pixels, values)
                pf8.scatter_ring_values(image.reshape(-1), table.raster_pixels, table.ring_position, values)
        for dtype in (np.uint8, np.uint16, np.uint32):
            pixels = np.ascontiguousarray(frame, dtype=dtype)
            tiny.triage_eiger(Encoding.RAW, pixels.tobytes(), (size, size), np.dtype(dtype))  # read-only pixels
            pf8.prepare_eiger_image(  # bitshuffle decodes into a writable array
                pixels.reshape(-1), static, (1 << (8 * pixels.itemsize)) - 1, 0.5, work.image, work.mask
            )

    # -- internals -------------------------------------------------------------------------------------
    def _flat_image(self, image: NDArray) -> NDArray[np.float32]:
        if np.shape(image) != self.shape:
            raise FrameRejected("shape_mismatch", f"image shape {np.shape(image)} is not the geometry's {self.shape}")
        return np.ascontiguousarray(image, dtype=np.float32).reshape(-1)

    def _flat_mask(self, mask: NDArray) -> NDArray:
        if np.shape(mask) != self.shape:
            raise FrameRejected("shape_mismatch", f"mask shape {np.shape(mask)} is not the geometry's {self.shape}")
        mask = np.ascontiguousarray(mask)
        return (mask.view(np.uint8) if mask.dtype == np.bool_ else mask).reshape(-1)

    def _finish(self, image: NDArray[np.float32], mask: NDArray[np.uint8], lit: int, t0: float) -> FrameTriage:
        p = self.params
        if p.min_lit_pixels > 0 and lit < p.min_lit_pixels:
            return FrameTriage(
                n_peaks=0, peaks=PeakList.empty(), lit_pixels=lit, is_hit=False, vetoed=True,
                time_ms=1e3 * (time.perf_counter() - t0),
            )
        n_peaks = self._peakfinder8(image, mask)
        n_saturated = int(self._work.saturated[0])
        stored = min(n_peaks, p.max_num_peaks)
        table = self._work.peaks[:, :stored].copy()
        peaks = PeakList(
            fs=table[pf8.PEAK_FS], ss=table[pf8.PEAK_SS], intensity=table[pf8.PEAK_INTENSITY],
            snr=table[pf8.PEAK_SNR], npix=table[pf8.PEAK_NPIX], max_value=table[pf8.PEAK_MAX_VALUE],
        )
        saturated_veto = 0 <= p.max_saturated_peaks < n_saturated
        return FrameTriage(
            n_peaks=n_peaks, peaks=peaks, lit_pixels=lit,
            is_hit=p.min_peaks <= n_peaks <= p.max_peaks and not saturated_veto,
            vetoed=False, time_ms=1e3 * (time.perf_counter() - t0), n_saturated=n_saturated,
        )

    def _peakfinder8(self, image: NDArray[np.float32], mask: NDArray[np.uint8]) -> int:
        p, work, rings = self.params, self._work, self._rings
        if rings.read_in_raster_order:
            pf8.scatter_ring_values(image, rings.raster_pixels, rings.ring_position, work.values)
        else:
            pf8.gather_ring_values(image, rings.pixels, work.values)
        floor = pf8.ring_statistics(
            work.values, rings.start, p.adc_threshold, p.minimum_snr, work.offset, work.sigma, work.upper, work.kept
        )
        if p.fast_mode:
            full = self.geometry.full_rings
            floor = pf8.refine_degenerate_rings(
                image, full.pixels, full.start, rings.start, p.adc_threshold, p.minimum_snr,
                work.offset, work.sigma, work.upper, work.kept, work.ring_scratch,
            )
        return pf8.find_peaks(
            image, mask, self._ring_index, self.shape[1], self.geometry.panels, work.offset, work.upper, floor,
            p.minimum_snr, p.min_pixel_count, p.max_pixel_count, p.local_bg_radius,
            work.taken, work.marked, work.peaks, p.saturation_value, work.saturated,
        )

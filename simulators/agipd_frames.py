"""AGIPD trains as arrays: raw (analog + digital gain) or corrected (photons, gain, mask), with the truth photons.

A train is assembled from pool slots (``agipd_pixel_pool``): the per-cell offset is added to each raw
frame, then the pixels of Bragg peaks in hit frames are recomputed with the full gain model of
``agipd_constants`` (stage from the photons, stage offsets and gains, clipped noise). Missing modules
are zeroed. Arrays are allocated in the order they are sent (``agipd_layout.train_buffer``) and
returned as canonical file-order views, so sending never transposes and tests compare in one order.
Measured for 64 cells, pinned to one core of a shared 2-vCPU AMD EPYC VM: raw ``file`` ≈ 60 ms per
train (≈ 16 trains/s, 11–12 with per-module sources), raw ``online`` ≈ 0.2 s (≈ 5/s); corrected ``file``
≈ 45 ms (≈ 22/s), corrected ``online`` ≈ 0.1–0.15 s. Most of it is first-touch page faults of the fresh
268 MB buffers, which cannot be recycled while ZMQ may still be sending them without a copy.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from . import agipd_cells_last
from .agipd_constants import (
    ADC_MAX,
    DIGITAL_NOISE_ADU,
    NOISE_ADU,
    AgipdConstants,
    clipped_noise,
    gain_stage,
)
from .agipd_layout import MODULE_FS, MODULE_SS, MODULES, AgipdLayout, AgipdProduct, canonical_view, train_buffer
from .agipd_pixel_pool import AgipdPixelPool
from .agipd_scene import AgipdScene

_FIXUP_NOISE_STREAM = 0xF1C


@dataclass(frozen=True, slots=True, eq=False)
class AgipdTrainArrays:
    """One train in canonical file order (views of wire-order buffers; do not modify).

    raw: ``data`` uint16 (cells, 16, 2, 512, 128), ``gain``/``mask`` None; corrected: ``data`` float32
    (cells, 16, 512, 128), ``gain`` uint8 and ``mask`` uint32 alike. A module with
    ``modules_present[m]`` False is all zeros.
    """

    index: int
    train_id: int
    product: AgipdProduct
    cell_ids: NDArray[np.uint16]
    pulse_ids: NDArray[np.uint64]
    modules_present: tuple[bool, ...]
    data: NDArray
    gain: NDArray[np.uint8] | None = None
    mask: NDArray[np.uint32] | None = None

    @property
    def train_ids(self) -> NDArray[np.uint64]:
        """``image.trainId``: the train id once per frame."""
        return np.full(self.cell_ids.size, self.train_id, dtype=np.uint64)


@dataclass(frozen=True, slots=True, eq=False)
class _PeakFix:
    """The pixels the peaks of one hit frame touch: where, how many photons, which gain stage."""

    frame: int
    module: NDArray[np.intp]
    ss: NDArray[np.intp]
    fs: NDArray[np.intp]
    photons: NDArray[np.float64]
    stage: NDArray[np.uint8]
    rng: np.random.Generator


class AgipdFrames:
    """Builds train ``index`` of a scene. Thread-safe: its only state is the read-only pool and mask."""

    def __init__(
        self, scene: AgipdScene, pool: AgipdPixelPool, *, layout: AgipdLayout, module_major: bool = False
    ) -> None:
        self.scene = scene
        self.pool = pool
        self.constants: AgipdConstants = pool.constants
        self.product = pool.product
        self.layout = layout
        self.module_major = module_major and layout is AgipdLayout.FILE
        self._shared_mask: NDArray[np.uint32] | None = None
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Compile the online kernel now rather than in the first train's time slot."""
        if self.layout is AgipdLayout.ONLINE:
            agipd_cells_last.warm_up(self.pool.slots.dtype)

    def build(self, index: int) -> AgipdTrainArrays:
        scene = self.scene
        slot_of = self.pool.slot_of(scene.seed, index, scene.lit)
        present = scene.modules_present(index)
        if self.product is AgipdProduct.RAW:
            data = self._assemble(slot_of, self._cell_shift(), (2, MODULE_SS, MODULE_FS))
            self._fix_raw_peaks(index, data, slot_of)
            gain = mask = None
        else:
            data = self._assemble(slot_of, None, (MODULE_SS, MODULE_FS))
            gain = self._zeros(np.dtype(np.uint8))
            self._fix_corrected_peaks(index, data, gain, slot_of)
            mask = self._mask(present)
        for module in (m for m in range(MODULES) if not present[m]):
            for array in (a for a in (data, gain, mask) if a is not None):
                array[:, module] = 0  # the mask was copied for this train (``_mask``)
        for array in (a for a in (data, gain, mask) if a is not None):
            array.flags.writeable = False  # a view; ZMQ may still be sending its buffer
        return AgipdTrainArrays(
            index=index,
            train_id=scene.train_id(index),
            product=self.product,
            cell_ids=scene.cell_ids,
            pulse_ids=scene.pulse_ids,
            modules_present=present,
            data=data,
            gain=gain,
            mask=mask,
        )

    def photons(self, index: int) -> NDArray[np.float32]:
        """The photons each pixel received (Poisson counts, noise-free), float32 (cells, 16, 512, 128).

        Missing modules are not zeroed here: the detector saw the photons, the bridge lost the data.
        """
        scene = self.scene
        slot_of = self.pool.slot_of(scene.seed, index, scene.lit)
        photons = np.zeros((scene.cells, MODULES, MODULE_SS, MODULE_FS), dtype=np.float32)
        for frame, slot in enumerate(slot_of):
            background = self.pool.background_of(int(slot))
            if background is not None:
                photons[frame] = background
        for frame, peaks in scene.peak_pixels(index).items():
            flat = photons[frame].reshape(-1)
            flat[peaks.pixels] += peaks.counts
        return photons

    # -- assembly ---------------------------------------------------------------------------------
    def _cell_shift(self) -> NDArray[np.uint16]:
        """(cells, 16, 2) per-cell offset added to the analog plane, as uint16 two's complement."""
        rows = self.constants.cell_rows(self.scene.cell_ids)
        shift = np.zeros((rows.size, MODULES, 2), dtype=np.int64)
        shift[:, :, 0] = self.constants.offset_cell[:, rows, 0].T
        return shift.astype(np.uint16)  # wraps negatives; the uint16 sums wrap back

    def _assemble(self, slot_of: NDArray[np.intp], shift: NDArray | None, module_shape: tuple[int, ...]) -> NDArray:
        dtype = self.pool.slots.dtype
        cells = slot_of.size
        buffer = train_buffer(cells, module_shape, dtype, self.layout, module_major=self.module_major)
        if self.layout is AgipdLayout.ONLINE:
            lines = buffer.reshape(-1, MODULE_FS, MODULE_SS, cells)
            per_line = np.zeros((cells, lines.shape[0]), dtype=dtype) if shift is None else shift.reshape(cells, -1)
            agipd_cells_last.fill_cells_last(self.pool.online_slots, slot_of, per_line, lines)
        else:
            frames = canonical_view(buffer, self.layout, module_major=self.module_major)
            for frame, slot in enumerate(slot_of):
                if shift is None:
                    np.copyto(frames[frame], self.pool.slots[slot])
                else:
                    np.add(self.pool.slots[slot], shift[frame][..., None, None], out=frames[frame])
        return canonical_view(buffer, self.layout, module_major=self.module_major)

    def _zeros(self, dtype: np.dtype) -> NDArray:
        buffer = train_buffer(
            self.scene.cells, (MODULE_SS, MODULE_FS), dtype, self.layout, module_major=self.module_major, zeros=True
        )
        return canonical_view(buffer, self.layout, module_major=self.module_major)

    def _mask(self, present: tuple[bool, ...]) -> NDArray[np.uint32]:
        """The bad-pixel mask of every frame: the same each train, so one read-only buffer serves them all
        (ZMQ only reads what it sends); a train with missing modules gets its own copy to zero."""
        with self._lock:
            if self._shared_mask is None:
                self._shared_mask = self._build_mask()
        if all(present):
            return self._shared_mask
        buffer = train_buffer(self.scene.cells, (MODULE_SS, MODULE_FS), np.dtype(np.uint32), self.layout,
                              module_major=self.module_major)
        mask = canonical_view(buffer, self.layout, module_major=self.module_major)
        np.copyto(mask, self._shared_mask)
        return mask

    def _build_mask(self) -> NDArray[np.uint32]:
        cells = self.scene.cells
        buffer = train_buffer(
            cells, (MODULE_SS, MODULE_FS), np.dtype(np.uint32), self.layout, module_major=self.module_major
        )
        module_mask = self.constants.mask
        if self.layout is AgipdLayout.ONLINE:
            buffer[...] = module_mask.transpose(0, 2, 1)[..., None]
        else:  # frame by frame: numpy broadcasts a whole-buffer assignment over the cells axis innermost
            frames = canonical_view(buffer, self.layout, module_major=self.module_major)
            for frame in range(cells):
                np.copyto(frames[frame], module_mask)
        buffer.flags.writeable = False
        return canonical_view(buffer, self.layout, module_major=self.module_major)

    # -- Bragg peaks: the only pixels that leave high gain -------------------------------------------
    def _peak_fixes(self, index: int, slot_of: NDArray[np.intp]) -> list[_PeakFix]:
        fixes = []
        for frame, peaks in self.scene.peak_pixels(index).items():
            background = self.pool.background_of(int(slot_of[frame]))
            photons = peaks.counts.astype(np.float64)
            if background is not None:
                photons += background.reshape(-1)[peaks.pixels]
            module, ss, fs = np.unravel_index(peaks.pixels, (MODULES, MODULE_SS, MODULE_FS))
            rng = np.random.default_rng([self.scene.seed, _FIXUP_NOISE_STREAM, index, frame])
            fixes.append(_PeakFix(frame, module, ss, fs, photons, gain_stage(photons), rng))
        return fixes

    def _fix_raw_peaks(self, index: int, data: NDArray[np.uint16], slot_of: NDArray[np.intp]) -> None:
        k = self.constants
        rows = k.cell_rows(self.scene.cell_ids)
        for fix in self._peak_fixes(index, slot_of):
            m, stage, ss, fs = fix.module, fix.stage, fix.ss, fix.fs
            noise = clipped_noise(fix.rng, fix.photons.size, NOISE_ADU)
            analog = np.rint(k.offset_pixel[m, stage, ss, fs] + fix.photons / k.relgain[m, stage, ss, fs] + noise)
            analog += k.offset_cell[m, rows[fix.frame], stage]
            digital_noise = clipped_noise(fix.rng, fix.photons.size, DIGITAL_NOISE_ADU)
            digital = np.rint(k.digital_level[m, stage, ss, fs] + digital_noise)
            data[fix.frame, m, 0, ss, fs] = np.clip(analog, 0, ADC_MAX)
            data[fix.frame, m, 1, ss, fs] = np.clip(digital, 0, ADC_MAX)

    def _fix_corrected_peaks(
        self, index: int, data: NDArray[np.float32], gain: NDArray[np.uint8], slot_of: NDArray[np.intp]
    ) -> None:
        k = self.constants
        for fix in self._peak_fixes(index, slot_of):
            m, stage, ss, fs = fix.module, fix.stage, fix.ss, fix.fs
            noise = clipped_noise(fix.rng, fix.photons.size, NOISE_ADU) * k.relgain[m, stage, ss, fs]
            data[fix.frame, m, ss, fs] = fix.photons + noise
            gain[fix.frame, m, ss, fs] = stage

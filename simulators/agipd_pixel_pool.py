"""Precomputed full-detector frames that trains are assembled from: background photons plus noise.

Drawing a 1-Mpixel frame's Poisson background and analog/digital noise takes ≈ 60 ms, so a 64-cell
train drawn afresh would take ≈ 4 s; the target is ≥ 5 trains/s on one core. Instead ``LIT_SLOTS``
lit and ``DARK_SLOTS`` dark realisations are drawn once per (seed, product, difficulty), and each frame picks one
by a seeded hash of (train, frame). The lit slots' photons are Poisson draws of the difficulty's mean background
(``agipd_difficulty.mean_background``: 0.1 photons/pixel flat in ``easy``). Raw slots hold the high-gain analog
value without the per-cell offset (added per frame, one uint16 pass) and the digital value; corrected slots hold
photons plus noise. Background pixels never leave high gain (a few photons at most), so only the sparse peak
pixels of hit frames need the full gain model (``AgipdFrames``). Hot and dead pixels are part of every slot, lit
and dark: a hot pixel's slot photons are ``HOT_PIXEL_PHOTONS``, a dead pixel reads its offset (raw) or 0
(corrected) without noise.

For ``online`` trains the slots are also kept transposed to (module·[2], fs, ss), so the kernel in
``agipd_cells_last`` writes the cells-last layout with contiguous stores.
"""

from __future__ import annotations

import functools
import threading

import numpy as np
from numpy.typing import NDArray

from .agipd_constants import DIGITAL_NOISE_ADU, NOISE_ADU, AgipdConstants, agipd_constants, clipped_noise
from .agipd_difficulty import HOT_PIXEL_PHOTONS, PRESETS, defects, mean_background
from .agipd_layout import MODULE_FS, MODULE_SS, MODULES, AgipdProduct, online_axes
from .sfx_background import splitmix64
from .sfx_difficulty import SfxDifficulty

LIT_SLOTS = 6
DARK_SLOTS = 2
_POOL_STREAM = 0xB6A


class AgipdPixelPool:
    """``slots`` is (LIT_SLOTS + DARK_SLOTS, 16, [2,] 512, 128): lit slots first, then dark ones.

    ``background[k]`` (16, 512, 128) uint8 is the photon count of lit slot k (dark slots have none); it leaves
    out the hot pixels, whose counts are no photons.
    """

    def __init__(
        self, constants: AgipdConstants, product: AgipdProduct, difficulty: SfxDifficulty = PRESETS["easy"]
    ) -> None:
        self.constants = constants
        self.product = product
        self.difficulty = difficulty
        self.hot_pixels, self.dead_pixels = defects(difficulty, constants.seed)
        rng = np.random.default_rng([constants.seed, _POOL_STREAM, product is AgipdProduct.RAW])
        frame = (MODULES, MODULE_SS, MODULE_FS)
        drawn = rng.poisson(mean_background(difficulty), (LIT_SLOTS, *frame))
        self.background: NDArray[np.uint8] = drawn.astype(np.uint8)
        photons = [self.background[k] for k in range(LIT_SLOTS)] + [np.zeros(frame, np.uint8)] * DARK_SLOTS
        build = self._raw_slot if product is AgipdProduct.RAW else self._corrected_slot
        self.slots = np.stack([build(rng, self._with_hot_pixels(p)) for p in photons])
        self._kill_dead_pixels()
        for array in (self.background, self.slots):
            array.flags.writeable = False
        self._online: NDArray | None = None
        self._lock = threading.Lock()

    @property
    def online_slots(self) -> NDArray:
        """The slots as (slot, module·[2], fs, ss): each slot's online order without the pulse axis."""
        with self._lock:
            if self._online is None:
                axes = online_axes(self.slots.ndim)[:-1]  # the slot axis plays the pulse axis, kept first
                moved = self.slots.transpose(0, *axes)
                online = np.ascontiguousarray(moved).reshape(self.slots.shape[0], -1, MODULE_FS, MODULE_SS)
                online.flags.writeable = False
                self._online = online
            return self._online

    def slot_of(self, seed: int, index: int, lit: NDArray[np.bool_]) -> NDArray[np.intp]:
        """Slot of each frame of train ``index``: a lit slot for lit frames, a dark one otherwise."""
        keys = [splitmix64((seed << 40) ^ (index << 10) ^ frame) for frame in range(lit.size)]
        lit_slot = np.array([k % LIT_SLOTS for k in keys], dtype=np.intp)
        dark_slot = np.array([LIT_SLOTS + k % DARK_SLOTS for k in keys], dtype=np.intp)
        return np.where(lit, lit_slot, dark_slot)

    def background_of(self, slot: int) -> NDArray[np.uint8] | None:
        """Background photons of ``slot``; None for a dark slot."""
        return self.background[slot] if slot < LIT_SLOTS else None

    def _with_hot_pixels(self, photons: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """What a slot is built from: its photons with the hot pixels' counts, in a copy (``background`` keeps
        the photons alone)."""
        if not len(self.hot_pixels):
            return photons
        photons = photons.copy()
        photons[tuple(self.hot_pixels.T)] = HOT_PIXEL_PHOTONS
        return photons

    def _kill_dead_pixels(self) -> None:
        """Dead pixels read no signal and no noise: their high-gain offset and digital level, or 0 photons."""
        dead = tuple(self.dead_pixels.T)
        if self.product is AgipdProduct.RAW:
            k = self.constants
            self.slots[:, dead[0], 0, dead[1], dead[2]] = np.rint(k.offset_pixel[dead[0], 0, dead[1], dead[2]])
            self.slots[:, dead[0], 1, dead[1], dead[2]] = np.rint(k.digital_level[dead[0], 0, dead[1], dead[2]])
        else:
            self.slots[:, dead[0], dead[1], dead[2]] = 0.0

    def _raw_slot(self, rng: np.random.Generator, photons: NDArray[np.uint8]) -> NDArray[np.uint16]:
        k = self.constants
        analog = k.offset_pixel[:, 0] + photons / k.relgain[:, 0] + clipped_noise(rng, photons.shape, NOISE_ADU)
        digital = k.digital_level[:, 0] + clipped_noise(rng, photons.shape, DIGITAL_NOISE_ADU)
        return np.rint(np.stack([analog, digital], axis=1)).astype(np.uint16)

    def _corrected_slot(self, rng: np.random.Generator, photons: NDArray[np.uint8]) -> NDArray[np.float32]:
        k = self.constants
        values = photons + clipped_noise(rng, photons.shape, NOISE_ADU) * k.relgain[:, 0]
        values[tuple(k.bad_pixels.T)] = 0.0  # dead pixels read nothing; ``mask`` flags them
        return values.astype(np.float32)


@functools.lru_cache(maxsize=2)
def pixel_pool(seed: int, product: AgipdProduct, difficulty: SfxDifficulty = PRESETS["easy"]) -> AgipdPixelPool:
    """The pool of a (seed, product, difficulty), shared by simulators: building one takes ≈ 0.5 s and 50 MB."""
    return AgipdPixelPool(agipd_constants(seed), product, difficulty)

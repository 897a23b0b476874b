"""Diffuse background of serial-crystallography frames (the scene's mean image, ``sfx_difficulty``), Poisson-sampled.

Drawing 4.5 million Poisson numbers for a 4M frame takes about 0.27 s, eight times the 33 ms budget of
a 30 frame/s simulator, so a small pool of realisations is drawn once (lazily, one per slot) and each
frame picks a slot by a seeded hash of its index. Pool slots are stored as uint8 (background counts
never come near 255), which makes the per-frame widening to uint16/uint32 a 0.4 ms copy.
"""

from __future__ import annotations

import threading

import numpy as np
from numpy.typing import NDArray

from .detector_models import MODULE_COLS, MODULE_ROWS, DetectorGeometry
from .sfx_difficulty import PRESETS, SfxDifficulty, mean_image

POOL_SIZE = 8
_POOL_STREAM = 0xB6  # keeps pool random streams apart from the per-frame peak streams
_MAX_STORED_COUNT = 254


def splitmix64(value: int) -> int:
    """A fast, well-mixed 64-bit integer hash (Steele et al.), so neighbouring frames pick unrelated slots."""
    z = (value + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


class BackgroundPool:
    """``size`` Poisson realisations of the mean background, each built on first use.

    Slot k depends only on (geometry, seed, beam centre, difficulty, k), so every simulator with the same
    settings produces the same frames. Methods are thread-safe: the stream thread and a test may both ask.
    """

    def __init__(
        self,
        geometry: DetectorGeometry,
        *,
        seed: int,
        beam_center: tuple[float, float],
        difficulty: SfxDifficulty = PRESETS["easy"],
        size: int = POOL_SIZE,
    ) -> None:
        self.geometry = geometry
        self.seed = seed
        self.beam_center = beam_center
        self.difficulty = difficulty
        self.size = size
        self._slots: list[NDArray[np.uint8] | None] = [None] * size
        self._mean: NDArray[np.float32] | None = None
        self._lock = threading.Lock()

    def mean_image(self) -> NDArray[np.float32]:
        """Expected photons per pixel of the scene around (beam_center_x, _y)."""
        with self._lock:
            if self._mean is None:
                self._mean = self._build_mean()
            return self._mean

    def slot_for(self, key: int) -> int:
        return splitmix64((self.seed << 32) ^ key) % self.size

    def realisation(self, slot: int) -> NDArray[np.uint8]:
        """Background counts of pool slot ``slot`` (read-only); gaps are included and overwritten later."""
        mean = self.mean_image()
        with self._lock:
            counts = self._slots[slot]
            if counts is None:
                rng = np.random.default_rng([self.seed, _POOL_STREAM, slot])
                drawn = rng.poisson(mean)
                counts = np.minimum(drawn, _MAX_STORED_COUNT).astype(np.uint8)
                counts.flags.writeable = False
                self._slots[slot] = counts
            return counts

    def _build_mean(self) -> NDArray[np.float32]:
        return mean_image(self.difficulty, self.geometry.shape, self.beam_center, list(self.geometry.module_origins()),
                          (MODULE_ROWS, MODULE_COLS))

"""Ground truth of a simulated AGIPD run, by train index: what tests score a receiver or a pipeline against."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .agipd_difficulty import mean_background
from .agipd_frames import AgipdFrames
from .agipd_scene import AgipdScene, AgipdTrainTruth


class AgipdTruth:
    """``truth.train(i)`` (ids, lit frames, hits, peaks, modules present) and ``truth.photons(i)``, and what the
    difficulty put into every frame: ``mean_background()``, ``hot_pixels`` and ``dead_pixels``.

    Train ``i`` is the i-th train the simulator sends (0-based), with train id ``first_train_id + i``.
    """

    def __init__(self, scene: AgipdScene, frames: AgipdFrames) -> None:
        self._scene = scene
        self._frames = frames

    def train(self, index: int) -> AgipdTrainTruth:
        return self._scene.train(index)

    def __getitem__(self, index: int) -> AgipdTrainTruth:
        return self._scene.train(index)

    def train_id(self, index: int) -> int:
        return self._scene.train_id(index)

    def photons(self, index: int) -> NDArray[np.float32]:
        """Photons per pixel of train ``index`` (Poisson counts before noise), float32 (cells, 16, 512, 128)."""
        return self._frames.photons(index)

    def mean_background(self) -> NDArray[np.float64]:
        """Expected photons per pixel of a lit frame's diffuse scene, (16, 512, 128) read-only: what each peak's
        ``snr`` is measured against."""
        return mean_background(self._scene.difficulty)

    @property
    def hot_pixels(self) -> NDArray[np.intp]:
        """(module, ss, fs) per row of the pixels that read ``agipd_difficulty.HOT_PIXEL_PHOTONS`` in every frame
        though the mask does not list them (they are not in ``photons``)."""
        return self._frames.pool.hot_pixels

    @property
    def dead_pixels(self) -> NDArray[np.intp]:
        """(module, ss, fs) per row of the pixels that read nothing in every frame though the mask does not list
        them."""
        return self._frames.pool.dead_pixels

    @property
    def cell_ids(self) -> NDArray[np.uint16]:
        """The same memory cells every train (AGIPD's cell pattern is fixed per run)."""
        return self._scene.cell_ids

    @property
    def pulse_ids(self) -> NDArray[np.uint64]:
        return self._scene.pulse_ids

    @property
    def lit(self) -> NDArray[np.bool_]:
        """Which frames see a pulse; the same in every train."""
        return self._scene.lit

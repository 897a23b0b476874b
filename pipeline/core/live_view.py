"""The live view: a picture of the newest frame or train, made at most ``max_rate_hz`` times per second, off the
data path.

The receiver only keeps a reference to the newest item it forwarded (one attribute store: O(1), no copy, no
decode); this engine's own low-priority thread looks at that reference at most ``max_rate_hz`` times per second
and, when it is new, decodes it (bitshuffle-LZ4 chunks with ``decode_chunk_pixels``) into a ``LivePicture``.
The stream never waits for it: a slow decode only means fewer pictures. Gap and masked pixels are 0 in an
integer picture and NaN in a float one, so an autoscaling viewer is not blinded by the detector's
2**bits - 1 gap marker; the mask itself is part of the picture (1 = gap or masked).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .chunk_framing import decode_chunk_pixels
from .frame import Frame, masked_pixel_value
from .series import SeriesStart
from .thread_names import pipeline_thread
from .train import AGIPD_MODULES, MODULE_SHAPE, Product, Train

log = logging.getLogger(__name__)

DEFAULT_RATE_HZ = 5.0
LOWEST_PRIORITY = 19  # nice value of the live view's thread (Linux schedules threads as tasks)
_IDLE_WAIT_S = 0.5  # how often a live view switched off (rate 0) looks whether it is closing


@dataclass(frozen=True, slots=True, eq=False)
class LivePicture:
    """One picture: ``pixels`` (height, width) with masked pixels 0 (integers) or NaN (floats), ``mask`` uint8
    (1 = gap or masked pixel), ``frame_number`` (Eiger frame index, AGIPD train id) and ``counter`` (pictures
    made by this live view so far, the first is 1)."""

    pixels: np.ndarray
    mask: np.ndarray
    frame_number: int
    counter: int


def frame_picture(frame: Frame, start: SeriesStart | None) -> tuple[np.ndarray, np.ndarray]:
    """(pixels, mask) of an Eiger frame: the detector's masked-pixel marker (2**bits - 1, written with
    pixel_mask_applied) and every pixel flagged by the NXmx ``pixel_mask`` of the frame's series header
    (``start``, when it is that series' and its shape fits) become 0."""
    pixels = np.array(decode_chunk_pixels(frame.encoding, frame.blob, frame.shape, frame.dtype))  # owned copy
    marker = masked_pixel_value(pixels.dtype)
    masked = pixels == marker if marker is not None else np.zeros(pixels.shape, bool)
    pixel_mask = start.pixel_mask if start is not None and start.series_id == frame.series_id else None
    if pixel_mask is not None and pixel_mask.shape == pixels.shape:
        masked |= pixel_mask != 0
    pixels[masked] = 0
    return pixels, masked.view(np.uint8)


@dataclass
class TrainView:
    """Which part of an AGIPD train the live view shows: memory cell ``cell`` (position in the train, the
    train's last when it has fewer) of module ``module`` (512 x 128), or of all 16 modules stacked
    (8192 x 128) when ``module`` is -1. Raw trains show the analog ADU, corrected ones photons; corrected
    pixels with a bad-pixel bit and modules missing from the train are NaN."""

    cell: int = 0
    module: int = -1

    def render(self, train: Train) -> tuple[np.ndarray, np.ndarray]:
        cell, modules = min(self.cell, train.frames - 1), self._modules()
        data = train.data[cell, :, 0] if train.product is Product.RAW else train.data[cell]
        pixels = np.asarray(data[modules], dtype=np.float32)  # a copy: fancy indexing
        masked = np.zeros(pixels.shape, bool)
        if train.mask is not None:
            masked |= train.mask[cell][modules] != 0
        masked |= ~np.asarray(train.modules_present)[modules][:, None, None]
        pixels[masked] = np.nan
        rows = len(modules) * MODULE_SHAPE[0]
        return pixels.reshape(rows, MODULE_SHAPE[1]), masked.reshape(rows, MODULE_SHAPE[1]).view(np.uint8)

    def _modules(self) -> list[int]:
        return list(range(AGIPD_MODULES)) if self.module < 0 else [self.module]


Render = Callable[[Any], tuple[np.ndarray, np.ndarray]]


@dataclass
class LiveViewStats:
    """``pictures`` made; items the view could not render, by reason; the last render's time."""

    pictures: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    time_last_ms: float = 0.0


class LiveView:
    """Renders ``latest()`` (the receiver's newest item, or None) with ``render`` when it changed, at most
    ``max_rate_hz`` times per second (0 = off), in one low-priority thread; ``picture`` is the newest result."""

    def __init__(self, latest: Callable[[], Any], render: Render, *, max_rate_hz: float = DEFAULT_RATE_HZ,
                 frame_number: Callable[[Any], int] = lambda item: int(item.index)) -> None:
        self.stats = LiveViewStats()
        self.picture: LivePicture | None = None
        self._latest, self._render, self._frame_number = latest, render, frame_number
        self._rate_hz = max_rate_hz
        self._rendered: Any = None  # the item of ``picture``, compared by identity
        self._wake = threading.Event()
        self._closing = False
        self._thread = pipeline_thread(self._loop, "live-view")

    @property
    def max_rate_hz(self) -> float:
        return self._rate_hz

    @max_rate_hz.setter
    def max_rate_hz(self, rate_hz: float) -> None:
        if rate_hz < 0:
            raise ValueError(f"a live view rate is >= 0 Hz (0 = off), got {rate_hz}")
        self._rate_hz = rate_hz
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout_s: float = 1.0) -> None:
        self._closing = True
        self._wake.set()
        self._thread.join(timeout_s)

    def _loop(self) -> None:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)
        last_s = -float("inf")  # when the last look at the newest item began
        while not self._closing:
            rate = self._rate_hz
            wait_s = _IDLE_WAIT_S if rate <= 0 else last_s + 1.0 / rate - time.monotonic()
            if wait_s > 0:  # also after a rate change or close woke it: the interval is kept
                self._wake.wait(wait_s)
                self._wake.clear()
                continue
            last_s = time.monotonic()
            self._render_newest()

    def _render_newest(self) -> None:
        item = self._latest()
        if item is None or item is self._rendered:
            return
        self._rendered = item
        t0 = time.perf_counter()
        try:
            pixels, mask = self._render(item)
            number = self._frame_number(item)
        except ValueError as err:  # a chunk that does not decompress: this item only
            self.stats.rejected["undecodable"] += 1
            log.debug("live view: item not rendered: %s", err)
            return
        except Exception:  # noqa: BLE001 - a render bug or an input no check foresaw: this item only, the view goes on
            if not self.stats.rejected["render_failed"]:
                log.exception("live view: item not rendered; further failures counted only")
            self.stats.rejected["render_failed"] += 1
            return
        self.stats.pictures += 1
        self.stats.time_last_ms = (time.perf_counter() - t0) * 1e3
        self.picture = LivePicture(pixels, mask, number, self.stats.pictures)

"""The live view every detector device offers: a rate-limited picture of the newest frame or train, decoded off
the data path by the engine's ``LiveView``, served as LImA serves its live image.

Attributes: ``live_image`` (each detector declares it with its pixel type), ``live_image_mask``,
``live_image_frame``, ``live_image_max_rate`` and, as LImA names them, ``video_last_image`` (DevEncoded
VIDEO_IMAGE, read by LaVue and other LImA viewers) and ``video_last_image_counter``. A new picture pushes a
data-ready event on ``live_image`` and a change event on ``video_last_image_counter``; pixels never travel in
events, clients read the picture when told.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from tango import AttrWriteType, DevEncoded
from tango.server import attribute, device_property

from detpipe.pipeline.core.live_view import DEFAULT_RATE_HZ, LivePicture, LiveView, Render
from detpipe.pipeline.core.video_image import VIDEO_FORMAT, encode_video_image

from .detpipe_device import CLOSE_WAIT_S, DetpipeDevice, in_background, settle
from .event_throttle import EventThrottle

MAX_LIVE_RATE_HZ = 25.0  # LImA's image_events_max_rate default: no viewer needs more
LIVE_MAX_WIDTH = 4200  # EIGER2 16M is 4148 px wide
LIVE_MAX_HEIGHT = 8192  # AGIPD's 16 modules stacked (EIGER2 16M: 4362 rows)


class LiveViewDevice(DetpipeDevice):
    """Base of the detector devices: owns their ``LiveView``; a subclass starts it with ``start_live_view`` once
    its receiver exists and declares ``live_image`` from ``live_picture()``."""

    LiveViewRate = device_property(
        dtype=float, default_value=DEFAULT_RATE_HZ,
        doc="Live view pictures per second at most (live_image, video_last_image), decoded off the data path; "
            "0 = off. The memorized attribute live_image_max_rate overrides it once written",
    )

    async def init_device(self) -> None:
        await super().init_device()
        self._live_view: LiveView | None = None
        self._video_cache: tuple[int, bytes] = (0, b"")
        self._live_events = EventThrottle(self._push_live_ready, MAX_LIVE_RATE_HZ)
        self.set_data_ready_event("live_image", True)
        self.set_change_event("video_last_image_counter", True, False)

    def start_live_view(self, latest: Callable[[], Any], render: Render, frame_number: Callable[[Any], int]) -> None:
        """Start the live view of the newest item ``latest()`` returns (a reference the receiver keeps)."""
        self._live_view = LiveView(latest, render, max_rate_hz=max(0.0, self.LiveViewRate), frame_number=frame_number)
        self._live_view.start()

    def live_picture(self) -> LivePicture | None:
        return self._live_view.picture if self._live_view is not None else None

    def refresh(self, *, force: bool = False) -> None:
        super().refresh(force=force)
        if (picture := self.live_picture()) is not None:
            self._live_events.offer("live_image", picture.counter)

    def _push_live_ready(self, name: str, counter: int) -> None:
        """A new picture: a data-ready event on live_image and a change event on video_last_image_counter;
        pixels never travel in events, clients read the picture they want."""
        self.push_data_ready_event(name, counter)
        self.push_change_event("video_last_image_counter", counter)

    async def close_live_view(self) -> None:
        if self._live_view is not None:
            await settle([in_background(self._live_view.close)], CLOSE_WAIT_S)
            self._live_view = None

    # --- live view (LImA names where LImA has them) ---
    @attribute(dtype=float, access=AttrWriteType.READ_WRITE, memorized=True, hw_memorized=True, unit="Hz",
               format="%.1f", min_value=0.0, max_value=MAX_LIVE_RATE_HZ, label="Live view rate",
               description="Live view pictures per second at most, decoded off the data path (0 = off); "
                           "the LiveViewRate property until written")
    async def live_image_max_rate(self) -> float:
        return self._live_view.max_rate_hz if self._live_view is not None else 0.0

    @live_image_max_rate.write
    async def live_image_max_rate(self, value: float) -> None:
        if self._live_view is not None:
            self._live_view.max_rate_hz = value

    @attribute(dtype=((np.uint8,),), max_dim_x=LIVE_MAX_WIDTH, max_dim_y=LIVE_MAX_HEIGHT, format="%d",
               label="Live image mask",
               description="1 where the live image's pixel is a gap or masked (0 or NaN there), else 0; "
                           "same shape as live_image")
    async def live_image_mask(self) -> np.ndarray:
        picture = self.live_picture()
        return picture.mask if picture is not None else np.zeros((1, 1), np.uint8)

    @attribute(dtype=int, unit="frame", format="%d", label="Live image frame",
               description="Frame number (Eiger frame index, AGIPD train id) of the live image; -1 before the first")
    async def live_image_frame(self) -> int:
        picture = self.live_picture()
        return picture.frame_number if picture is not None else -1

    @attribute(dtype=int, unit="image", format="%d", label="Video image counter", change_event_implemented=True,
               change_event_detect=False,
               description="Live pictures made since the server started (LImA's video_last_image_counter); "
                           "0 before the first")
    async def video_last_image_counter(self) -> int:
        picture = self.live_picture()
        return picture.counter if picture is not None else 0

    @attribute(dtype=DevEncoded, label="Video last image", format="VIDEO_IMAGE",
               description="The live image in LImA's VIDEO_IMAGE encoding (big-endian header, then little-endian "
                           "pixels: Y8/Y16/Y32), as LImA's video_last_image, for LaVue and other LImA viewers")
    async def video_last_image(self) -> tuple[str, bytes]:
        picture = self.live_picture()
        if picture is None:
            return VIDEO_FORMAT, encode_video_image(np.zeros((1, 1), np.uint16), -1)
        if self._video_cache[0] != picture.counter:
            self._video_cache = (picture.counter, encode_video_image(picture.pixels, picture.frame_number))
        return VIDEO_FORMAT, self._video_cache[1]

"""One armed series as the stream sees it: everything fixed at ``arm``, whatever is PUT afterwards.

A DCU applies the configuration at ``arm`` (DECTRIS SIMPLON API documentation), so the header, every image message
and the end message of a series are built from this snapshot; a later PUT changes only the next series.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from .detector_config import TriggerMode
from .eiger_compression import Compression
from .frame_source import FrameSource
from .stream_config import HeaderDetail, StreamFormat

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


@dataclass(frozen=True, slots=True)
class ImageTiming:
    """Exposure times of one image in seconds after ``arm`` (V2 sends them so; V1 adds the clock)."""

    start_s: float
    stop_s: float
    exposure_s: float


@dataclass(frozen=True)
class EncodedImage:
    """An image's wire bytes; cached, so the V1 ``hash`` is computed once, and only for V1 (1.5 ms per 4M)."""

    blob: bytes

    @functools.cached_property
    def md5_hex(self) -> str:
        return hashlib.md5(self.blob).hexdigest()

    def __len__(self) -> int:
        """Bytes held, so a ``BlobCache`` can bound its memory."""
        return len(self.blob)


@dataclass(frozen=True, slots=True)
class StreamSeries:
    """The series armed as ``series_id``; ``detector_config`` is the detector config at arm time."""

    series_id: int
    unique_id: str
    arm_date: datetime
    arm_clock_s: float  # detector clock (time.monotonic) at arm; V1 timestamps count on it
    stream_enabled: bool
    stream_format: StreamFormat
    header_detail: HeaderDetail
    header_appendix: str
    image_appendix: str
    detector_config: Mapping[str, Any]
    frames: FrameSource
    encoded_image: Callable[[int], EncodedImage]

    @property
    def compression(self) -> Compression:
        return Compression(self.detector_config["compression"])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.frames.dtype)

    @property
    def trigger_mode(self) -> TriggerMode:
        return TriggerMode(self.detector_config["trigger_mode"])

    @property
    def nimages(self) -> int:
        return int(self.detector_config["nimages"])

    @property
    def ntrigger(self) -> int:
        return int(self.detector_config["ntrigger"])

    @property
    def count_time(self) -> float:
        return float(self.detector_config["count_time"])

    @property
    def frame_time(self) -> float:
        return float(self.detector_config["frame_time"])

    @property
    def readout_time(self) -> float:
        return float(self.detector_config["detector_readout_time"])


def new_series_unique_id(now_s: float | None = None) -> str:
    """A ULID: 48-bit milliseconds then 80 random bits, Crockford base32, 26 characters, sortable by time.
    DECTRIS's ``series_unique_id`` has this form (DECTRIS Stream V2 documentation)."""
    millis = int((time.time() if now_s is None else now_s) * 1000) & ((1 << 48) - 1)
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def appendix_value(text: str) -> Any:
    """A ``*_appendix`` as V2 ``user_data``: the JSON it holds, else the text itself; None when empty."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text

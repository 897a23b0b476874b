"""LImA's ``VIDEO_IMAGE`` encoding of one grey-scale picture, as LImA's Tango server serves ``video_last_image``.

The DevEncoded value is ("VIDEO_IMAGE", header + pixels). The header is LImA's, packed big-endian with
``!IHHqiiHHHH`` (32 bytes): magic 0x5644454f ("VDEO"), header version 1, image mode, frame number, width,
height, endianness of the pixels (0 = little-endian), header size, two padding words (0). Clients that
decode LImA's video image (LaVue, BLISS, Taurus) then decode this one unchanged. LImA's grey modes are
integers only (Y8, Y16, Y32, Y64); a float picture (AGIPD corrected photons) is sent as Y32, rounded to the
nearest count, negatives and NaN (masked pixels) as 0; signed integers lose their negatives likewise.
"""

from __future__ import annotations

import enum
import struct

import numpy as np

VIDEO_FORMAT = "VIDEO_IMAGE"
VIDEO_HEADER_FORMAT = "!IHHqiiHHHH"
VIDEO_HEADER_BYTES = struct.calcsize(VIDEO_HEADER_FORMAT)
VIDEO_MAGIC = 0x5644454F
VIDEO_HEADER_VERSION = 1
LITTLE_ENDIAN = 0


class VideoMode(enum.IntEnum):
    """LImA's grey-scale ``VideoMode`` values (the RGB/Bayer/YUV ones follow in LImA, unused here)."""

    Y8 = 0
    Y16 = 1
    Y32 = 2
    Y64 = 3


_MODES = {1: (VideoMode.Y8, "<u1"), 2: (VideoMode.Y16, "<u2"), 4: (VideoMode.Y32, "<u4"), 8: (VideoMode.Y64, "<u8")}
_Y32_MAX = 2**32 - 1


def encode_video_image(pixels: np.ndarray, frame_number: int) -> bytes:
    """``pixels`` (2-D: height, width) with LImA's VIDEO_IMAGE header; integers keep their width."""
    if pixels.ndim != 2:
        raise ValueError(f"a video image is 2-D, got shape {pixels.shape}")
    if pixels.dtype.kind == "f":
        pixels = np.clip(np.nan_to_num(np.rint(pixels), nan=0.0, posinf=_Y32_MAX, neginf=0.0), 0, _Y32_MAX)
        pixels = pixels.astype(np.uint32)
    elif pixels.dtype.kind == "i":
        pixels = np.clip(pixels, 0, None)  # LImA's grey modes are unsigned
    elif pixels.dtype.kind != "u":
        raise ValueError(f"no LImA video mode for {pixels.dtype}")
    mode, wire_dtype = _MODES[pixels.dtype.itemsize]
    height, width = pixels.shape
    header = struct.pack(VIDEO_HEADER_FORMAT, VIDEO_MAGIC, VIDEO_HEADER_VERSION, mode, frame_number, width, height,
                         LITTLE_ENDIAN, VIDEO_HEADER_BYTES, 0, 0)
    return header + np.ascontiguousarray(pixels, dtype=wire_dtype).tobytes()

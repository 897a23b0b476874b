"""Eiger series headers (V1 config part, V2 ``start`` map) → ``DetectorConfig``.

The two stream versions name the same settings differently (eiger.md §3 vs §4): ``photon_energy`` vs
``incident_energy``, ``x_pixels_in_detector`` vs ``image_size_x``, ``countrate_correction_count_cutoff``
vs ``saturation_value``. Mapping both here keeps the NXmx writer blind to the stream version.
Absent optional keys keep ``DetectorConfig``'s defaults; a present key of the wrong JSON/CBOR type is a
``bad_json``/``bad_cbor`` rejection, because guessing would put wrong numbers into the master file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import numpy as np

from ..core.errors import FrameRejected
from ..core.series import DetectorConfig

log = logging.getLogger(__name__)

PIXEL_DTYPES: dict[str, np.dtype] = {"uint8": np.dtype("<u1"), "uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
# Stream V2 firmware before 2023-09 sends no ``image_dtype`` (eiger.md §4). DetectorConfig needs a dtype, so
# it gets this placeholder; every Frame carries the dtype of its own typed-array tag, and writers must size
# datasets from the frames, never from this value.
PLACEHOLDER_DTYPE: np.dtype = np.dtype("<u4")

# V1 config key → DetectorConfig field (eiger.md §1.3, §3); shape and dtype are handled separately.
_V1_FLOATS = {
    "count_time": "count_time_s",
    "frame_time": "frame_time_s",
    "photon_energy": "photon_energy_ev",
    "wavelength": "wavelength_a",
    "beam_center_x": "beam_center_x_px",
    "beam_center_y": "beam_center_y_px",
    "detector_distance": "detector_distance_m",
    "x_pixel_size": "x_pixel_size_m",
    "y_pixel_size": "y_pixel_size_m",
    "sensor_thickness": "sensor_thickness_m",
}
_V1_INTS = {
    "nimages": "nimages",
    "ntrigger": "ntrigger",
    "bit_depth_readout": "bit_depth_readout",
    "countrate_correction_count_cutoff": "saturation_value",
}
_V1_STRINGS = {
    "sensor_material": "sensor_material",
    "description": "description",
    "detector_number": "detector_number",
    "trigger_mode": "trigger_mode",
    "compression": "compression",
}

# V2 start key → DetectorConfig field (eiger.md §4). V2 has no trigger_mode, compression or distance.
_V2_FLOATS = {
    "count_time": "count_time_s",
    "frame_time": "frame_time_s",
    "incident_energy": "photon_energy_ev",
    "incident_wavelength": "wavelength_a",
    "beam_center_x": "beam_center_x_px",
    "beam_center_y": "beam_center_y_px",
    "pixel_size_x": "x_pixel_size_m",
    "pixel_size_y": "y_pixel_size_m",
    "sensor_thickness": "sensor_thickness_m",
}
_V2_INTS = {"number_of_images": "nimages", "saturation_value": "saturation_value"}
_V2_STRINGS = {
    "sensor_material": "sensor_material",
    "detector_description": "description",
    "detector_serial_number": "detector_number",
}


def pixel_dtype(name: object) -> np.dtype:
    """The little-endian unsigned dtype of a V1 ``type``/V2 ``image_dtype`` name; others are unknown."""
    try:
        return PIXEL_DTYPES[name]  # type: ignore[index]
    except (KeyError, TypeError):
        raise FrameRejected("unknown_encoding", f"pixel type {name!r} is not uint8, uint16 or uint32") from None


def config_from_v1_header(header: Mapping[str, Any]) -> DetectorConfig:
    """Map V1 header part 2 (the flat detector config, eiger.md §3) to a ``DetectorConfig``.

    Shape is (``y_pixels_in_detector``, ``x_pixels_in_detector``) = (height, width) and the dtype is
    ``uint<bit_depth_image>`` (§1.3: it follows count_time, so it is read from every header, §9.10).
    """
    shape = _shape(header, "x_pixels_in_detector", "y_pixels_in_detector", "bad_json")
    if "bit_depth_image" in header:
        dtype = pixel_dtype(f"uint{header['bit_depth_image']}")
    else:
        log.warning("V1 header has no bit_depth_image; DetectorConfig.dtype is a %s placeholder", PLACEHOLDER_DTYPE)
        dtype = PLACEHOLDER_DTYPE
    fields = _fields(header, _V1_FLOATS, _V1_INTS, _V1_STRINGS, "bad_json")
    return DetectorConfig(shape=shape, dtype=dtype, header=dict(header), **fields)


def config_from_v2_start(start: Mapping[str, Any]) -> DetectorConfig:
    """Map a V2 ``start`` map (already stripped of calibration arrays) to a ``DetectorConfig``.

    ``number_of_images`` is the whole series, so ``ntrigger`` is 1. Without ``image_dtype`` (older
    firmware) the dtype is ``PLACEHOLDER_DTYPE``; the frames carry the real one.
    """
    shape = _shape(start, "image_size_x", "image_size_y", "bad_cbor")
    dtype = pixel_dtype(start["image_dtype"]) if "image_dtype" in start else PLACEHOLDER_DTYPE
    fields = _fields(start, _V2_FLOATS, _V2_INTS, _V2_STRINGS, "bad_cbor")
    return DetectorConfig(shape=shape, dtype=dtype, ntrigger=1, header=dict(start), **fields)


def as_float(value: object) -> float | None:
    """A number or a V2 Rational ``[num, den]`` (times, in seconds) as float; ``None`` when malformed."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        num, den = value
        if _is_int(num) and _is_int(den) and den != 0:
            return num / den
        return None
    if isinstance(value, (int, float, Fraction)) and not isinstance(value, bool):
        return float(value)
    return None


def _shape(header: Mapping[str, Any], width_key: str, height_key: str, reason: str) -> tuple[int, int]:
    """(height, width) from the header's width/height keys; both must be positive integers."""
    missing = [k for k in (width_key, height_key) if k not in header]
    if missing:
        raise FrameRejected(reason, f"series header lacks {', '.join(missing)}")
    width, height = header[width_key], header[height_key]
    if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
        raise FrameRejected("bad_shape", f"image size {width!r} x {height!r} is not two positive integers")
    return int(height), int(width)


def _fields(
    header: Mapping[str, Any],
    floats: Mapping[str, str],
    ints: Mapping[str, str],
    strings: Mapping[str, str],
    reason: str,
) -> dict[str, Any]:
    """DetectorConfig keyword arguments for the keys present; a value of the wrong type is rejected."""
    fields: dict[str, Any] = {}
    for key, name in floats.items():
        if key in header:
            value = as_float(header[key])
            if value is None:
                raise FrameRejected(reason, f"{key}={header[key]!r} is not a number")
            fields[name] = value
    for key, name in ints.items():
        if key in header:
            if not _is_int(header[key]):
                raise FrameRejected(reason, f"{key}={header[key]!r} is not an integer")
            fields[name] = int(header[key])
    for key, name in strings.items():
        if key in header:
            if not isinstance(header[key], str):
                raise FrameRejected(reason, f"{key}={header[key]!r} is not text")
            fields[name] = header[key]
    return fields


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

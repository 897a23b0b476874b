"""Eiger series headers (V1 config part, V2 ``start`` map) → ``DetectorConfig``.

The two stream versions name the same settings differently (DECTRIS Stream V1 vs V2 documentation): ``photon_energy`` vs
``incident_energy``, ``x_pixels_in_detector`` vs ``image_size_x``, ``countrate_correction_count_cutoff``
vs ``saturation_value``. Mapping both here keeps the NXmx writer blind to the stream version.
Absent optional keys keep ``DetectorConfig``'s defaults; a present key of the wrong JSON/CBOR type is a
``bad_json``/``bad_cbor`` rejection, because guessing would put wrong numbers into the master file.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import numpy as np

from ..core.errors import FrameRejected
from ..core.series import MAX_ID, DetectorConfig

log = logging.getLogger(__name__)

PIXEL_DTYPES: dict[str, np.dtype] = {"uint8": np.dtype("<u1"), "uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
# Numbers from the wire are bounded before they are used. Ids reach Tango (DevLong64) and HDF5 (int64); an
# image side beyond 16384 px is no EIGER (the 16M is 4150 × 4371) and keeps a frame's byte size, which the
# LZ4 framing stores in 32 bits, below 2**32.
MAX_IMAGE_SIDE_PX = 16384
MAX_TEXT_CHARS = 4096
# The physically possible range of each DetectorConfig number; a header value outside it (NaN, 1e12 s frame
# time, 1e30 images) is dropped, keeping the field's default, instead of reaching the master file's arithmetic.
VALUE_RANGES: dict[str, tuple[float, float]] = {
    "count_time_s": (0.0, 1e6),
    "frame_time_s": (0.0, 1e6),
    "photon_energy_ev": (0.0, 1e7),
    "wavelength_a": (0.0, 1e4),
    "beam_center_x_px": (-1e6, 1e6),
    "beam_center_y_px": (-1e6, 1e6),
    "detector_distance_m": (-1e3, 1e3),
    "x_pixel_size_m": (0.0, 1.0),
    "y_pixel_size_m": (0.0, 1.0),
    "sensor_thickness_m": (0.0, 1.0),
    "nimages": (1, 2**31 - 1),
    "ntrigger": (1, 2**31 - 1),
    "bit_depth_readout": (1, 64),
    "saturation_value": (-MAX_ID, MAX_ID),
}

# Stream V2 firmware before 2023-09 sends no ``image_dtype`` (DECTRIS Stream V2 documentation). DetectorConfig
# needs a dtype, so it gets this placeholder; every Frame carries the dtype of its own typed-array tag, and
# writers must size datasets from the frames, never from this value.
PLACEHOLDER_DTYPE: np.dtype = np.dtype("<u4")

# V1 config key → DetectorConfig field (DECTRIS SIMPLON API and Stream V1 docs); shape and dtype come separately.
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

# V2 start key → DetectorConfig field (DECTRIS Stream V2 documentation). V2 has no trigger_mode or compression, and
# its distance is the beam-axis (z) component of ``detector_translation`` (``detector_distance``).
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
    """Map V1 header part 2 (the flat detector config, DECTRIS Stream V1 documentation) to a ``DetectorConfig``.

    Shape is (``y_pixels_in_detector``, ``x_pixels_in_detector``) = (height, width) and the dtype is
    ``uint<bit_depth_image>`` (it follows count_time, so it is read from every header).
    """
    shape = _shape(header, "x_pixels_in_detector", "y_pixels_in_detector", "bad_json")
    if "bit_depth_image" in header:
        dtype = pixel_dtype(f"uint{header['bit_depth_image']}")
    else:
        log.warning("V1 header has no bit_depth_image; DetectorConfig.dtype is a %s placeholder", PLACEHOLDER_DTYPE)
        dtype = PLACEHOLDER_DTYPE
    fields = _fields(header, _V1_FLOATS, _V1_INTS, _V1_STRINGS, "bad_json")
    return DetectorConfig(shape=shape, dtype=dtype, header=storable_header(header), **fields)


def config_from_v2_start(start: Mapping[str, Any]) -> DetectorConfig:
    """Map a V2 ``start`` map (already stripped of calibration arrays) to a ``DetectorConfig``.

    ``number_of_images`` is the whole series, so ``ntrigger`` is 1. Without ``image_dtype`` (older
    firmware) the dtype is ``PLACEHOLDER_DTYPE``; the frames carry the real one.
    """
    shape = _shape(start, "image_size_x", "image_size_y", "bad_cbor")
    dtype = pixel_dtype(start["image_dtype"]) if "image_dtype" in start else PLACEHOLDER_DTYPE
    fields = _fields(start, _V2_FLOATS, _V2_INTS, _V2_STRINGS, "bad_cbor")
    if (distance := detector_distance(start.get("detector_translation"))) is not None:
        fields["detector_distance_m"] = distance
    return DetectorConfig(shape=shape, dtype=dtype, ntrigger=1, header=storable_header(start), **fields)


def detector_distance(translation: object) -> float | None:
    """The sample-detector distance a V2 start message carries: the z (beam) component of its
    ``detector_translation`` [x, y, z] in m, the only distance V2 sends (NXmx then places the detector there;
    without it DIALS puts it at z = 0). The whole vector stays in detectorSpecific. None when the value is not
    three finite numbers or z lies outside the physical range."""
    if not (isinstance(translation, (list, tuple)) and len(translation) == 3):
        return None
    values = [as_float(v) for v in translation]
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    low, high = VALUE_RANGES["detector_distance_m"]
    z = values[2]
    return z if z is not None and low <= z <= high else None


def as_float(value: object) -> float | None:
    """A number or a V2 Rational ``[num, den]`` (times, in seconds) as float; ``None`` when malformed, inf
    when beyond a float's range (a 10**400 from the wire, which every range check then refuses)."""
    try:
        if isinstance(value, (list, tuple)) and len(value) == 2:
            num, den = value
            if _is_int(num) and _is_int(den) and den != 0:
                return num / den
            return None
        if isinstance(value, (int, float, Fraction)) and not isinstance(value, bool):
            return float(value)
    except OverflowError:
        return math.inf
    return None


def _shape(header: Mapping[str, Any], width_key: str, height_key: str, reason: str) -> tuple[int, int]:
    """(height, width) from the header's width/height keys; both must be positive integers."""
    missing = [k for k in (width_key, height_key) if k not in header]
    if missing:
        raise FrameRejected(reason, f"series header lacks {', '.join(missing)}")
    width, height = header[width_key], header[height_key]
    if not (_is_int(width) and _is_int(height) and 0 < width <= MAX_IMAGE_SIDE_PX and 0 < height <= MAX_IMAGE_SIDE_PX):
        raise FrameRejected("bad_shape", f"image size {width!r} x {height!r} is not two integers in 1…{MAX_IMAGE_SIDE_PX}")
    return int(height), int(width)


def image_side(value: object) -> bool:
    """Whether ``value`` can be the width or height of an image (a positive integer, at most 16384)."""
    return _is_int(value) and 0 < value <= MAX_IMAGE_SIDE_PX  # type: ignore[operator]


def wire_id(value: object) -> bool:
    """Whether ``value`` can be a series, frame or image id: an integer in 0 … 2**63 − 1."""
    return _is_int(value) and 0 <= value <= MAX_ID  # type: ignore[operator]


def series_or_none(value: object) -> int | None:
    """``value`` as a series id when it can be one: names the series of a message rejected for other faults."""
    return int(value) if wire_id(value) else None  # type: ignore[call-overload]


def storable_header(header: Mapping[str, Any]) -> dict[str, Any]:
    """The header without the values an HDF5 attribute or dataset cannot hold as they came: text with NUL or
    other control characters (or over 4096 characters), integers beyond int64, containers of those. Such a
    value is dropped and logged, so one odd key never stops the series' master file."""
    kept = {key: value for key, value in header.items() if _storable(value)}
    if dropped := sorted(set(header) - set(kept)):
        log.warning("series header values that cannot be stored dropped from detectorSpecific: %s", ", ".join(dropped))
    return kept


def _storable(value: object, depth: int = 0) -> bool:
    if isinstance(value, str):
        return len(value) <= MAX_TEXT_CHARS and value.isprintable()
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return True
    if _is_int(value):
        return -MAX_ID - 1 <= value <= MAX_ID  # type: ignore[operator]
    if isinstance(value, (list, tuple)):
        return depth < 4 and all(_storable(item, depth + 1) for item in value)
    if isinstance(value, Mapping):
        return depth < 4 and all(isinstance(k, str) and _storable(v, depth + 1) for k, v in value.items())
    return isinstance(value, (bytes, Fraction, np.generic))


def _fields(
    header: Mapping[str, Any],
    floats: Mapping[str, str],
    ints: Mapping[str, str],
    strings: Mapping[str, str],
    reason: str,
) -> dict[str, Any]:
    """DetectorConfig keyword arguments for the keys present. A value of the wrong type rejects the header;
    a value of the right type but outside ``VALUE_RANGES`` (or text that cannot be stored) is dropped and
    logged, the field keeping its default: the series goes on with one metadata value fewer."""
    fields: dict[str, Any] = {}
    dropped: list[str] = []
    for key, name in floats.items():
        if key in header:
            value = as_float(header[key])
            if value is None:
                raise FrameRejected(reason, f"{key}={header[key]!r} is not a number")
            low, high = VALUE_RANGES[name]
            if low <= value <= high:  # False for NaN
                fields[name] = value
            else:
                dropped.append(f"{key}={value!r}")
    for key, name in ints.items():
        if key in header:
            if not _is_int(header[key]):
                raise FrameRejected(reason, f"{key}={header[key]!r} is not an integer")
            low, high = VALUE_RANGES[name]
            if low <= header[key] <= high:
                fields[name] = int(header[key])
            else:
                dropped.append(f"{key}={header[key]!r}")
    for key, name in strings.items():
        if key in header:
            if not isinstance(header[key], str):
                raise FrameRejected(reason, f"{key}={header[key]!r} is not text")
            if _storable(header[key]):
                fields[name] = header[key]
            else:
                dropped.append(f"{key}={header[key][:40]!r}")
    if dropped:
        log.warning("series header values out of range dropped (defaults kept): %s", ", ".join(dropped))
    return fields


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

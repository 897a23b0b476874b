"""Stream V2 messages: one CBOR map per message, wrapped in the self-describe tag (DECTRIS Stream V2 documentation).

Every message starts with ``d9 d9 f7`` (tag 55799) and its first key is ``type``. Images are
``{"threshold_1": tag 40 [[H, W], tag 69|70 (tag 56500 [alg, elem, bytes])]}``; dims are
``[height, width]``, the reverse of V1's shape. Times are Rationals ``[n, 50_000_000]`` in seconds after
``series_date`` (the arm date).
"""

from __future__ import annotations

from typing import Any

import cbor2
import numpy as np
from cbor2 import CBORTag

from .detector_calibration import countrate_table, flatfield
from .detector_config import GONIOMETER_AXES
from .eiger_compression import Compression
from .simplon_parameters import utc_timestamp
from .stream_config import HeaderDetail
from .stream_series import ImageTiming, StreamSeries, appendix_value

SELF_DESCRIBE_TAG = 55799
DATETIME_TAG = 0
MULTI_DIM_ARRAY_TAG = 40
COMPRESSION_TAG = 56500
TIME_BASE = 50_000_000  # the Rational denominator in DECTRIS test data
CHANNEL = "threshold_1"  # one threshold simulated; multichannel data is V2-only on hardware
TYPED_ARRAY_TAGS = {
    np.dtype(np.uint8): 64,
    np.dtype(np.uint16): 69,
    np.dtype(np.uint32): 70,
    np.dtype(np.float32): 85,
}


def _message(fields: dict[str, Any]) -> list[bytes]:
    return [cbor2.dumps(CBORTag(SELF_DESCRIBE_TAG, fields))]


def _rational(seconds: float) -> list[int]:
    return [round(seconds * TIME_BASE), TIME_BASE]


def _date(series: StreamSeries) -> CBORTag:
    return CBORTag(DATETIME_TAG, utc_timestamp(series.arm_date))


def _array(values: np.ndarray) -> CBORTag:
    """An uncompressed row-major MultiDimArray (calibration arrays)."""
    little = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
    return CBORTag(MULTI_DIM_ARRAY_TAG, [list(values.shape), CBORTag(TYPED_ARRAY_TAGS[values.dtype], little.tobytes())])


def compressed_payload(series: StreamSeries, blob: bytes) -> bytes | CBORTag:
    """What stands where the typed array's byte string would: the blob, inside tag 56500 when compressed."""
    compression = series.compression
    if compression is Compression.BSLZ4:
        return CBORTag(COMPRESSION_TAG, ["bslz4", series.dtype.itemsize, blob])
    if compression is Compression.LZ4:
        return CBORTag(COMPRESSION_TAG, ["lz4", 0, blob])
    return blob


def start_message(series: StreamSeries) -> list[bytes]:
    config = series.detector_config
    height, width = series.frames.shape
    full = series.header_detail is HeaderDetail.ALL
    fields: dict[str, Any] = {
        "type": "start",
        "series_id": series.series_id,
        "series_unique_id": series.unique_id,
        "arm_date": _date(series),
        "beam_center_x": config["beam_center_x"],
        "beam_center_y": config["beam_center_y"],
        "channels": [CHANNEL],
        "count_time": config["count_time"],
        "countrate_correction_enabled": config["countrate_correction_applied"],
        "detector_description": config["description"],
        "detector_serial_number": config["detector_number"],
        "detector_translation": list(config["detector_translation"]),
        "flatfield_enabled": config["flatfield_correction_applied"],
        "frame_time": config["frame_time"],
        "goniometer": {
            axis: {"increment": config[f"{axis}_increment"], "start": config[f"{axis}_start"]}
            for axis in GONIOMETER_AXES
        },
        "image_dtype": series.dtype.name,
        "image_size_x": width,
        "image_size_y": height,
        "incident_energy": config["incident_energy"],
        "incident_wavelength": config["wavelength"],
        "number_of_images": series.nimages * series.ntrigger,
        "pixel_mask_enabled": config["pixel_mask_applied"],
        "pixel_size_x": config["x_pixel_size"],
        "pixel_size_y": config["y_pixel_size"],
        "saturation_value": config["countrate_correction_count_cutoff"],
        "sensor_material": config["sensor_material"],
        "sensor_thickness": config["sensor_thickness"],
        "threshold_energy": {CHANNEL: config["threshold_energy"]},
        "user_data": appendix_value(series.header_appendix),
        "virtual_pixel_interpolation_enabled": config["virtual_pixel_correction_applied"],
    }
    if full:
        table = countrate_table(int(config["countrate_correction_count_cutoff"]))
        fields["countrate_correction_lookup_table"] = CBORTag(
            TYPED_ARRAY_TAGS[np.dtype(np.uint32)], np.round(table[:, 1]).astype("<u4").tobytes()
        )
        fields["flatfield"] = {CHANNEL: _array(flatfield((height, width)))}
        fields["pixel_mask"] = {CHANNEL: _array(np.asarray(series.frames.pixel_mask, dtype=np.uint32))}
    return _message(fields)


def image_message(series: StreamSeries, index: int, timing: ImageTiming) -> list[bytes]:
    height, width = series.frames.shape
    encoded = series.encoded_image(index)
    data = CBORTag(
        MULTI_DIM_ARRAY_TAG,
        [[height, width], CBORTag(TYPED_ARRAY_TAGS[series.dtype], compressed_payload(series, encoded.blob))],
    )
    return _message(
        {
            "type": "image",
            "series_id": series.series_id,
            "series_unique_id": series.unique_id,
            "image_id": index,
            "series_date": _date(series),
            "start_time": _rational(timing.start_s),
            "stop_time": _rational(timing.stop_s),
            "real_time": _rational(timing.exposure_s),
            "user_data": appendix_value(series.image_appendix),
            "data": {CHANNEL: data},
        }
    )


def end_message(series: StreamSeries) -> list[bytes]:
    return _message({"type": "end", "series_id": series.series_id, "series_unique_id": series.unique_id})

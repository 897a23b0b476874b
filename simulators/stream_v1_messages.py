"""Stream V1 ("legacy") messages, built part by part from the DECTRIS Stream V1 documentation.

Part counts are exact because LImA checks them: header 1 (none) / 2 (basic) / 8 (all) parts plus one
for a ``header_appendix``; image 4 parts plus one for an ``image_appendix``; end 1 part.
Shapes are ``[x, y]`` = ``[width, height]``. Times in ``dconfig`` are nanoseconds on the detector clock
(``time.monotonic``, an uptime-like count as on hardware), not Unix time.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from .detector_calibration import countrate_table, flatfield
from .eiger_compression import Compression
from .stream_config import HeaderDetail
from .stream_series import ImageTiming, StreamSeries

# The config keys of a real EIGER2 V1 header (DECTRIS Stream V1 documentation), in its order.
HEADER_CONFIG_KEYS = (
    "auto_summation beam_center_x beam_center_y bit_depth_image bit_depth_readout chi_increment chi_start "
    "compression count_time countrate_correction_applied countrate_correction_count_cutoff data_collection_date "
    "description detector_distance detector_number detector_readout_time detector_translation eiger_fw_version "
    "element flatfield_correction_applied frame_count_time frame_period frame_time kappa_increment kappa_start "
    "nimages ntrigger omega_increment omega_start phi_increment phi_start photon_energy pixel_mask_applied "
    "roi_mode sensor_material sensor_thickness software_version trigger_mode two_theta_increment two_theta_start "
    "virtual_pixel_correction_applied wavelength x_pixel_size x_pixels_in_detector y_pixel_size y_pixels_in_detector"
).split()


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def encoding(series: StreamSeries) -> str:
    """``bs16-lz4<`` etc. (element size in bits), ``lz4<`` for one raw LZ4 block, ``<`` uncompressed."""
    compression = series.compression
    if compression is Compression.BSLZ4:
        return f"bs{series.dtype.itemsize * 8}-lz4<"
    return "lz4<" if compression is Compression.LZ4 else "<"


def start_message(series: StreamSeries) -> list[bytes]:
    detail = series.header_detail
    parts = [_json({"htype": "dheader-1.0", "series": series.series_id, "header_detail": detail.value})]
    if detail is not HeaderDetail.NONE:
        parts.append(_json({key: series.detector_config[key] for key in HEADER_CONFIG_KEYS}))
    if detail is HeaderDetail.ALL:
        height, width = series.frames.shape
        table = countrate_table(int(series.detector_config["countrate_correction_count_cutoff"]))
        parts += [
            _json({"htype": "dflatfield-1.0", "shape": [width, height], "type": "float32"}),
            flatfield((height, width)).astype("<f4", copy=False).tobytes(),
            _json({"htype": "dpixelmask-1.0", "shape": [width, height], "type": "uint32"}),
            np.asarray(series.frames.pixel_mask).astype("<u4", copy=False).tobytes(),
            _json({"htype": "dcountrate_table-1.0", "shape": [2, table.shape[0]], "type": "float32"}),
            table.astype("<f4", copy=False).tobytes(),
        ]
    if series.header_appendix:
        parts.append(series.header_appendix.encode())
    return parts


def image_message(series: StreamSeries, index: int, timing: ImageTiming) -> list[bytes]:
    encoded = series.encoded_image(index)
    height, width = series.frames.shape
    clock_ns = series.arm_clock_s * 1e9
    parts = [
        _json({"htype": "dimage-1.0", "series": series.series_id, "frame": index, "hash": encoded.md5_hex}),
        _json(
            {
                "htype": "dimage_d-1.0",
                "shape": [width, height],
                "type": series.dtype.name,
                "encoding": encoding(series),
                "size": len(encoded.blob),
            }
        ),
        encoded.blob,
        _json(
            {
                "htype": "dconfig-1.0",
                "start_time": round(clock_ns + timing.start_s * 1e9),
                "stop_time": round(clock_ns + timing.stop_s * 1e9),
                "real_time": round(timing.exposure_s * 1e9),
            }
        ),
    ]
    if series.image_appendix:
        parts.append(series.image_appendix.encode())
    return parts


def end_message(series: StreamSeries) -> list[bytes]:
    return [_json({"htype": "dseries_end-1.0", "series": series.series_id})]

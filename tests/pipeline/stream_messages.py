"""Eiger stream messages built by hand from DECTRIS's stream docs, independent of detpipe's simulators and decoders.

Compressed blobs are real: ``bitshuffle.compress_lz4`` with the 12-byte header prepended (what the
detector's filter writes), ``lz4.block`` for V1 ``lz4<``, and HDF5-32004 framing built block by block.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import bitshuffle
import cbor2
import lz4.block
import numpy as np

BLOCK_BYTES = 8192
TYPED_ARRAY_TAGS = {"uint8": 64, "uint16": 69, "uint32": 70, "float32": 85}
V1_BSLZ4 = {1: "bs8-lz4<", 2: "bs16-lz4<", 4: "bs32-lz4<"}


def pixels(shape: tuple[int, int], dtype: str = "uint16", seed: int = 0) -> np.ndarray:
    """Low-count Poisson background with a few bright and masked pixels (2**bits − 1), like a diffraction frame."""
    rng = np.random.default_rng(seed)
    frame = rng.poisson(1.5, shape).astype(dtype)
    flat = frame.reshape(-1)
    flat[rng.integers(0, flat.size, 20)] = rng.integers(100, 5000, 20).astype(dtype)
    flat[rng.integers(0, flat.size, 5)] = np.iinfo(dtype).max
    return frame


def bslz4_blocks(frame: np.ndarray) -> bytes:
    """Header-less bitshuffle-LZ4 output, what the ALBA simulator sends."""
    return bitshuffle.compress_lz4(frame, block_size=BLOCK_BYTES // frame.itemsize).tobytes()


def bslz4_chunk(frame: np.ndarray) -> bytes:
    """An HDF5 filter-32008 chunk: ``>QI`` (nbytes, 8192) + blocks, as real detectors send it."""
    return struct.pack(">QI", frame.nbytes, BLOCK_BYTES) + bslz4_blocks(frame)


def corrupt_first_match(chunk: bytes) -> bytes:
    """``chunk`` (32008) with its first block's first match offset set to 0xffff: reaching far before the start of
    the block, so the chain and sizes stay intact and only parsing the LZ4 sequences tells (issue 14 case 5)."""
    pos, literals = 12 + 4 + 1, chunk[16] >> 4  # after the chunk header, the block length and the first token
    if literals == 15:
        while chunk[pos] == 255:
            literals, pos = literals + 255, pos + 1
        literals, pos = literals + chunk[pos], pos + 1
    at = pos + literals
    return chunk[:at] + b"\xff\xff" + chunk[at + 2:]


def lz4_chunk(frame: np.ndarray, block_bytes: int = BLOCK_BYTES) -> bytes:
    """An HDF5 filter-32004 chunk, as V2 ``lz4`` sends it; incompressible blocks are stored raw."""
    raw = frame.tobytes()
    out = [struct.pack(">QI", len(raw), block_bytes)]
    for start in range(0, len(raw), block_bytes):
        block = raw[start : start + block_bytes]
        packed = lz4.block.compress(block, store_size=False)
        payload = block if len(packed) >= len(block) else packed
        out.append(struct.pack(">I", len(payload)) + payload)
    return b"".join(out)


def lz4_raw_block(frame: np.ndarray) -> bytes:
    """V1 ``lz4<``: one raw LZ4 block of the whole frame, no size prefix, no framing."""
    return lz4.block.compress(frame.tobytes(), store_size=False)


def lz4_block_as_long_as_its_frame() -> tuple[bytes, bytes]:
    """(raw LZ4 block, the 26 bytes it decodes to) with ``len(block) == 26``: the 32004 framing's edge case.

    10 literals + a 4-byte match of the first 4 bytes + 12 final literals cost 1 + 10 + 2 + 1 + 12 = 26
    bytes in LZ4's sequence format, exactly the raw size.
    """
    noise = np.random.default_rng(1).integers(0, 256, 32, dtype=np.uint8).tobytes()
    raw = noise[:10] + noise[:4] + noise[20:32]
    block = lz4.block.compress(raw, store_size=False)
    assert len(block) == len(raw) == 26
    return block, raw


# --- Stream V1 (DECTRIS Stream V1 documentation) ----------------------------------------------------------------------


def v1_config(shape: tuple[int, int], dtype: str = "uint16", **overrides: Any) -> dict[str, Any]:
    """Part 2 of a V1 header with the keys of a real EIGER2 header; ``shape`` is (height, width)."""
    config = {
        "auto_summation": True,
        "beam_center_x": 512.5,
        "beam_center_y": 530.25,
        "bit_depth_image": np.dtype(dtype).itemsize * 8,
        "bit_depth_readout": 16,
        "compression": "bslz4",
        "count_time": 0.0099999,
        "countrate_correction_applied": True,
        "countrate_correction_count_cutoff": 21517,
        "data_collection_date": "2024-03-01T10:00:00.000+01:00",
        "description": "Dectris EIGER2 Si 1M",
        "detector_distance": 0.125,
        "detector_number": "E-02-0001",
        "frame_time": 0.01,
        "nimages": 10,
        "ntrigger": 2,
        "omega_increment": 0.1,
        "omega_start": 0.0,
        "photon_energy": 12400.0,
        "pixel_mask_applied": True,
        "roi_mode": "",
        "sensor_material": "Si",
        "sensor_thickness": 0.00045,
        "trigger_mode": "exts",
        "wavelength": 0.99987,
        "x_pixel_size": 7.5e-05,
        "x_pixels_in_detector": shape[1],
        "y_pixel_size": 7.5e-05,
        "y_pixels_in_detector": shape[0],
    }
    config.update(overrides)
    return config


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def v1_calibration(htype: str, array: np.ndarray | None) -> list[bytes]:
    """A dflatfield/dpixelmask pair; ``None`` gives the real detector's empty form."""
    if array is None:
        return [_json({"htype": htype, "shape": [], "type": "undefined"}), b""]
    meta = {"htype": htype, "shape": [array.shape[1], array.shape[0]], "type": array.dtype.name}
    return [_json(meta), array.tobytes()]


def v1_header(
    series: int,
    detail: str,
    config: dict[str, Any] | None = None,
    *,
    flatfield: np.ndarray | None = None,
    pixel_mask: np.ndarray | None = None,
    calibration_parts: list[bytes] | None = None,
    appendix: bytes | None = None,
) -> list[bytes]:
    """A global header with 1 / 2 / 8 parts for none / basic / all, plus the optional appendix."""
    parts = [_json({"htype": "dheader-1.0", "series": series, "header_detail": detail})]
    if detail in ("basic", "all"):
        parts.append(_json(config if config is not None else v1_config((64, 96))))
    if detail == "all":
        parts += calibration_parts or (
            v1_calibration("dflatfield-1.0", flatfield) + v1_calibration("dpixelmask-1.0", pixel_mask)
        )
        table = np.linspace(0, 1, 2 * 1001, dtype="<f4")
        parts += [_json({"htype": "dcountrate_table-1.0", "shape": [2, 1001], "type": "float32"}), table.tobytes()]
    if appendix is not None:
        parts.append(appendix)
    return parts


def v1_image(
    series: int,
    frame: int,
    image: np.ndarray,
    encoding: str = "bslz4",
    *,
    blob: bytes | None = None,
    meta: dict[str, Any] | None = None,
    appendix: bytes | None = None,
) -> list[bytes]:
    """An image message; ``encoding`` is ``bslz4`` (framed), ``bslz4-headerless``, ``lz4`` or ``raw``."""
    if blob is None:
        blob = {
            "bslz4": bslz4_chunk,
            "bslz4-headerless": bslz4_blocks,
            "lz4": lz4_raw_block,
            "raw": lambda a: a.tobytes(),
        }[encoding](image)
    wire_encoding = {"lz4": "lz4<", "raw": "<"}.get(encoding, V1_BSLZ4[image.itemsize])
    dimage_d = {
        "htype": "dimage_d-1.0",
        "shape": [image.shape[1], image.shape[0]],
        "type": image.dtype.name,
        "encoding": wire_encoding,
        "size": len(blob),
    }
    dimage_d.update(meta or {})
    times = {
        "htype": "dconfig-1.0",
        "start_time": 2_896_000_000_000_000,
        "stop_time": 2_896_000_010_000_000,
        "real_time": 9_999_900,
    }
    parts = [
        _json({"htype": "dimage-1.0", "series": series, "frame": frame, "hash": "0123456789abcdef"}),
        _json(dimage_d),
        blob,
        _json(times),
    ]
    if appendix is not None:
        parts.append(appendix)
    return parts


def v1_end(series: int) -> list[bytes]:
    return [_json({"htype": "dseries_end-1.0", "series": series})]


# --- Stream V2 (DECTRIS Stream V2 documentation) ----------------------------------------------------------------------


def v2_message(content: dict[str, Any]) -> bytes:
    """One CBOR map wrapped in the self-describe tag 55799 (starts with d9 d9 f7)."""
    return cbor2.dumps(cbor2.CBORTag(55799, content))


def v2_array(array: np.ndarray, compression: str | None = None) -> cbor2.CBORTag:
    """Tag 40 MultiDimArray ``[[height, width], typed array]``, optionally over a tag-56500 compression."""
    if compression == "bslz4":
        payload: Any = cbor2.CBORTag(56500, ["bslz4", array.itemsize, bslz4_chunk(array)])
    elif compression == "lz4":
        payload = cbor2.CBORTag(56500, ["lz4", 0, lz4_chunk(array)])
    else:
        payload = array.tobytes()
    return cbor2.CBORTag(40, [list(array.shape), cbor2.CBORTag(TYPED_ARRAY_TAGS[array.dtype.name], payload)])


def v2_start(
    series: int,
    shape: tuple[int, int],
    dtype: str = "uint16",
    *,
    channels: tuple[str, ...] = ("threshold_1",),
    image_dtype: bool = True,
    calibration: dict[str, dict[str, np.ndarray]] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A ``start`` map with the V2 fields; ``calibration`` maps flatfield/pixel_mask to channel → array."""
    start: dict[str, Any] = {
        "type": "start",
        "series_id": series,
        "series_unique_id": "01HQ8Z6M3J5K7N9P0R2S4T6V8W",
        "arm_date": cbor2.CBORTag(0, "2024-03-01T10:00:00.123+01:00"),
        "beam_center_x": 512.5,
        "beam_center_y": 530.25,
        "channels": list(channels),
        "count_time": 0.0099999,
        "frame_time": 0.01,
        "countrate_correction_enabled": True,
        "detector_description": "Dectris EIGER2 Si 16M",
        "detector_serial_number": "E-32-0123",
        "detector_translation": [0.0, 0.0, 0.2],
        "flatfield_enabled": True,
        "goniometer": {"omega": {"start": 0.0, "increment": 0.1}},
        "image_size_x": shape[1],
        "image_size_y": shape[0],
        "incident_energy": 12400.0,
        "incident_wavelength": 0.99987,
        "number_of_images": 20,
        "pixel_mask_enabled": True,
        "pixel_size_x": 7.5e-05,
        "pixel_size_y": 7.5e-05,
        "saturation_value": 21517,
        "sensor_material": "Si",
        "sensor_thickness": 0.00045,
        "threshold_energy": {name: 6200.0 for name in channels},
        "user_data": {"sample": "lysozyme"},
        "virtual_pixel_interpolation_enabled": True,
    }
    if image_dtype:
        start["image_dtype"] = dtype
    for key, per_channel in (calibration or {}).items():
        start[key] = {name: v2_array(array) for name, array in per_channel.items()}
    if calibration:
        table = np.linspace(0, 1, 1001, dtype="<f4")
        start["countrate_correction_lookup_table"] = cbor2.CBORTag(85, table.tobytes())
    start.update(overrides)
    return start


def v2_image(series: int, image_id: int, data: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """An ``image`` map; ``data`` is channel → MultiDimArray tag (see ``v2_array``). Times are Rationals."""
    image = {
        "type": "image",
        "series_id": series,
        "series_unique_id": "01HQ8Z6M3J5K7N9P0R2S4T6V8W",
        "image_id": image_id,
        "series_date": cbor2.CBORTag(0, "2024-03-01T10:00:01.000+01:00"),
        "start_time": [image_id * 500_000, 50_000_000],
        "stop_time": [image_id * 500_000 + 499_995, 50_000_000],
        "real_time": [499_995, 50_000_000],
        "user_data": "",
        "data": data,
    }
    image.update(overrides)
    return image


def v2_end(series: int) -> dict[str, Any]:
    return {"type": "end", "series_id": series, "series_unique_id": "01HQ8Z6M3J5K7N9P0R2S4T6V8W"}

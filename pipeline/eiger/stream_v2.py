"""Stream V2 (CBOR, DECTRIS Stream V2 docs): one single-part message → ``SeriesStart``, ``Frame``s or ``EndOfSeries``.

Stateless like the V1 module; the decoder does the series bookkeeping. Each message is a CBOR map
wrapped in the self-describe tag 55799 (bytes ``d9 d9 f7``; DECTRIS's own parser rejects messages without
it, and so does this one). Tags this module decodes itself: 40 (row-major MultiDimArray, dims
``[height, width]``), 64/69/70/85 (typed arrays) and 56500 (compression ``[algorithm, modifier, bytes]``).
cbor2 decodes tag 0 (DateTime) and strips 55799. Image blobs pass through as HDF5 chunks: ``bslz4`` and
``lz4`` are already 32008/32004 chunks with the 12-byte header, an uncompressed typed array is
raw pixels. cbor2 hands back each byte string as a new ``bytes`` object, so that is the frame's blob.

The tag hook accepts both cbor2 signatures: ``hook(tag, immutable)`` in cbor2 ≥ 6 (checked on 6.2.1,
whose docstring still shows the old order) and ``hook(decoder, tag)`` before that.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import cbor2
import numpy as np

from ..core.chunk_framing import ChunkBlob, check_chunk, decode_chunk_pixels, frame_bslz4
from ..core.errors import FrameRejected
from ..core.frame import Encoding, Frame
from ..core.series import EndOfSeries, EndReason, SeriesStart
from .header import as_float, config_from_v2_start, image_side, pixel_dtype, series_or_none, wire_id

log = logging.getLogger(__name__)

SELF_DESCRIBE = b"\xd9\xd9\xf7"  # tag 55799, the first three bytes of every V2 message
_TYPED_ARRAY_DTYPES: dict[int, np.dtype] = {
    64: np.dtype("<u1"),
    69: np.dtype("<u2"),
    70: np.dtype("<u4"),
    85: np.dtype("<f4"),
}
_MULTI_DIM_ARRAY, _COMPRESSION = 40, 56500
_CALIBRATION_KEYS = ("flatfield", "pixel_mask", "countrate_correction_lookup_table")  # left out of the header


@dataclass(frozen=True, slots=True)
class _Compressed:
    """Tag 56500: ``bslz4`` (elem_size, 32008 chunk) or ``lz4`` (modifier 0, 32004 chunk) bytes."""

    algorithm: object
    modifier: object
    blob: object


@dataclass(frozen=True, slots=True)
class _TypedArray:
    """Tags 64/69/70/85 over a byte string, or over a 56500 compression of one."""

    dtype: np.dtype
    payload: object


@dataclass(frozen=True, slots=True)
class _MultiDimArray:
    """Tag 40: ``[dims, array]`` in row-major order; dims are ``[height, width]`` for images."""

    dims: object
    array: object


def decode_v2(
    message: bytes, received_s: float, *, image_dtype: np.dtype | None = None, verify_chain: bool = True
) -> SeriesStart | list[Frame] | EndOfSeries:
    """Decode one V2 message. ``image_dtype`` (from the series' start) types a blob sent without a
    typed-array tag; frames otherwise take their dtype from the tag (old firmware sends no image_dtype)."""
    if not message.startswith(SELF_DESCRIBE):
        raise FrameRejected("missing_self_describe_tag", f"message starts with {bytes(message[:3]).hex()}")
    try:
        content = cbor2.loads(message, tag_hook=_tag_hook)
    except cbor2.CBORError as err:
        raise FrameRejected("bad_cbor", str(err)) from None
    except RecursionError:
        raise FrameRejected("bad_cbor", "the message nests deeper than Python's recursion limit") from None
    if not isinstance(content, Mapping):
        raise FrameRejected("bad_cbor", f"message is a CBOR {type(content).__name__}, not a map")
    kind = content.get("type")
    if kind == "image":
        try:
            return _image(content, received_s, image_dtype, verify_chain)
        except FrameRejected as err:
            err.image_of_series = series_or_none(content.get("series_id"))
            raise
    if kind == "start":
        return _start(content, received_s)
    if kind == "end":
        return EndOfSeries(_uint(content, "series_id"), EndReason.END_MESSAGE)
    raise FrameRejected("unknown_message_type", f"type {kind!r}")


def _tag_hook(first: object, second: object) -> object:
    """Wrap the tags cbor2 does not know; decoding of their content is deferred so the hook never raises."""
    tag = first if isinstance(first, cbor2.CBORTag) else second
    if not isinstance(tag, cbor2.CBORTag):
        return tag
    if tag.tag in _TYPED_ARRAY_DTYPES:
        return _TypedArray(_TYPED_ARRAY_DTYPES[tag.tag], tag.value)
    if tag.tag == _COMPRESSION and isinstance(tag.value, (list, tuple)) and len(tag.value) == 3:
        return _Compressed(*tag.value)
    if tag.tag == _MULTI_DIM_ARRAY and isinstance(tag.value, (list, tuple)) and len(tag.value) == 2:
        return _MultiDimArray(*tag.value)
    return tag


def _start(content: Mapping[str, Any], received_s: float) -> SeriesStart:
    """``start`` → SeriesStart; calibration comes from the first channel's entry of each map."""
    series_id = _uint(content, "series_id")
    header = {key: _plain(value) for key, value in content.items() if key not in _CALIBRATION_KEYS}
    channels = content.get("channels")
    first_channel = channels[0] if isinstance(channels, (list, tuple)) and channels else None
    pixel_mask = _calibration(content.get("pixel_mask"), first_channel, "pixel_mask")
    flatfield = _calibration(content.get("flatfield"), first_channel, "flatfield")
    unique_id = content.get("series_unique_id")
    return SeriesStart(
        series_id,
        # V2 treats header_detail none like basic; only "all" sends calibration.
        "all" if any(key in content for key in _CALIBRATION_KEYS) else "basic",
        config=config_from_v2_start(header),
        pixel_mask=pixel_mask,
        flatfield=flatfield,
        appendix=header.get("user_data"),
        received_s=received_s,
        unique_id=unique_id if isinstance(unique_id, str) else "",
    )


def _image(
    content: Mapping[str, Any], received_s: float, image_dtype: np.dtype | None, verify_chain: bool
) -> list[Frame]:
    """``image`` → one Frame per channel; all channels of one exposure share the message."""
    series_id = _uint(content, "series_id")
    index = _uint(content, "image_id")
    channels = content.get("data")
    if not isinstance(channels, Mapping) or not channels:
        raise FrameRejected("bad_cbor", "image has no data map of channel -> MultiDimArray")
    start_s, stop_s, real_s = (_seconds(content.get(key)) for key in ("start_time", "stop_time", "real_time"))
    frames = []
    for channel, array in channels.items():
        shape, dtype, encoding, blob = _channel_chunk(channel, array, image_dtype, verify_chain)
        frames.append(
            Frame(
                series_id=series_id,
                index=index,
                shape=shape,
                dtype=dtype,
                encoding=encoding,
                blob=blob,
                received_s=received_s,
                start_time_s=start_s,
                stop_time_s=stop_s,
                real_time_s=real_s,
                channel=str(channel),
            )
        )
    return frames


def _seconds(value: object) -> float | None:
    """An image time (Rational seconds); one that is not a finite number is treated as absent."""
    seconds = as_float(value)
    return seconds if seconds is not None and math.isfinite(seconds) else None


def _channel_chunk(
    channel: object, array: object, image_dtype: np.dtype | None, verify_chain: bool
) -> tuple[tuple[int, int], np.dtype, Encoding, ChunkBlob]:
    """(shape, dtype, encoding, chunk) of one channel's MultiDimArray, checked against its declared size."""
    if not isinstance(array, _MultiDimArray):
        what = f"tag {array.tag}" if isinstance(array, cbor2.CBORTag) else type(array).__name__
        raise FrameRejected("unknown_encoding", f"channel {channel!r} is a {what}, not a tag-40 MultiDimArray")
    shape = _dims(array.dims)
    payload, dtype = array.array, image_dtype
    if isinstance(array.array, _TypedArray):
        payload, dtype = array.array.payload, array.array.dtype
    elif dtype is None and isinstance(payload, _Compressed) and payload.algorithm == "bslz4":
        # bslz4 names its element size; unsigned is the only pixel kind Eigers send.
        dtype = pixel_dtype(f"uint{8 * payload.modifier}") if payload.modifier in (1, 2, 4) else None
    if dtype is None:
        raise FrameRejected("unknown_encoding", f"channel {channel!r} has no typed-array tag and no image_dtype")
    if dtype.kind != "u":
        raise FrameRejected("unknown_encoding", f"channel {channel!r} pixel type {dtype.name}")
    nbytes = shape[0] * shape[1] * dtype.itemsize
    if isinstance(payload, bytes):
        check_chunk(Encoding.RAW, payload, nbytes, dtype.itemsize)
        return shape, dtype, Encoding.RAW, payload
    if not isinstance(payload, _Compressed):
        raise FrameRejected("unknown_encoding", f"channel {channel!r} payload is a {type(payload).__name__}")
    if not isinstance(payload.blob, bytes):
        raise FrameRejected("bad_cbor", f"channel {channel!r} compressed payload is not a byte string")
    if payload.algorithm == "bslz4":
        if payload.modifier != dtype.itemsize:
            raise FrameRejected(
                "size_mismatch", f"bslz4 element size {payload.modifier!r} does not fit pixel type {dtype.name}"
            )
        chunk = frame_bslz4(payload.blob, nbytes)  # V2 always sends the header; this is a no-op then
        check_chunk(Encoding.BSLZ4, chunk, nbytes, dtype.itemsize, walk_chain=verify_chain)
        return shape, dtype, Encoding.BSLZ4, chunk
    if payload.algorithm == "lz4":
        check_chunk(Encoding.LZ4, payload.blob, nbytes, dtype.itemsize, walk_chain=verify_chain)
        return shape, dtype, Encoding.LZ4, payload.blob
    raise FrameRejected("unknown_encoding", f"compression {payload.algorithm!r}")


def _dims(dims: object) -> tuple[int, int]:
    """Image dims are ``[height, width]`` (V1 sends [width, height]), both positive integers."""
    if isinstance(dims, (list, tuple)) and len(dims) == 2 and all(image_side(n) for n in dims):
        return dims[0], dims[1]
    raise FrameRejected("bad_shape", f"MultiDimArray dims {dims!r} are not [height, width] of 1…16384 px")


def _calibration(per_channel: object, channel: object, key: str) -> np.ndarray | None:
    """The first channel's calibration array, or ``None``; a malformed one never rejects the start."""
    if not isinstance(per_channel, Mapping) or not per_channel:
        return None
    array = per_channel.get(channel) if channel in per_channel else next(iter(per_channel.values()))
    try:
        return _ndarray(array)
    except (FrameRejected, ValueError) as err:
        log.warning("start %s treated as absent: %s", key, err)
        return None


def _ndarray(array: object) -> np.ndarray:
    """A typed (possibly compressed) MultiDimArray as a numpy array over cbor2's own bytes."""
    if not (isinstance(array, _MultiDimArray) and isinstance(array.array, _TypedArray)):
        raise ValueError(f"{type(array).__name__} is not a typed MultiDimArray")
    shape = _dims(array.dims)
    payload, dtype = array.array.payload, array.array.dtype
    if isinstance(payload, _Compressed):
        encoding = {"bslz4": Encoding.BSLZ4, "lz4": Encoding.LZ4}.get(payload.algorithm)  # type: ignore[call-overload]
        if encoding is None or not isinstance(payload.blob, bytes):
            raise ValueError(f"compression {payload.algorithm!r}")
        return decode_chunk_pixels(encoding, payload.blob, shape, dtype)
    if not isinstance(payload, bytes):
        raise ValueError(f"typed array over a {type(payload).__name__}")
    return np.frombuffer(payload, dtype=dtype).reshape(shape)


def _plain(value: object) -> Any:
    """cbor2's frozendicts, tuples and datetimes as plain JSON-like values for ``DetectorConfig.header``."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, _MultiDimArray):
        try:
            return _ndarray(value)
        except (FrameRejected, ValueError):
            return None
    if isinstance(value, (_TypedArray, _Compressed, cbor2.CBORTag)):
        return None  # no bare typed arrays among the V2 start fields but the excluded lookup table
    return value


def _uint(content: Mapping[str, Any], key: str) -> int:
    value = content.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise FrameRejected("bad_cbor", f"{key} {value!r} is not an integer")
    if not wire_id(value):
        raise FrameRejected("bad_id", f"{key} {value} is outside 0 … 2**63 - 1")
    return value

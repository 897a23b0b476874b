"""Stream V1 (JSON multipart, DECTRIS docs): one ZMQ message → ``SeriesStart``, ``Frame`` or ``EndOfSeries``.

Stateless: series bookkeeping (which series is open, frames of other series) is the decoder's job, so
this module only turns the parts of one message into an engine item or a ``FrameRejected``.

Messages:
- ``dheader-1.0``: 1 / 2 / 8 parts for header_detail none / basic / all, plus one optional appendix.
- ``dimage-1.0``: 4 parts (+ optional ``image_appendix``, dropped: ``Frame`` has no field for it).
- ``dseries_end-1.0``: 1 part.

Image blobs leave as HDF5 chunks: ``bsN-lz4<`` unchanged when it carries the 12-byte header (real
hardware; the same memoryview/bytes object, no copy), with a header prepended when it does not (bare simulator output);
``lz4<`` re-framed as a one-block 32004 chunk; ``<`` as raw pixels. The ``hash`` is never checked:
on hardware it matched neither the compressed nor the decompressed bytes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.chunk_framing import ChunkBlob, check_chunk, frame_bslz4, reframe_v1_lz4
from ..core.errors import FrameRejected
from ..core.frame import Encoding, Frame
from ..core.series import EndOfSeries, EndReason, SeriesStart
from .header import MAX_ID, config_from_v1_header, image_side, pixel_dtype, series_or_none, wire_id

log = logging.getLogger(__name__)

HEADER_PARTS = {"none": 1, "basic": 2, "all": 8}  # without the optional appendix (LImA checks exactly these)
IMAGE_PARTS = 4
_BSLZ4_ENCODINGS = {"bs8-lz4<": 1, "bs16-lz4<": 2, "bs32-lz4<": 4}  # encoding → element size in bytes
_CALIBRATION_DTYPES: dict[object, np.dtype] = {
    "float32": np.dtype("<f4"),
    "uint32": np.dtype("<u4"),
    "uint16": np.dtype("<u2"),
}
_NS = 1e-9
_JSON = json.JSONDecoder()
_SCAN_ONCE = _JSON.scan_once  # the C scanner: (value, end index) of the value at an index


def decode_v1(
    parts: Sequence[ChunkBlob], received_s: float, *, verify_chain: bool = True
) -> SeriesStart | Frame | EndOfSeries:
    """Decode one V1 message; raises ``FrameRejected`` for anything that does not follow DECTRIS's Stream V1 docs.

    ``verify_chain=False`` skips the bslz4 block-chain walk (see ``check_chunk``)."""
    if not parts:
        raise FrameRejected("wrong_part_count", "empty message")
    first = _json_object(parts[0], "part 1")
    htype = first.get("htype")
    if htype == "dimage-1.0":
        try:
            return _image(first, parts, received_s, verify_chain)
        except FrameRejected as err:
            err.image_of_series = series_or_none(first.get("series"))
            raise
    if htype == "dheader-1.0":
        return _header(first, parts, received_s)
    if htype == "dseries_end-1.0":
        if len(parts) != 1:
            raise FrameRejected("wrong_part_count", f"dseries_end-1.0 has {len(parts)} parts, expected 1")
        return EndOfSeries(_int(first, "series", "dseries_end-1.0"), EndReason.END_MESSAGE)
    raise FrameRejected("unknown_htype", f"part 1 htype {htype!r}")


def _header(first: dict[str, Any], parts: Sequence[ChunkBlob], received_s: float) -> SeriesStart:
    """Global header: the config JSON becomes a DetectorConfig; calibration parts are optional."""
    series_id = _int(first, "series", "dheader-1.0")
    detail = first.get("header_detail")
    if not isinstance(detail, str) or detail not in HEADER_PARTS:
        raise FrameRejected("bad_json", f"dheader-1.0 header_detail {detail!r} is not all, basic or none")
    expected = HEADER_PARTS[detail]
    if len(parts) not in (expected, expected + 1):
        raise FrameRejected(
            "wrong_part_count", f"header_detail {detail} needs {expected} parts (+1 appendix), got {len(parts)}"
        )
    appendix = _appendix(parts[expected]) if len(parts) > expected else None
    if detail == "none":
        return SeriesStart(series_id, detail, config=None, appendix=appendix, received_s=received_s)
    config = config_from_v1_header(_json_object(parts[1], "config part 2"))
    flatfield = pixel_mask = None
    if detail == "all":
        flatfield = _calibration(parts[2], parts[3], "dflatfield-1.0")
        pixel_mask = _calibration(parts[4], parts[5], "dpixelmask-1.0")
        # parts 7 + 8 (dcountrate_table-1.0) have no place in SeriesStart; the detector applies the table itself.
    return SeriesStart(
        series_id,
        detail,
        config=config,
        pixel_mask=pixel_mask,
        flatfield=flatfield,
        appendix=appendix,
        received_s=received_s,
    )


def _image(first: dict[str, Any], parts: Sequence[ChunkBlob], received_s: float, verify_chain: bool) -> Frame:
    """Image message: dimage-1.0, dimage_d-1.0, blob, dconfig-1.0 [, appendix]."""
    if len(parts) not in (IMAGE_PARTS, IMAGE_PARTS + 1):
        raise FrameRejected("wrong_part_count", f"dimage-1.0 has {len(parts)} parts, expected 4 or 5")
    series_id = _int(first, "series", "dimage-1.0")
    index = _int(first, "frame", "dimage-1.0")
    meta = _json_object(parts[1], "part 2")
    if meta.get("htype") != "dimage_d-1.0":
        raise FrameRejected("unknown_htype", f"part 2 htype {meta.get('htype')!r}, expected dimage_d-1.0")
    shape = _frame_shape(meta.get("shape"))
    dtype = pixel_dtype(meta.get("type"))
    blob = parts[2]
    if "size" in meta:
        size = meta["size"]
        if not isinstance(size, int) or isinstance(size, bool):
            raise FrameRejected("bad_json", f"dimage_d-1.0 size {size!r} is not an integer")
        if len(blob) < size:
            raise FrameRejected("truncated_blob", f"blob has {len(blob)} bytes, dimage_d-1.0 size says {size}")
        if len(blob) != size:
            raise FrameRejected("size_mismatch", f"blob has {len(blob)} bytes, dimage_d-1.0 size says {size}")
    encoding, chunk = _chunk(meta.get("encoding"), blob, shape[0] * shape[1] * dtype.itemsize, dtype, verify_chain)
    times = _json_object(parts[3], "part 4")
    if times.get("htype") != "dconfig-1.0":
        raise FrameRejected("unknown_htype", f"part 4 htype {times.get('htype')!r}, expected dconfig-1.0")
    return Frame(
        series_id=series_id,
        index=index,
        shape=shape,
        dtype=dtype,
        encoding=encoding,
        blob=chunk,
        received_s=received_s,
        start_time_s=_ns_to_s(times.get("start_time")),
        stop_time_s=_ns_to_s(times.get("stop_time")),
        real_time_s=_ns_to_s(times.get("real_time")),
    )


def _chunk(
    encoding: object, blob: ChunkBlob, nbytes: int, dtype: np.dtype, verify_chain: bool
) -> tuple[Encoding, ChunkBlob]:
    """The frame's HDF5 chunk for a V1 ``encoding`` string (``<`` is the only byte order seen)."""
    if encoding == "<":
        check_chunk(Encoding.RAW, blob, nbytes, dtype.itemsize)
        return Encoding.RAW, blob
    if encoding == "lz4<":
        if not blob:
            raise FrameRejected("truncated_blob", "empty lz4 block")
        # A raw LZ4 block has no chain to walk; transport truncation is caught by dimage_d's size.
        return reframe_v1_lz4(blob, nbytes)
    if isinstance(encoding, str) and encoding in _BSLZ4_ENCODINGS:
        if _BSLZ4_ENCODINGS[encoding] != dtype.itemsize:
            raise FrameRejected("size_mismatch", f"encoding {encoding} does not fit pixel type {dtype.name}")
        chunk = frame_bslz4(blob, nbytes)
        check_chunk(Encoding.BSLZ4, chunk, nbytes, dtype.itemsize, walk_chain=verify_chain)
        return Encoding.BSLZ4, chunk
    raise FrameRejected("unknown_encoding", f"encoding {encoding!r}")


def _frame_shape(shape: object) -> tuple[int, int]:
    """V1 ``shape`` is ``[x, y]`` = [width, height]; frames are (height, width)."""
    if isinstance(shape, list) and len(shape) == 2 and all(image_side(n) for n in shape):
        return shape[1], shape[0]
    raise FrameRejected("bad_shape", f"dimage_d-1.0 shape {shape!r} is not [width, height] of 1…16384 px")


def _calibration(meta_part: ChunkBlob, blob: ChunkBlob, htype: str) -> np.ndarray | None:
    """A flatfield or pixel mask as a (height, width) array, or ``None`` when the detector sent none.

    Real ``all`` headers may carry ``"shape": []``, ``"type": "undefined"`` and an empty blob, and simulators
    send placeholder byte strings whose size does not match the shape: both mean "absent". A malformed
    calibration never rejects the header, since losing the header would lose the whole series. The array is
    a copy: it lives for the whole series, longer than the receive buffer it arrived in.
    """
    try:
        meta = json.loads(bytes(meta_part))
    except (ValueError, RecursionError):
        log.warning("%s part is not JSON; calibration treated as absent", htype)
        return None
    if not isinstance(meta, dict) or meta.get("htype") != htype:
        log.warning("expected %s, got %r; calibration treated as absent", htype, meta)
        return None
    kind = meta.get("type")
    shape, dtype = meta.get("shape"), _CALIBRATION_DTYPES.get(kind) if isinstance(kind, str) else None
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(n, int) and n > 0 for n in shape)):
        return None
    if dtype is None or len(blob) != shape[0] * shape[1] * dtype.itemsize:
        log.info("%s of shape %s carries %d bytes; treated as absent", htype, shape, len(blob))
        return None
    return np.frombuffer(blob, dtype=dtype).reshape(shape[1], shape[0]).copy()


def _appendix(part: ChunkBlob) -> Any:
    """``header_appendix`` is user JSON or a plain string (as SIMPLON sets it); keep bytes that are neither."""
    raw = bytes(part)
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, RecursionError):
        return raw
    except ValueError:
        try:
            return raw.decode()
        except UnicodeDecodeError:  # json.loads guessed UTF-16/32 from the first bytes; keep them as bytes
            return raw


def _json_object(part: ChunkBlob, what: str) -> dict[str, Any]:
    """Parse one JSON part that must be an object.

    An image message has three JSON parts, parsed on the receive thread for every frame. The standard
    library's C scanner is called directly on the part decoded to str: 1.1 µs a part against 2.1 µs through
    ``JSONDecoder.decode`` (which wraps the same scanner in two regex matches) and 5.5 µs through
    ``json.loads(bytes)`` (which also guesses the encoding). A part the scanner does not read to its end in
    one call (surrounding whitespace, extra data, no value) goes through ``decode``, so what is accepted and
    what is refused, and the refusal's message, are the standard library's.
    """
    try:
        value = _parsed_whole(str(part, "utf-8"))
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise FrameRejected("bad_json", f"{what}: {err}") from None
    except RecursionError:
        raise FrameRejected("bad_json", f"{what} nests deeper than Python's recursion limit") from None
    if not isinstance(value, dict):
        raise FrameRejected("bad_json", f"{what} is a JSON {type(value).__name__}, not an object")
    return value


def _parsed_whole(text: str) -> Any:
    try:
        value, end = _SCAN_ONCE(text, 0)
    except StopIteration:  # no value at index 0: leading whitespace, or no JSON at all
        return _JSON.decode(text)
    return value if end == len(text) else _JSON.decode(text)


def _int(obj: dict[str, Any], key: str, htype: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise FrameRejected("bad_json", f"{htype} {key} {value!r} is not an integer")
    if not wire_id(value):
        raise FrameRejected("bad_id", f"{htype} {key} {value} is outside 0 … 2**63 - 1")
    return value


def _ns_to_s(value: object) -> float | None:
    """dconfig times are nanoseconds of the detector clock, not Unix time; one that is not a finite
    number below 2**63 ns is treated as absent, as a missing one is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= MAX_ID:
        return value * _NS  # NaN fails the bound above
    return None

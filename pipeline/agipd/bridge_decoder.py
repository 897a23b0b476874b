"""Karabo bridge messages → per-source dicts of arrays and metadata (bridge protocol docs), protocols 1.0, 2.2.

The protocol is read from the message itself: protocol 2.2 is an even number of parts whose first part
is a msgpack header map with a ``content`` field; protocol 1.0 is a single msgpack part. Arrays of a 2.2
message are ``np.frombuffer`` views over the ZMQ frame buffers (no copy: a 64-cell AGIPD train is
256 MiB). Protocol 1.0 inlines arrays msgpack-numpy style, so msgpack has already copied their bytes
once; they are wrapped, not copied again. This module never imports karabo_bridge (a
decoder must not share code with the server it is tested against).

Dicts stop here: the train assembler turns them into a ``Train``. Bad input raises
``FrameRejected(reason)``; the receiver counts it and reads the next message. Reasons: ``bad_msgpack``
(not msgpack, or not a map where the protocol has one), ``odd_part_count``, ``unknown_content``,
``missing_key`` (a 2.2 header without source/path/dtype/shape), ``bad_array_header`` (a shape that is
not a list of non-negative integers), ``bad_dtype``, ``truncated_array`` (buffer shorter or longer than
dtype × shape).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from ..core.errors import FrameRejected

# What the decoder accepts as a message part: zmq.Frame.buffer (memoryview), bytes or bytearray.
Buffer = bytes | bytearray | memoryview

_UNPACK_ERRORS = (ValueError, TypeError, msgpack.UnpackException)


class BridgeProtocol(enum.Enum):
    """The Karabo bridge protocol versions in use (2.0 and 2.1 are undocumented and unused)."""

    V1_0 = "1.0"
    V2_2 = "2.2"


@dataclass(frozen=True, slots=True)
class SourceData:
    """One source of one message: flat dotted keys (``image.data``) → numpy arrays or msgpack values.

    ``metadata`` holds ``timestamp.tid`` and friends (the bridge protocol's per-source metadata). Arrays of a 2.2
    message are read-only views on the received buffers.
    """

    source: str
    metadata: Mapping[str, Any]
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class BridgeMessage:
    """A decoded message: its protocol, its sources by name, and its size on the wire in bytes."""

    protocol: BridgeProtocol
    sources: Mapping[str, SourceData]
    nbytes: int


def decode_bridge_message(parts: Sequence[Buffer]) -> BridgeMessage:
    """Decode one multipart ZMQ message; raises ``FrameRejected`` for anything that is not a bridge train."""
    nbytes = sum(_nbytes(p) for p in parts)
    if detect_protocol(parts) is BridgeProtocol.V2_2:
        return BridgeMessage(BridgeProtocol.V2_2, _decode_v2_2(parts), nbytes)
    return BridgeMessage(BridgeProtocol.V1_0, _decode_v1_0(parts[0]), nbytes)


def detect_protocol(parts: Sequence[Buffer]) -> BridgeProtocol:
    """2.2 when the part count is even and the first part is a header map with ``content``; 1.0 for a
    single part. A single part is not unpacked here (it is the whole train): ``_decode_v1_0`` rejects a
    lone 2.2 header, i.e. a 2.2 message that lost its payload, as ``odd_part_count``."""
    if len(parts) == 1:
        return BridgeProtocol.V1_0
    if len(parts) % 2 == 1 or not parts:
        raise FrameRejected("odd_part_count", f"{len(parts)} parts; protocol 2.2 sends (header, payload) pairs")
    first = _unpack(parts[0], what="first part")
    if not (isinstance(first, dict) and "content" in first):
        raise FrameRejected("unknown_content", "first part of a multipart message is not a header with 'content'")
    return BridgeProtocol.V2_2


def _nbytes(part: Buffer) -> int:
    return part.nbytes if isinstance(part, memoryview) else len(part)


def _unpack(part: Buffer, *, what: str, object_hook: Any = None) -> Any:
    try:
        return msgpack.unpackb(part, raw=False, object_hook=object_hook)
    except FrameRejected:
        raise
    except _UNPACK_ERRORS as err:
        raise FrameRejected("bad_msgpack", f"{what}: {type(err).__name__}: {err}") from None


def _decode_v2_2(parts: Sequence[Buffer]) -> dict[str, SourceData]:
    metadata: dict[str, dict[str, Any]] = {}
    data: dict[str, dict[str, Any]] = {}
    for i in range(0, len(parts), 2):
        header = _unpack(parts[i], what=f"header part {i}")
        if not isinstance(header, dict):
            raise FrameRejected("bad_msgpack", f"header part {i} is a {type(header).__name__}, not a map")
        source = _required(header, "source", i)
        content = _required(header, "content", i)
        if not isinstance(source, str):
            raise FrameRejected("bad_msgpack", f"header part {i}: source {source!r} is not a name")
        if content == "msgpack":
            payload = _unpack(parts[i + 1], what=f"payload part {i + 1}")
            if not isinstance(payload, dict):
                raise FrameRejected("bad_msgpack", f"payload of {source!r} is a {type(payload).__name__}, not a map")
            data.setdefault(source, {}).update(payload)
            meta = header.get("metadata", {})
            metadata[source] = meta if isinstance(meta, dict) else {}
        elif content == "array":
            path = _required(header, "path", i)
            array = _array_from_buffer(parts[i + 1], _required(header, "dtype", i), _required(header, "shape", i))
            data.setdefault(source, {})[str(path)] = array
        else:
            raise FrameRejected("unknown_content", f"content {content!r} of {source!r} in part {i}")
    return {src: SourceData(src, metadata.get(src, {}), keys) for src, keys in data.items()}


def _required(header: Mapping[str, Any], key: str, index: int) -> Any:
    try:
        return header[key]
    except KeyError:
        raise FrameRejected("missing_key", f"header part {index} has no {key!r}") from None


def _dtype_of(descr: Any) -> np.dtype:
    """Plain numeric dtypes only: object and structured dtypes would let the wire choose what we build."""
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError) as err:
        raise FrameRejected("bad_dtype", f"{descr!r}: {err}") from None
    if dtype.kind not in "biufc" or dtype.itemsize == 0:
        raise FrameRejected("bad_dtype", f"{descr!r} is not a plain numeric dtype")
    return dtype


def _shape_of(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, (list, tuple)) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise FrameRejected("bad_array_header", f"shape {shape!r} is not a list of non-negative integers")
    return tuple(shape)


def _array_from_buffer(buffer: Buffer, descr: Any, shape_field: Any) -> np.ndarray:
    dtype, shape = _dtype_of(descr), _shape_of(shape_field)
    expected = math.prod(shape) * dtype.itemsize
    got = _nbytes(buffer)
    if got != expected:
        raise FrameRejected("truncated_array", f"{got} bytes for {dtype.str} {list(shape)} ({expected} expected)")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def _decode_msgpack_numpy(obj: dict[Any, Any]) -> Any:
    """msgpack-numpy's encoding (msgpack_numpy.encode): arrays are maps {b'nd': True, b'type': dtype.str,
    b'kind': b'', b'shape': [...], b'data': bytes}; numpy scalars are {b'nd': False, b'type', b'data'}.
    Kind b'O' would be a pickle: refused as bad_dtype, never unpickled."""
    if b"nd" not in obj:
        return obj
    if obj.get(b"kind", b"") not in (b"", ""):
        raise FrameRejected("bad_dtype", f"msgpack-numpy kind {obj.get(b'kind')!r} (object/structured) refused")
    try:
        descr, payload = obj[b"type"], obj[b"data"]
    except KeyError as err:
        raise FrameRejected("missing_key", f"msgpack-numpy array without {err.args[0]!r}") from None
    if not isinstance(payload, (bytes, bytearray)):
        raise FrameRejected("bad_msgpack", f"msgpack-numpy data is a {type(payload).__name__}, not bytes")
    if obj[b"nd"] is True:
        if b"shape" not in obj:
            raise FrameRejected("missing_key", "msgpack-numpy array without b'shape'")
        return _array_from_buffer(payload, descr, obj[b"shape"])
    dtype = _dtype_of(descr)
    if len(payload) != dtype.itemsize:
        raise FrameRejected("truncated_array", f"{len(payload)} bytes for a {dtype.str} scalar")
    return np.frombuffer(payload, dtype=dtype)[0]


def _decode_v1_0(part: Buffer) -> dict[str, SourceData]:
    message = _unpack(part, what="protocol 1.0 message", object_hook=_decode_msgpack_numpy)
    if not isinstance(message, dict):
        raise FrameRejected("bad_msgpack", f"protocol 1.0 message is a {type(message).__name__}, not a map")
    if isinstance(message.get("content"), str) and isinstance(message.get("source"), str):
        raise FrameRejected("odd_part_count", "a single 2.2 header with no payload")
    sources: dict[str, SourceData] = {}
    for source, keys in message.items():
        if not isinstance(source, str) or not isinstance(keys, dict):
            raise FrameRejected("bad_msgpack", f"source {source!r} is not a name → map entry")
        keys = dict(keys)
        meta = keys.pop("metadata", {})
        sources[source] = SourceData(source, meta if isinstance(meta, dict) else {}, keys)
    return sources

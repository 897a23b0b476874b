"""Karabo bridge messages, protocol 1.0 and 2.2, encoded from the bridge protocol docs (not karabo_bridge's code).

A train is ``{source: {key: value}}`` plus per-source metadata. Protocol 2.2 sends, for
each source in sorted order, a header ``{'source', 'content': 'msgpack', 'metadata'}`` and a msgpack map
of the non-array keys, then for every array a header ``{'source', 'content': 'array', 'path', 'dtype',
'shape'}`` and the raw C-contiguous buffer; arrays go out as memoryviews, so ZMQ can send them without a
copy. Protocol 1.0 is one msgpack map ``{source: {key: value, 'metadata': {…}}}`` whose arrays are
msgpack_numpy maps ``{b'nd': True, b'type': '<u2', b'kind': b'', b'shape': [...], b'data': <bin>}``;
msgpack_numpy's ``decode`` looks the keys up as bytes, so they are packed as bin, not str.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

Part = bytes | memoryview
TrainData = Mapping[str, Mapping[str, Any]]


class BridgeProtocol(enum.Enum):
    """The protocol versions in use; 2.0 and 2.1 are undocumented and unused (karabo-bridge-py documentation)."""

    V1_0 = "1.0"
    V2_2 = "2.2"


def source_metadata(source: str, train_id: int, time_ns: int | None = None) -> dict[str, Any]:
    """Metadata of one source (karabo-bridge-py documentation); ``timestamp.frac`` is attoseconds, 18 digits.

    Built from integer nanoseconds so ``sec`` and ``frac`` are exact, which a float cannot promise.
    """
    ns = time.time_ns() if time_ns is None else time_ns
    seconds, nanos = divmod(ns, 1_000_000_000)
    return {
        "source": source,
        "timestamp": ns / 1e9,
        "timestamp.sec": str(seconds),
        "timestamp.frac": f"{nanos * 1_000_000_000:018d}",
        "timestamp.tid": int(train_id),
    }


def encode_train(data: TrainData, metadata: Mapping[str, Mapping[str, Any]], protocol: BridgeProtocol) -> list[Part]:
    """The message parts of one train; numpy scalars must already be Python values."""
    if protocol is BridgeProtocol.V1_0:
        return [_encode_v1(data, metadata)]
    return _encode_v2(data, metadata)


def _encode_v2(data: TrainData, metadata: Mapping[str, Mapping[str, Any]]) -> list[Part]:
    pack = msgpack.Packer(use_bin_type=True).pack
    parts: list[Part] = []
    for source in sorted(data):
        values = data[source]
        arrays = [(key, value) for key, value in values.items() if isinstance(value, np.ndarray)]
        plain = {key: value for key, value in values.items() if not isinstance(value, np.ndarray)}
        parts.append(pack({"source": source, "content": "msgpack", "metadata": dict(metadata[source])}))
        parts.append(pack(plain))
        for key, array in arrays:
            contiguous = np.ascontiguousarray(array)
            parts.append(
                pack(
                    {
                        "source": source,
                        "content": "array",
                        "path": key,
                        "dtype": contiguous.dtype.name,
                        "shape": list(contiguous.shape),
                    }
                )
            )
            parts.append(contiguous.data.cast("B"))
    return parts


def _encode_v1(data: TrainData, metadata: Mapping[str, Mapping[str, Any]]) -> bytes:
    document = {
        source: {**data[source], "metadata": dict(metadata[source])} for source in sorted(data)
    }
    return msgpack.packb(document, use_bin_type=True, default=_msgpack_numpy)


def _msgpack_numpy(value: Any) -> Any:
    """The msgpack_numpy ndarray map (Karabo bridge protocol 1.0); every other type is an error, as msgpack's own."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OV":
            raise TypeError(f"arrays of dtype {value.dtype} have no Karabo bridge encoding here")
        contiguous = np.ascontiguousarray(value)
        return {
            b"nd": True,
            b"type": contiguous.dtype.str,
            b"kind": b"",
            b"shape": list(contiguous.shape),
            b"data": contiguous.data.cast("B"),
        }
    raise TypeError(f"cannot encode {type(value).__name__} in a Karabo bridge message")

"""The Karabo bridge decoder on hand-built messages (bridge protocol): both protocols, zero copy, every rejection."""

from __future__ import annotations

from collections.abc import Callable

import msgpack
import numpy as np
import pytest

from detpipe.pipeline.agipd.bridge_decoder import BridgeProtocol, decode_bridge_message
from detpipe.pipeline.core.errors import FrameRejected
from tests.pipeline.karabo_messages import (
    array_header,
    metadata,
    msgpack_numpy_array,
    pack,
    small_sources,
    v1_0,
    v2_2,
)

CAM = "XMPL/DET/CAM"


def test_protocol_2_2_arrays_are_views_on_the_received_buffers() -> None:
    parts = [bytearray(p) for p in v2_2(small_sources(dtype="float32", shape=(4, 5)))]
    message = decode_bridge_message([memoryview(p) for p in parts])
    image = message.sources[CAM].data["image.data"]
    assert message.protocol is BridgeProtocol.V2_2
    np.testing.assert_array_equal(image, np.arange(20, dtype=np.float32).reshape(4, 5))
    assert np.shares_memory(image, np.frombuffer(parts[3], np.uint8))  # no copy of the payload
    assert message.sources[CAM].data["answer"] == 42
    assert message.sources[CAM].metadata["timestamp.tid"] == 7
    assert message.nbytes == sum(len(p) for p in parts)


def test_protocol_1_0_decodes_msgpack_numpy_arrays_and_moves_metadata_out() -> None:
    message = decode_bridge_message(v1_0(small_sources(dtype="uint16", shape=(3, 2))))
    src = message.sources[CAM]
    assert message.protocol is BridgeProtocol.V1_0
    np.testing.assert_array_equal(src.data["image.data"], np.arange(6, dtype=np.uint16).reshape(3, 2))
    assert src.metadata["timestamp.tid"] == 7 and "metadata" not in src.data


def test_msgpack_numpy_scalars_decode_to_numpy_scalars() -> None:
    scalar = {b"nd": False, b"type": "<u8", b"data": np.uint64(10_000_000_005).tobytes()}
    part = pack({CAM: {"count": scalar, "metadata": {"timestamp.tid": 5}}})
    assert decode_bridge_message([part]).sources[CAM].data["count"] == 10_000_000_005


@pytest.mark.parametrize("protocol", ["1.0", "2.2"])
def test_karabo_bridge_serializer_output_decodes_like_its_own_deserializer(protocol: str) -> None:
    """Conformance with the reference implementation, on top of the hand-built messages."""
    from karabo_bridge.serializer import deserialize, serialize

    data = {CAM: {"image.data": np.arange(12, dtype=np.int32).reshape(3, 4), "flag": True, "names": ["a", "b"]},
            "OTHER/SRC": {"value": 1.5, "vec": np.linspace(0, 1, 5)}}
    meta = {src: metadata(src, 99) for src in data}
    parts = serialize(data, meta, protocol_version=protocol)
    expected_data, expected_meta = deserialize([bytes(p) for p in parts])
    message = decode_bridge_message([memoryview(p) for p in parts])
    for src, keys in expected_data.items():
        assert message.sources[src].metadata == expected_meta[src]
        got = message.sources[src].data
        assert set(got) == set(keys) - {"metadata"}
        for key in got:
            np.testing.assert_array_equal(got[key], keys[key])


def _two_part_array(dtype: str, shape: list[int], payload: bytes) -> list[bytes]:
    good = v2_2(small_sources())
    return good[:2] + [array_header(CAM, "image.data", dtype, shape), payload]


BAD_MESSAGES: dict[str, Callable[[], list[bytes]]] = {
    "bad_msgpack": lambda: [b"\xc1not msgpack"],
    "bad_msgpack_header_in_2_2": lambda: [b"\xc1", pack({})],
    "bad_msgpack_1_0_not_a_map": lambda: [pack([1, 2, 3])],
    "odd_part_count": lambda: v2_2(small_sources())[:3],
    "odd_part_count_lone_header": lambda: v2_2(small_sources())[:1],
    "unknown_content": lambda: [pack({"source": CAM, "content": "pickle", "metadata": {}}), b"x"],
    "unknown_content_first_part": lambda: [pack({"source": CAM}), pack({})],
    "truncated_array_short": lambda: _two_part_array("uint16", [2, 3], b"\0" * 11),
    "truncated_array_long": lambda: _two_part_array("uint16", [2, 3], b"\0" * 13),
    "truncated_array_1_0": lambda: [pack({CAM: {"image.data": {**msgpack_numpy_array(np.zeros(4, "u2")),
                                                               b"shape": [5]}, "metadata": {}}})],
    "bad_dtype": lambda: _two_part_array("uint13", [2], b"\0" * 4),
    "bad_dtype_object": lambda: _two_part_array("object", [1], b"\0" * 8),
    "bad_dtype_pickle_1_0": lambda: [pack({CAM: {"x": {**msgpack_numpy_array(np.zeros(1)), b"kind": b"O"}}})],
    "bad_array_header": lambda: _two_part_array("uint8", [-1], b""),
    "missing_key": lambda: [pack({"source": CAM, "content": "array", "dtype": "u1", "shape": [1]}), b"\0"],
}


@pytest.mark.parametrize("case", sorted(BAD_MESSAGES))
def test_each_bad_message_is_rejected_by_name_and_the_next_good_one_decodes(case: str) -> None:
    reason = next(r for r in ("bad_msgpack", "odd_part_count", "unknown_content", "truncated_array", "bad_dtype",
                              "bad_array_header", "missing_key") if case.startswith(r))
    with pytest.raises(FrameRejected) as raised:
        decode_bridge_message(BAD_MESSAGES[case]())
    assert raised.value.reason == reason
    good = decode_bridge_message(v2_2(small_sources(8)))
    assert good.sources[CAM].metadata["timestamp.tid"] == 8


def test_empty_message_is_an_odd_part_count() -> None:
    with pytest.raises(FrameRejected, match="odd_part_count"):
        decode_bridge_message([])


def test_an_array_part_without_its_msgpack_part_still_decodes() -> None:
    """The protocol sends the msgpack part first; a bridge that does not still gives usable arrays."""
    parts = [array_header(CAM, "image.data", "uint8", [2]), b"\x01\x02"]
    message = decode_bridge_message(parts)
    assert list(message.sources[CAM].data["image.data"]) == [1, 2] and message.sources[CAM].metadata == {}


def test_error_reply_of_a_bridge_to_a_bad_request_is_bad_msgpack() -> None:
    with pytest.raises(FrameRejected, match="bad_msgpack"):
        decode_bridge_message([b"Error: bad request b'nxt'"])
    assert msgpack.unpackb(pack({"a": 1})) == {"a": 1}  # the helper itself is plain msgpack

"""The bytes on the wire, decoded by hand from the bridge protocol (no karabo_bridge): part structure and order."""

from __future__ import annotations

import subprocess
import sys

import msgpack
import numpy as np
import pytest
import zmq

from detpipe.simulators import AgipdSimulator
from tests.simulators.agipd_bridge_helpers import COMBINED_RAW, module_source


def raw_message(sim: AgipdSimulator) -> list[bytes]:
    context = zmq.Context()
    try:
        req = context.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.setsockopt(zmq.RCVTIMEO, 20_000)
        req.connect(sim.endpoint)
        req.send(b"next")
        parts = req.recv_multipart()
        req.close()
        return parts
    finally:
        context.destroy(linger=0)


def test_protocol_2_2_sends_header_payload_pairs_with_sources_sorted() -> None:
    with AgipdSimulator(sources="modules", cells=2, seed=3, paced=False) as sim:
        parts = raw_message(sim)
        expected = sim.train(0)
    assert len(parts) % 2 == 0
    headers = [msgpack.unpackb(parts[k]) for k in range(0, len(parts), 2)]
    sources_in_order = [h["source"] for h in headers if h["content"] == "msgpack"]
    assert sources_in_order == sorted(module_source(m) for m in range(16))
    current = None
    for k, header in enumerate(headers):
        payload = parts[2 * k + 1]
        if header["content"] == "msgpack":
            current = header["source"]
            assert header["metadata"]["timestamp.tid"] == expected.train_id
            assert msgpack.unpackb(payload) == {}  # every key of a module source is an array
            continue
        assert header["content"] == "array" and header["source"] == current  # arrays follow their source
        array = np.frombuffer(payload, dtype=header["dtype"]).reshape(header["shape"])
        if header["path"] == "image.data":
            module = int(current.split("/")[-1].split("CH0")[0])
            assert header["dtype"] == "uint16" and header["shape"] == [2, 2, 512, 128]
            np.testing.assert_array_equal(array, expected.data[:, module])
    paths = [h["path"] for h in headers if h["source"] == module_source(0) and h["content"] == "array"]
    assert sorted(paths) == ["image.cellId", "image.data", "image.pulseId", "image.trainId"]


def test_protocol_1_0_sends_one_msgpack_map_with_msgpack_numpy_arrays() -> None:
    with AgipdSimulator(protocol="1.0", cells=2, seed=3, paced=False) as sim:
        parts = raw_message(sim)
        expected = sim.train(0)
    assert len(parts) == 1
    document = msgpack.unpackb(parts[0], raw=False)
    source = document[COMBINED_RAW]
    assert source["metadata"]["timestamp.tid"] == expected.train_id
    encoded = source["image.data"]
    assert encoded[b"nd"] is True and encoded[b"kind"] == b"" and encoded[b"type"] == "<u2"
    data = np.frombuffer(encoded[b"data"], dtype=encoded[b"type"]).reshape(encoded[b"shape"])
    np.testing.assert_array_equal(data, expected.data)
    assert source["modulesPresent"] == [True] * 16


def test_the_simulator_encodes_without_importing_karabo_bridge() -> None:
    code = (
        "import sys, detpipe.simulators.agipd_simulator, detpipe.simulators.agipd_cli;"
        "print('karabo_bridge' in sys.modules)"
    )
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert finished.stdout.strip() == "False", finished.stderr


@pytest.mark.parametrize("bad", [{"cells": 0}, {"cells": 353}, {"socket_type": "PUB"}, {"protocol": "2.1"}])
def test_bad_options_fail_before_any_socket_is_bound(bad: dict) -> None:
    with pytest.raises(ValueError):
        AgipdSimulator(**bad)


def test_every_bad_option_is_named_in_one_error() -> None:
    with pytest.raises(ValueError) as raised:
        AgipdSimulator(cells=0, hit_fraction=2.0, layout="sideways", missing_modules={0: {16}})
    message = str(raised.value)
    for word in ("cells", "hit_fraction", "layout", "missing_modules"):
        assert word in message

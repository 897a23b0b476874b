"""karabo_bridge's own Client reads the AGIPD simulator: both protocols, REQ and PULL, every layout."""

from __future__ import annotations

import numpy as np
import pytest
import zmq
from karabo_bridge.serializer import deserialize

from detpipe.simulators import AgipdSimulator
from tests.simulators.agipd_bridge_helpers import (
    COMBINED_CORRECTED,
    COMBINED_RAW,
    bridge_client,
    module_source,
    to_file_order,
)

FIRST_ID = 10_000_000_000


@pytest.mark.parametrize("socket_type", ["REP", "PUSH"])
@pytest.mark.parametrize("protocol", ["2.2", "1.0"])
def test_karabo_bridge_client_reads_raw_trains_with_increasing_train_ids(socket_type: str, protocol: str) -> None:
    with AgipdSimulator(
        socket_type=socket_type, protocol=protocol, product="raw", cells=4, seed=7, paced=False, n_trains=3,
        hit_fraction=0.5,
    ) as sim, bridge_client(sim.endpoint, socket_type) as client:
        for index in range(3):
            data, meta = client.next()
            assert list(data) == [COMBINED_RAW]
            source = data[COMBINED_RAW]
            expected = sim.train(index)
            assert source["image.data"].dtype == np.uint16
            np.testing.assert_array_equal(source["image.data"], expected.data)
            assert meta[COMBINED_RAW]["timestamp.tid"] == FIRST_ID + index == expected.train_id
            np.testing.assert_array_equal(source["image.trainId"], np.full(4, FIRST_ID + index, np.uint64))
            np.testing.assert_array_equal(source["image.cellId"], sim.truth.cell_ids)
            np.testing.assert_array_equal(source["image.pulseId"], sim.truth.pulse_ids)
            assert source["image.cellId"].dtype == np.uint16 and source["image.pulseId"].dtype == np.uint64
            assert source["image.trainId"].dtype == np.uint64
            assert source["modulesPresent"] == [True] * 16
            assert source["sources"] == [module_source(m) for m in range(16)]
        assert sim.trains_sent == 3


@pytest.mark.parametrize("layout", ["file", "online"])
@pytest.mark.parametrize("protocol", ["2.2", "1.0"])
def test_corrected_trains_carry_data_gain_and_mask_in_the_layout_asked_for(layout: str, protocol: str) -> None:
    with AgipdSimulator(
        product="corrected", layout=layout, protocol=protocol, cells=4, seed=7, paced=False, hit_fraction=1.0,
    ) as sim, bridge_client(sim.endpoint) as client:
        data, _ = client.next()
        source = data[COMBINED_CORRECTED]
        expected = sim.train(0)
        shapes = {"file": (4, 16, 512, 128), "online": (16, 128, 512, 4)}
        for key, dtype, truth in [
            ("image.data", np.float32, expected.data),
            ("image.gain", np.uint8, expected.gain),
            ("image.mask", np.uint32, expected.mask),
        ]:
            assert source[key].shape == shapes[layout] and source[key].dtype == dtype, key
            np.testing.assert_array_equal(to_file_order(source[key], "combined_corrected", layout), truth)
        assert expected.gain.max() > 0 and expected.mask.max() > 0  # both carry information


def test_raw_online_layout_keeps_the_gain_axis_after_the_module() -> None:
    with AgipdSimulator(product="raw", layout="online", cells=3, seed=7, paced=False) as sim, bridge_client(
        sim.endpoint
    ) as client:
        data, _ = client.next()
        received = data[COMBINED_RAW]["image.data"]
        assert received.shape == (16, 2, 128, 512, 3)
        np.testing.assert_array_equal(to_file_order(received, "combined_raw", "online"), sim.train(0).data)


def test_metadata_has_the_timestamp_fields_of_the_protocol() -> None:
    with AgipdSimulator(cells=1, seed=7, paced=False, first_train_id=42) as sim, bridge_client(sim.endpoint) as client:
        _, meta = client.next()
        fields = meta[COMBINED_RAW]
        assert fields["source"] == COMBINED_RAW and fields["timestamp.tid"] == 42
        assert isinstance(fields["timestamp"], float)
        assert fields["timestamp.sec"].isdigit() and int(fields["timestamp.sec"]) == int(fields["timestamp"])
        assert len(fields["timestamp.frac"]) == 18 and fields["timestamp.frac"].isdigit()


def test_an_unknown_request_gets_an_error_reply_and_next_still_works() -> None:
    with AgipdSimulator(cells=2, seed=7, paced=False) as sim:
        context = zmq.Context()
        try:
            req = context.socket(zmq.REQ)
            req.setsockopt(zmq.LINGER, 0)
            req.setsockopt(zmq.RCVTIMEO, 20_000)
            req.connect(sim.endpoint)
            req.send(b"give me data")
            assert req.recv() == b"Error: bad request give me data"
            req.send(b"next")
            data, meta = deserialize(req.recv_multipart(copy=False))
            assert meta[COMBINED_RAW]["timestamp.tid"] == FIRST_ID
            np.testing.assert_array_equal(data[COMBINED_RAW]["image.data"], sim.train(0).data)
            req.close()
        finally:
            context.destroy(linger=0)


def test_a_rep_server_that_sent_all_its_trains_leaves_the_next_request_unanswered() -> None:
    with AgipdSimulator(cells=1, seed=7, paced=False, n_trains=1) as sim, bridge_client(
        sim.endpoint, timeout_s=0.5
    ) as client:
        client.next()
        with pytest.raises(TimeoutError):
            client.next()
        assert sim.trains_sent == 1


def test_paced_trains_leave_no_faster_than_10_per_second() -> None:
    with AgipdSimulator(socket_type="PUSH", cells=1, seed=7, n_trains=4) as sim, bridge_client(
        sim.endpoint, "PUSH"
    ) as client:
        stamps = [client.next()[1][COMBINED_RAW]["timestamp"] for _ in range(4)]
    # Train k is built after train k-1 left, and train k-1 leaves no earlier than 0.1 s × (k-1) after train 0.
    assert stamps[3] - stamps[0] >= 0.2

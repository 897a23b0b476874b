"""The AGIPD receiver on real ZMQ sockets: karabo-bridge's own servers (REQ, PULL; protocols 2.2 and 1.0), hand-built
messages for every rejection, and the accounting of missing trains, missing modules and drops."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from karabo_bridge import simulation
from karabo_bridge.server import ServerInThread, SimServerInThread

from detpipe.pipeline.agipd.receiver import AgipdReceiver, BridgeSocket
from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.core.series import EndOfSeries, EndReason, SeriesStart
from detpipe.pipeline.core.train import Product, Train
from tests.pipeline.karabo_messages import (
    COMBINED_RAW,
    FIRST_TRAIN_ID,
    array_header,
    combined_sources,
    make_truth,
    module_sources,
    pack,
    v1_0,
    v2_2,
)
from tests.waiting import wait_until

SIM_FIRST_TRAIN_ID = 10_000_000_000  # karabo-bridge's simulator


def drain(outbox: FrameQueue, n: int, timeout_s: float = 20.0) -> list[Any]:
    return [outbox.get(timeout_s=timeout_s) for _ in range(n)]


@contextmanager
def running(receiver: AgipdReceiver) -> Iterator[AgipdReceiver]:
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.close()


@contextmanager
def sim_server(monkeypatch: pytest.MonkeyPatch, *, pulses: int = 4, **options: Any) -> Iterator[tuple[str, dict]]:
    """karabo-bridge's SimServer on a loopback port ZMQ picks; yields its endpoint and the image.data it sent
    by train id. ``pulses`` shrinks the simulator's fixed 64 pulses to keep random trains cheap."""
    if pulses != simulation.AGIPD.pulses:
        monkeypatch.setattr(simulation.AGIPD, "pulses", pulses)
    server = SimServerInThread("tcp://127.0.0.1:*", debug=False, **options)
    sent: dict[int, np.ndarray] = {}

    def recording(trains: Iterator[tuple[dict, dict]]) -> Iterator[tuple[dict, dict]]:
        for data, meta in trains:
            source = next(iter(data))
            sent[meta[source]["timestamp.tid"]] = data[source]["image.data"]
            yield data, meta

    server.data = recording(server.data)
    with server:
        yield server.endpoint, sent


@pytest.mark.parametrize("raw", [False, True], ids=["corrected", "raw"])
@pytest.mark.parametrize("data_like", ["online", "file"])
def test_simulator_trains_arrive_over_req_in_canonical_layout(monkeypatch, data_like: str, raw: bool) -> None:
    with sim_server(monkeypatch, raw=raw, data_like=data_like) as (endpoint, sent):
        with running(AgipdReceiver(endpoint, socket_type=BridgeSocket.REQ)) as receiver:
            outbox: FrameQueue = FrameQueue(8, FullPolicy.DROP)
            receiver.listen(4, outbox, max_trains=3)
            start, *trains, end = drain(outbox, 5)
    assert isinstance(start, SeriesStart) and start.series_id == 4 and start.config is None
    assert end == EndOfSeries(4, EndReason.END_MESSAGE, frames_sent=12, detail="3 trains received")
    assert [t.train_id for t in trains] == [SIM_FIRST_TRAIN_ID + i for i in range(3)]
    for index, train in enumerate(trains):
        assert isinstance(train, Train) and train.index == index
        assert train.product is (Product.RAW if raw else Product.CORRECTED)
        wire = sent[train.train_id]
        file_order = wire if data_like == "file" else np.transpose(wire, (3, 0, 2, 1))  # online → file order
        np.testing.assert_array_equal(train.data[:, :, 0] if raw else train.data, file_order)
        if raw:
            assert not train.data[:, :, 1].any()  # the simulator has no digital gain: high gain everywhere
        np.testing.assert_array_equal(train.cell_ids, np.arange(4))
        np.testing.assert_array_equal(train.pulse_ids, np.arange(4))
        assert all(train.modules_present)
    stats = receiver.stats
    assert (stats.trains_received, stats.frames_received, stats.trains_missing) == (3, 12, 0)
    assert stats.last_train_id == SIM_FIRST_TRAIN_ID + 2 and not stats.rejected
    # raw trains carry their gain in the data's digital plane, so the simulator's image.gain is not read
    assert stats.notes == ({"raw_without_gain_axis": 3} if raw else {"gain_shape_quirk": 3})


def test_simulator_default_64_pulse_train_in_both_protocols(monkeypatch) -> None:
    for protocol in ("2.2", "1.0"):
        with sim_server(monkeypatch, pulses=64, datagen="zeros", protocol_version=protocol) as (endpoint, _):
            with running(AgipdReceiver(endpoint)) as receiver:
                outbox: FrameQueue = FrameQueue(4, FullPolicy.DROP)
                receiver.listen(1, outbox, max_trains=1)
                _, train, end = drain(outbox, 3)
        assert train.data.shape == (64, 16, 512, 128) and train.data.dtype == np.float32
        assert train.gain.shape == train.data.shape and train.gain.dtype == np.uint8
        assert end.frames_sent == 64 and receiver.stats.bytes_received > 256 * 2**20


def test_pull_socket_receives_from_a_pushing_simulator(monkeypatch) -> None:
    with sim_server(monkeypatch, sock="PUSH", raw=True) as (endpoint, sent):
        with running(AgipdReceiver(endpoint, socket_type="PULL")) as receiver:
            outbox: FrameQueue = FrameQueue(8, FullPolicy.DROP)
            receiver.listen(2, outbox, max_trains=2)
            _, first, second, end = drain(outbox, 4)
    assert second.train_id == first.train_id + 1 and end.frames_sent == 8
    np.testing.assert_array_equal(first.data[:, :, 0], np.transpose(sent[first.train_id], (3, 0, 2, 1)))


@pytest.mark.parametrize("protocol", ["2.2", "1.0"])
def test_real_raw_per_module_trains_through_karabo_bridges_server(protocol: str) -> None:
    """Real raw modules carry the analog/digital axis (EuXFEL data format), served by karabo-bridge's ServerInThread."""
    truths = [make_truth(raw=True, frames=2, train_id=FIRST_TRAIN_ID + i, missing={9}, seed=i) for i in range(2)]
    with ServerInThread("tcp://127.0.0.1:*", protocol_version=protocol) as server:
        for truth in truths:
            sources = module_sources(truth, "online")
            server.feed({s: keys for s, (_, keys) in sources.items()}, {s: meta for s, (meta, _) in sources.items()})
        with running(AgipdReceiver(server.endpoint)) as receiver:
            outbox: FrameQueue = FrameQueue(8, FullPolicy.DROP)
            receiver.listen(3, outbox, max_trains=2)
            _, *trains, _ = drain(outbox, 4)
    for train, truth in zip(trains, truths, strict=True):
        np.testing.assert_array_equal(train.data, truth.data)
        np.testing.assert_array_equal(train.cell_ids, truth.cell_ids)
        assert train.train_id == truth.train_id and not train.modules_present[9]
    assert receiver.stats.modules_missing == {9: 2}


def test_req_asks_only_while_the_outbox_has_room_so_nothing_is_dropped(monkeypatch) -> None:
    with sim_server(monkeypatch) as (endpoint, _):
        with running(AgipdReceiver(endpoint)) as receiver:
            outbox: FrameQueue = FrameQueue(2, FullPolicy.DROP)  # the SeriesStart takes one place
            receiver.listen(5, outbox, max_trains=4)
            wait_until(lambda: receiver.stats.trains_received, lambda n: n == 1, what="trains_received")
            with pytest.raises(TimeoutError):  # a full outbox: no request, no train
                wait_until(lambda: receiver.stats.trains_received, lambda n: n > 1, timeout_s=0.3)
            silent_s = time.monotonic() - receiver.last_message_monotonic
            items = drain(outbox, 6)
    assert silent_s < 0.2  # holding the bridge back is not the bridge's silence
    assert [t.train_id for t in items[1:-1]] == [SIM_FIRST_TRAIN_ID + i for i in range(4)]
    assert not receiver.stats.frames_dropped and receiver.stats.trains_missing == 0


@pytest.fixture
def pull_receiver(push) -> Iterator[AgipdReceiver]:
    with running(AgipdReceiver(push[1], socket_type=BridgeSocket.PULL)) as receiver:
        yield receiver


def good_train(train_id: int, *, missing: tuple[int, ...] = ()) -> list[bytes]:
    return v2_2(combined_sources(make_truth(raw=True, frames=1, train_id=train_id, missing=missing), "file"))


def _with(train_id: int, change: dict[str, Any] | None = None, drop: str | None = None) -> list[bytes]:
    sources = combined_sources(make_truth(raw=True, frames=1, train_id=train_id), "file")
    meta, keys = sources[COMBINED_RAW]
    keys.update(change or {})
    if drop == "timestamp.tid":
        del meta[drop], keys["image.trainId"]
    elif drop:
        del keys[drop]
    return v2_2(sources)


BAD_MESSAGES = {
    "bad_msgpack": lambda: [b"\xc1"],
    "odd_part_count": lambda: good_train(1)[:3],
    "unknown_content": lambda: [pack({"source": COMBINED_RAW, "content": "json"}), b"{}"],
    "truncated_array": lambda: good_train(1)[:-1] + [good_train(1)[-1][:-2]],
    "bad_dtype": lambda: good_train(1)[:2] + [array_header(COMBINED_RAW, "image.data", "float7", [1]), b"\0"],
    "unknown_source": lambda: v2_2({"XMPL/CAM": ({"timestamp.tid": 1}, {"image.data": np.zeros(3)})}),
    "missing_key": lambda: _with(1, drop="timestamp.tid"),
    "wrong_shape": lambda: _with(1, {"image.data": np.zeros((1, 16, 2, 512, 64), np.uint16)}),
    "wrong_dtype": lambda: _with(1, {"image.data": np.zeros((1, 16, 2, 512, 128), np.float64)}),
}


def test_every_rejection_is_counted_by_name_and_the_next_train_still_arrives(push, pull_receiver) -> None:
    socket, _ = push
    outbox: FrameQueue = FrameQueue(32, FullPolicy.DROP)
    pull_receiver.listen(6, outbox)
    for i, build in enumerate(BAD_MESSAGES.values()):
        socket.send_multipart(build())
        socket.send_multipart(good_train(FIRST_TRAIN_ID + i))
    trains = drain(outbox, 1 + len(BAD_MESSAGES))[1:]
    assert [t.train_id for t in trains] == [FIRST_TRAIN_ID + i for i in range(len(BAD_MESSAGES))]
    assert [t.index for t in trains] == list(range(len(BAD_MESSAGES)))
    stats = pull_receiver.stats
    assert stats.rejected == {reason: 1 for reason in BAD_MESSAGES}
    assert stats.messages_received == 2 * len(BAD_MESSAGES) and stats.trains_missing == 0


def test_protocol_1_0_messages_are_received_too(push, pull_receiver) -> None:
    socket, _ = push
    outbox: FrameQueue = FrameQueue(4, FullPolicy.DROP)
    pull_receiver.listen(6, outbox, max_trains=1)
    truth = make_truth(raw=False, frames=2)
    socket.send_multipart(v1_0(combined_sources(truth, "online")))
    _, train, _ = drain(outbox, 3)
    np.testing.assert_array_equal(train.data, truth.data)


def test_gaps_in_train_ids_and_missing_modules_are_counted(push, pull_receiver) -> None:
    socket, _ = push
    outbox: FrameQueue = FrameQueue(16, FullPolicy.DROP)
    pull_receiver.listen(6, outbox, max_trains=4)
    for train_id, missing in ((100, ()), (101, (3,)), (104, (3, 15)), (105, ())):
        socket.send_multipart(good_train(train_id, missing=missing))
    _, *trains, end = drain(outbox, 6)
    assert [t.train_id for t in trains] == [100, 101, 104, 105] and end.frames_sent == 4
    assert pull_receiver.stats.trains_missing == 2
    assert pull_receiver.stats.modules_missing == {3: 2, 15: 1}
    assert not trains[2].data[:, [3, 15]].any()


def test_full_outbox_drops_trains_and_counts_their_frames(push, pull_receiver) -> None:
    socket, _ = push
    outbox: FrameQueue = FrameQueue(2, FullPolicy.DROP)
    pull_receiver.listen(6, outbox)
    for train_id in range(10, 14):
        socket.send_multipart(v2_2(combined_sources(make_truth(raw=True, frames=2, train_id=train_id), "file")))
    wait_until(lambda: pull_receiver.stats.trains_received, lambda n: n == 4, what="trains_received")
    assert pull_receiver.stats.frames_dropped == {"queue_full": 6}  # the SeriesStart holds one of two places
    pull_receiver.end_series(EndReason.STOP, "operator")
    start, kept = drain(outbox, 2)
    assert isinstance(start, SeriesStart) and kept.train_id == 10 and drain(outbox, 1)[0].reason is EndReason.STOP


def test_requested_end_follows_the_trains_already_read(push, pull_receiver) -> None:
    socket, _ = push
    outbox: FrameQueue = FrameQueue(8, FullPolicy.DROP)
    ends: list[EndOfSeries] = []
    pull_receiver.on_series_end = ends.append
    pull_receiver.listen(6, outbox)
    socket.send_multipart(good_train(7))
    wait_until(lambda: pull_receiver.stats.trains_received, lambda n: n == 1, what="trains_received")
    pull_receiver.end_series(EndReason.ABORT, "operator")
    _, train, end = drain(outbox, 3)
    assert train.train_id == 7 and end.reason is EndReason.ABORT and ends == [end]
    assert pull_receiver.active_series is None
    with pytest.raises(queue.Empty):
        outbox.get(timeout_s=0.1)


def test_nothing_is_read_before_listen_and_the_silence_clock_starts_at_listen(push, pull_receiver) -> None:
    socket, _ = push
    socket.send_multipart(good_train(50))
    with pytest.raises(TimeoutError):
        wait_until(lambda: pull_receiver.stats.messages_received, lambda n: n > 0, timeout_s=0.3)
    outbox: FrameQueue = FrameQueue(4, FullPolicy.DROP)
    pull_receiver.listen(8, outbox, max_trains=1)
    assert pull_receiver.last_message_monotonic > 0
    _, train, _ = drain(outbox, 3)
    assert train.train_id == 50 and train.series_id == 8


def test_a_reply_later_than_the_request_timeout_still_arrives_on_the_same_socket() -> None:
    """The bridge took the train off its queue when asked: the receiver itself never gives a request up
    (issue 15), only the acquisition ends a run whose request waited past ``request_timeout_s``."""
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    try:
        with running(AgipdReceiver(f"tcp://127.0.0.1:{port}", request_timeout_s=0.2)) as receiver:
            outbox: FrameQueue = FrameQueue(4, FullPolicy.DROP)
            receiver.listen(9, outbox, max_trains=1)
            assert router.poll(5000)
            peer, *_ = router.recv_multipart()
            wait_until(receiver.pending_request_s, lambda waited: waited is not None and waited > 0.5)
            assert not router.poll(0)  # not asked again
            router.send_multipart([peer, b"", *good_train(77)])
            _, train, end = drain(outbox, 3)
        assert train.train_id == 77 and end.frames_sent == 1
        assert receiver.stats.requests_unanswered == 0 and receiver.pending_request_s() is None
    finally:
        router.close(linger=0)


def test_the_train_requested_ahead_when_a_run_stops_is_its_last_train_not_lost() -> None:
    """The bridge takes a train off its queue when asked: the reply to the request sent ahead, arriving
    after Stop, must end the run, not vanish with a closed socket (issue 14)."""
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    try:
        with running(AgipdReceiver(f"tcp://127.0.0.1:{port}")) as receiver:
            outbox: FrameQueue = FrameQueue(8, FullPolicy.DROP)
            receiver.listen(9, outbox)
            for train_id in (100, 101):
                assert router.poll(5000)
                peer, *_ = router.recv_multipart()
                router.send_multipart([peer, b"", *good_train(train_id)])
            assert router.poll(5000)
            peer, *_ = router.recv_multipart()  # the request for train 102, sent ahead
            receiver.end_series(EndReason.STOP, "Stop command")
            time.sleep(0.1)
            router.send_multipart([peer, b"", *good_train(102)])
            _, *trains, end = drain(outbox, 5)
        assert [t.train_id for t in trains] == [100, 101, 102]
        assert isinstance(end, EndOfSeries) and end.reason is EndReason.STOP
        assert receiver.stats.requests_unanswered == 0
    finally:
        router.close(linger=0)


def test_listening_to_a_new_run_ends_the_open_one_first(push, pull_receiver) -> None:
    socket, _ = push
    first: FrameQueue = FrameQueue(4, FullPolicy.DROP)
    second: FrameQueue = FrameQueue(4, FullPolicy.DROP)
    pull_receiver.listen(1, first)
    pull_receiver.listen(2, second, max_trains=1)
    start, end = drain(first, 2)
    assert start.series_id == end.series_id == 1 and end.reason is EndReason.STOP and "superseded" in end.detail
    socket.send_multipart(good_train(3))
    start, train, end = drain(second, 3)
    assert start.series_id == train.series_id == end.series_id == 2 and train.train_id == 3


def _with_metadata(train_id: int, **values: Any) -> list[bytes]:
    sources = combined_sources(make_truth(raw=True, frames=1, train_id=train_id), "file")
    meta, keys = sources[COMBINED_RAW]
    meta.update(values)
    if "timestamp.tid" in values:
        del keys["image.trainId"]
    return v2_2(sources)


# Each of these once killed the receive thread (ValueError from numpy) or reached the files: a negative train
# id made every module file fail at close, a NaN timestamp put the writer in FAULT, 2**64 - 1 made every later
# train "not increasing".
HOSTILE_TRAINS = {
    "cellId as text": (lambda: _with(1, {"image.cellId": ["0"]}), "bad_ids"),
    "ragged cellId": (lambda: _with(1, {"image.cellId": [[0, 1], [2]]}), "wrong_shape"),
    "cellId as msgpack extension": (lambda: _with(1, {"image.cellId": [msgpack.ExtType(5, b"x")]}), "wrong_shape"),
    "cellId beyond uint16": (lambda: _with(1, {"image.cellId": np.array([70_000])}), "bad_ids"),
    "ragged modulesPresent": (lambda: _with(1, {"modulesPresent": [[True], [True, False]]}), "wrong_shape"),
    "train id -5": (lambda: _with_metadata(1, **{"timestamp.tid": -5}), "bad_train_id"),
    "train id 2**64 - 1": (lambda: _with_metadata(1, **{"timestamp.tid": 2**64 - 1}), "bad_train_id"),
}


@pytest.mark.parametrize("case", list(HOSTILE_TRAINS))
def test_hostile_train_is_rejected_alone(push, pull_receiver, case: str) -> None:
    build, reason = HOSTILE_TRAINS[case]
    socket, _ = push
    outbox: FrameQueue = FrameQueue(8, FullPolicy.DROP)
    pull_receiver.listen(6, outbox)
    socket.send_multipart(good_train(FIRST_TRAIN_ID))
    socket.send_multipart(build())
    socket.send_multipart(good_train(FIRST_TRAIN_ID + 1))
    trains = drain(outbox, 3)[1:]
    assert [t.train_id for t in trains] == [FIRST_TRAIN_ID, FIRST_TRAIN_ID + 1]
    assert pull_receiver.stats.rejected == {reason: 1} and pull_receiver.stats.notes == {}
    assert pull_receiver.failure == ""


@pytest.mark.parametrize("timestamp", [float("nan"), float("inf"), 1e300, -1.0])
def test_a_timestamp_that_is_no_unix_time_is_replaced_by_the_host_time_and_noted(push, pull_receiver,
                                                                                timestamp: float) -> None:
    socket, _ = push
    outbox: FrameQueue = FrameQueue(8, FullPolicy.DROP)
    pull_receiver.listen(6, outbox)
    before = time.time()
    socket.send_multipart(_with_metadata(FIRST_TRAIN_ID, timestamp=timestamp))
    _, train = drain(outbox, 2)
    assert before <= train.timestamp_s <= time.time()
    assert pull_receiver.stats.notes == {"timestamp_replaced": 1} and pull_receiver.stats.rejected_total == 0


def test_a_receive_thread_that_dies_anyway_names_its_cause_and_ends_the_run(push) -> None:
    socket, endpoint = push
    receiver = AgipdReceiver(endpoint, socket_type=BridgeSocket.PULL)

    def broken(run, parts):
        raise RuntimeError("a bug outside decoding")

    receiver._handle = broken  # type: ignore[method-assign]
    with running(receiver):
        outbox: FrameQueue = FrameQueue(8, FullPolicy.DROP)
        receiver.listen(6, outbox)
        socket.send_multipart(good_train(FIRST_TRAIN_ID))
        start, end = drain(outbox, 2)
    assert isinstance(start, SeriesStart) and end.reason is EndReason.ERROR
    assert receiver.failure == "receive thread died: RuntimeError: a bug outside decoding"

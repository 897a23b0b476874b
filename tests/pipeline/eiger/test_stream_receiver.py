"""The receive stage on a real ZMQ PUSH socket: forwarding, accounting, and bad input that never stops it."""

from __future__ import annotations

import queue
import time

import numpy as np
import pytest

from detpipe.pipeline.core.chunk_framing import decode_chunk_pixels
from detpipe.pipeline.core.errors import FrameRejected
from detpipe.pipeline.core.frame import Frame
from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.core.series import EndOfSeries, EndReason, SeriesStart
from detpipe.pipeline.eiger import frame_forwarder, stream_receiver
from detpipe.pipeline.eiger.stream_receiver import StreamReceiver
from tests.pipeline.stream_messages import (
    bslz4_chunk,
    corrupt_first_match,
    pixels,
    v1_config,
    v1_end,
    v1_header,
    v1_image,
)
from tests.waiting import wait_until

SHAPE = (64, 96)
IMAGE = pixels(SHAPE)


def drain(outbox: FrameQueue, n: int) -> list:
    return [outbox.get(timeout_s=5) for _ in range(n)]


def test_series_is_forwarded_in_order_with_the_detector_bytes_untouched(push, receiver: StreamReceiver) -> None:
    socket, _ = push
    outbox: FrameQueue = FrameQueue(16, FullPolicy.DROP)
    receiver.listen(5, outbox, None)
    socket.send_multipart(v1_header(5, "basic", v1_config(SHAPE)))
    for i in range(3):
        socket.send_multipart(v1_image(5, i, IMAGE))
    socket.send_multipart(v1_end(5))
    start, *frames, end = drain(outbox, 5)
    assert isinstance(start, SeriesStart) and start.config.shape == SHAPE
    assert [f.index for f in frames] == [0, 1, 2]
    assert all(bytes(f.blob) == bslz4_chunk(IMAGE) for f in frames)
    assert isinstance(end, EndOfSeries) and end.reason is EndReason.END_MESSAGE
    assert receiver.stats.frames_received == 3 and receiver.stats.last_image_acquired == 2


def test_malformed_message_is_counted_and_the_stream_continues(push, receiver: StreamReceiver) -> None:
    socket, _ = push
    outbox: FrameQueue = FrameQueue(16, FullPolicy.DROP)
    receiver.listen(5, outbox, None)
    socket.send_multipart(v1_header(5, "basic", v1_config(SHAPE)))
    socket.send_multipart([b"{not json", b"", b"", b""])
    socket.send_multipart(v1_image(5, 0, IMAGE, blob=bslz4_chunk(IMAGE)[:-50], meta={"size": len(bslz4_chunk(IMAGE))}))
    socket.send_multipart(v1_image(5, 1, IMAGE))
    socket.send_multipart(v1_end(5))
    _, frame, _ = drain(outbox, 3)
    assert isinstance(frame, Frame) and frame.index == 1
    assert receiver.stats.rejected == {"bad_json": 1, "truncated_blob": 1}
    assert receiver.stats.frames_missing == 1  # frame 0 never became a frame


def test_leftovers_of_an_earlier_series_are_counted_late_not_rejected_and_never_forwarded(
        push, receiver: StreamReceiver) -> None:
    socket, _ = push
    outbox: FrameQueue = FrameQueue(16, FullPolicy.DROP)
    socket.send_multipart(v1_header(4, "basic", v1_config(SHAPE)))  # a refused series' leftovers
    socket.send_multipart(v1_end(4))
    receiver.listen(5, outbox, None)
    socket.send_multipart(v1_header(5, "basic", v1_config(SHAPE)))
    socket.send_multipart(v1_end(5))
    start, end = drain(outbox, 2)
    assert start.series_id == end.series_id == 5
    assert receiver.stats.late_messages == 2 and receiver.stats.rejected_total == 0


def test_messages_of_a_later_series_are_rejected_and_never_forwarded(push, receiver: StreamReceiver) -> None:
    socket, _ = push
    outbox: FrameQueue = FrameQueue(16, FullPolicy.DROP)
    receiver.listen(5, outbox, None)
    socket.send_multipart(v1_header(9, "basic", v1_config(SHAPE)))  # another detector on this endpoint
    socket.send_multipart(v1_header(5, "basic", v1_config(SHAPE)))
    socket.send_multipart(v1_end(5))
    start, end = drain(outbox, 2)
    assert start.series_id == end.series_id == 5
    assert receiver.stats.rejected == {"other_series": 1} and receiver.stats.late_messages == 0


def test_full_ingress_queue_drops_frames_and_counts_them(push, receiver: StreamReceiver) -> None:
    socket, _ = push
    outbox: FrameQueue = FrameQueue(2, FullPolicy.DROP)
    receiver.listen(5, outbox, None)
    socket.send_multipart(v1_header(5, "basic", v1_config(SHAPE)))
    for i in range(4):
        socket.send_multipart(v1_image(5, i, IMAGE))
    wait_until(lambda: receiver.stats.frames_received, lambda n: n == 4, what="frames_received")
    assert receiver.stats.frames_dropped == {"queue_full": 3}  # the header took one of the two places
    socket.send_multipart(v1_end(5))
    items = drain(outbox, 2)
    assert isinstance(items[0], SeriesStart) and items[1].index == 0
    assert isinstance(outbox.get(timeout_s=5), EndOfSeries)  # the sentinel waits for room, never dropped


def test_requested_end_follows_the_frames_already_read(push, receiver: StreamReceiver) -> None:
    socket, _ = push
    outbox: FrameQueue = FrameQueue(16, FullPolicy.DROP)
    ends: list[EndOfSeries] = []
    receiver.on_series_end = ends.append
    receiver.listen(5, outbox, None)
    socket.send_multipart(v1_header(5, "basic", v1_config(SHAPE)))
    socket.send_multipart(v1_image(5, 0, IMAGE))
    wait_until(lambda: receiver.stats.frames_received, lambda n: n == 1, what="frames_received")
    receiver.end_series(EndReason.STOP, "operator")
    start, frame, end = drain(outbox, 3)
    assert frame.index == 0 and end.reason is EndReason.STOP
    assert ends == [end]
    with pytest.raises(queue.Empty):
        outbox.get(timeout_s=0.1)


def test_a_frame_whose_payload_does_not_decode_is_forwarded_as_the_detector_sent_it(
        push, receiver: StreamReceiver) -> None:
    """The receive thread checks headers only (issue 18: as lean as a bare ZMQ loop): odd frames with a match
    offset flipped in their first LZ4 block go on, as they came; the writer's frame check rejects them
    (tests/pipeline/writers/test_checked_writer.py), and whoever decodes one gets ``corrupt_payload``, never
    a process killed inside bitshuffle."""
    socket, _ = push
    outbox: FrameQueue = FrameQueue(64, FullPolicy.DROP)
    receiver.listen(5, outbox, None)
    socket.send_multipart(v1_header(5, "basic", v1_config(SHAPE)))
    corrupt = corrupt_first_match(bslz4_chunk(IMAGE))
    for i in range(20):
        socket.send_multipart(v1_image(5, i, IMAGE, blob=corrupt if i % 2 else None))
    socket.send_multipart(v1_end(5))
    start, *frames, end = drain(outbox, 22)
    assert [f.index for f in frames] == list(range(20)) and isinstance(end, EndOfSeries)
    assert receiver.stats.frames_received == 20 and receiver.stats.rejected_total == 0
    for frame in frames:
        if frame.index % 2:
            with pytest.raises(FrameRejected) as err:
                decode_chunk_pixels(frame.encoding, frame.blob, SHAPE, IMAGE.dtype)
            assert err.value.reason == "corrupt_payload"
        else:
            np.testing.assert_array_equal(decode_chunk_pixels(frame.encoding, frame.blob, SHAPE, IMAGE.dtype), IMAGE)


def test_messages_read_while_nothing_is_armed_are_held_within_a_byte_budget(push, monkeypatch) -> None:
    """A peer streaming 10 MB messages while no series is armed cannot grow the receiver past its idle
    budget; the oldest are discarded and counted, and the series armed afterwards still arrives whole."""
    monkeypatch.setattr(stream_receiver, "IDLE_BUFFER_BYTES", 35 * 2**20)
    socket, endpoint = push
    receiver = StreamReceiver(endpoint)
    receiver.start()
    try:
        for _ in range(20):
            socket.send_multipart([b"{}", bytes(10 * 2**20)])
        wait_until(lambda: receiver.idle_messages_discarded, lambda n: n == 17, what="idle_messages_discarded")
        outbox: FrameQueue = FrameQueue(16, FullPolicy.DROP)
        socket.send_multipart(v1_header(5, "basic", v1_config(SHAPE)))
        socket.send_multipart(v1_image(5, 0, IMAGE))
        socket.send_multipart(v1_end(5))
        time.sleep(0.2)
        receiver.listen(5, outbox, None)
        start, frame, end = drain(outbox, 3)
        assert isinstance(start, SeriesStart) and frame.index == 0 and isinstance(end, EndOfSeries)
        assert receiver.stats.rejected_total == 3  # the three garbage messages still held
    finally:
        receiver.close()
    assert receiver.failure == ""


def test_a_message_part_over_the_maximum_size_never_reaches_memory_and_the_stream_goes_on(
        push, monkeypatch) -> None:
    monkeypatch.setattr(stream_receiver, "MAX_MESSAGE_BYTES", 2**20)
    socket, endpoint = push
    receiver = StreamReceiver(endpoint)
    receiver.start()
    try:
        outbox: FrameQueue = FrameQueue(16, FullPolicy.DROP)
        receiver.listen(5, outbox, None)
        socket.send_multipart([b"{}", bytes(8 * 2**20)])  # ZMQ drops the connection, and libzmq never reconnects
        wait_until(lambda: receiver.stats.rejected, lambda r: r == {"connection_dropped": 1}, what="rejected")
        socket.send_multipart(v1_header(5, "basic", v1_config(SHAPE)))
        socket.send_multipart(v1_image(5, 0, IMAGE))
        socket.send_multipart(v1_end(5))
        start, frame, end = drain(outbox, 3)
        assert isinstance(start, SeriesStart) and frame.index == 0 and isinstance(end, EndOfSeries)
        assert receiver.stats.messages_received == 3
    finally:
        receiver.close()
    assert receiver.failure == ""


def test_a_receive_thread_that_dies_while_forwarding_names_its_cause_and_ends_the_series(push, monkeypatch) -> None:
    def broken(self, outbox, frame):
        raise RuntimeError("a bug outside checking")

    monkeypatch.setattr(frame_forwarder.FrameForwarder, "_forward_frame", broken)
    socket, endpoint = push
    receiver = StreamReceiver(endpoint)
    ends: list[EndOfSeries] = []
    receiver.on_series_end = ends.append
    receiver.start()
    try:
        outbox: FrameQueue = FrameQueue(16, FullPolicy.DROP)
        receiver.listen(5, outbox, None)
        socket.send_multipart(v1_header(5, "basic", v1_config(SHAPE)))
        socket.send_multipart(v1_image(5, 0, IMAGE))
        start, end = drain(outbox, 2)
        assert isinstance(start, SeriesStart) and end.reason is EndReason.ERROR
        assert receiver.failure == "receive thread died: RuntimeError: a bug outside checking"
        assert ends == [end]
    finally:
        receiver.close()

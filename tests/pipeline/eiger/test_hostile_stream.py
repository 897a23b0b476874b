"""Hostile stream messages through a real ZMQ receiver: each is rejected alone, counted by reason, and the
good frames around it arrive unchanged. Every case here once stopped a series or lost good frames."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import zmq

from detpipe.pipeline.core.frame import Frame
from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.core.saving_target import SavingParams
from detpipe.pipeline.core.series import DetectorConfig, EndOfSeries, EndReason, SeriesStart
from detpipe.pipeline.eiger.stream_decoder import EigerStreamDecoder
from detpipe.pipeline.eiger.stream_receiver import StreamReceiver
from detpipe.pipeline.writers.nxmx_writer import NxmxWriter
from tests.pipeline.frames_for_writer_tests import read_stack
from tests.pipeline.stream_messages import (
    bslz4_chunk,
    pixels,
    v1_config,
    v1_end,
    v1_header,
    v1_image,
    v2_array,
    v2_end,
    v2_image,
    v2_message,
    v2_start,
)

SHAPE = (64, 96)
SERIES = 5
IMAGES = [pixels(SHAPE, seed=i) for i in range(3)]
DEEP = b"[" * 100_000 + b"]" * 100_000


def nested_json_in(part: int) -> list[bytes]:
    message = v1_image(SERIES, 0, IMAGES[0])
    message[part] = b'{"htype": "dimage-1.0", "deep": ' + DEEP + b"}" if part != 2 else DEEP
    return message


def lz4_claiming(width: int, height: int) -> list[bytes]:
    return v1_image(SERIES, 0, IMAGES[0], "lz4", meta={"shape": [width, height], "type": "uint32"})


def with_times(**times: object) -> list[bytes]:
    message = v1_image(SERIES, 0, IMAGES[0])
    message[3] = json.dumps({"htype": "dconfig-1.0", **times}).encode()
    return message


# Each of these once killed the receive thread (RecursionError, struct.error, OverflowError) or counted a
# frame index of 10**6 as a million missing frames.
V1_BAD = {
    "deep JSON in part 1": (nested_json_in(0), "bad_json"),
    "deep JSON in part 2": (nested_json_in(1), "bad_json"),
    "lz4 frame declaring 4 GiB": (lz4_claiming(2**16, 2**14), "bad_shape"),
    "frame id 2**64 + 1": (v1_image(SERIES, 2**64 + 1, IMAGES[0]), "bad_id"),
    "series id 2**63": (v1_image(2**63, 0, IMAGES[0]), "bad_id"),
    "frame index 10**6": (v1_image(SERIES, 10**6, IMAGES[0]), "index_out_of_range"),
    "a uint32 frame in a uint16 series": (v1_image(SERIES, 0, pixels(SHAPE, "uint32")), "bad_dtype"),
}


@pytest.mark.parametrize("case", list(V1_BAD))
def test_bad_v1_message_is_rejected_alone(push, receiver: StreamReceiver, case: str) -> None:
    message, reason = V1_BAD[case]
    frames = run_series(push[0], receiver, v1_header(SERIES, "basic", v1_config(SHAPE, nimages=3, ntrigger=1)),
                        [message], [v1_image(SERIES, i, image) for i, image in enumerate(IMAGES)], v1_end(SERIES))
    assert [bytes(f.blob) for f in frames] == [bslz4_chunk(image) for image in IMAGES]
    assert receiver.stats.rejected == {reason: 1}
    assert receiver.stats.frames_missing == 0


def test_dconfig_times_beyond_a_float_are_absent_not_fatal(push, receiver: StreamReceiver) -> None:
    frames = run_series(push[0], receiver, v1_header(SERIES, "basic", v1_config(SHAPE, nimages=3, ntrigger=1)), [],
                        [with_times(start_time=10**400, stop_time=float("nan"), real_time=-10**30)]
                        + [v1_image(SERIES, i, image) for i, image in enumerate(IMAGES[1:], 1)], v1_end(SERIES))
    assert [f.index for f in frames] == [0, 1, 2]
    assert frames[0].start_time_s is frames[0].stop_time_s is frames[0].real_time_s is None
    assert receiver.stats.rejected_total == 0


def test_a_foreign_header_mid_series_does_not_switch_the_series(push, receiver: StreamReceiver) -> None:
    """A dheader of another series used to reopen the decoder: the rest of the series was rejected."""
    socket, _ = push
    outbox: FrameQueue = FrameQueue(16, FullPolicy.DROP)
    receiver.listen(SERIES, outbox, None)
    socket.send_multipart(v1_header(SERIES, "basic", v1_config(SHAPE, nimages=3, ntrigger=1)))
    socket.send_multipart(v1_image(SERIES, 0, IMAGES[0]))
    socket.send_multipart(v1_header(SERIES + 7, "basic", v1_config(SHAPE)))
    socket.send_multipart(v1_header(SERIES - 1, "basic", v1_config(SHAPE)))
    for i in (1, 2):
        socket.send_multipart(v1_image(SERIES, i, IMAGES[i]))
    socket.send_multipart(v1_end(SERIES))
    start, *frames, end = [outbox.get(timeout_s=5) for _ in range(5)]
    assert isinstance(start, SeriesStart) and isinstance(end, EndOfSeries)
    assert [f.index for f in frames] == [0, 1, 2]
    assert receiver.stats.rejected == {"other_series": 1} and receiver.stats.late_messages == 1


def test_v2_ids_beyond_int64_are_rejected_alone(push, receiver: StreamReceiver) -> None:
    socket, _ = push
    data = {"threshold_1": v2_array(IMAGES[0], "bslz4")}
    bad = [v2_image(SERIES, 2**64 - 1, data), v2_image(SERIES, 0, data, series_id=2**63),
           v2_image(SERIES, 0, data, start_time=[10**400, 1])]
    outbox: FrameQueue = FrameQueue(16, FullPolicy.DROP)
    receiver.listen(SERIES, outbox, None)
    socket.send(v2_message(v2_start(SERIES, SHAPE, number_of_images=3)))
    for message in bad:
        socket.send(v2_message(message))
    socket.send(v2_message(v2_image(SERIES, 1, data)))
    socket.send(v2_message(v2_end(SERIES)))
    _, timeless, frame, _ = [outbox.get(timeout_s=5) for _ in range(4)]
    assert timeless.index == 0 and timeless.start_time_s is None and frame.index == 1
    assert receiver.stats.rejected == {"bad_id": 2}


HOSTILE_HEADER_VALUES = {
    "description": "EIGER\x00 16M",
    "frame_time": float("nan"),
    "count_time": 1e12,
    "nimages": 10**30,
    "detector_number": "line\nbreak",
    "wavelength": 10**400,
}


FIELD_OF = {"description": "description", "frame_time": "frame_time_s", "count_time": "count_time_s",
            "nimages": "nimages", "detector_number": "detector_number", "wavelength": "wavelength_a"}


@pytest.mark.parametrize("key", list(HOSTILE_HEADER_VALUES))
def test_header_values_out_of_range_are_dropped_and_the_series_is_written(tmp_path: Path, key: str) -> None:
    """A NUL in a string, a NaN or 1e12 s time, 1e30 images: the writer used to FAULT at series start."""
    decoder = EigerStreamDecoder()
    header = v1_header(SERIES, "basic", v1_config(SHAPE, **{"nimages": 3, "ntrigger": 1, key: HOSTILE_HEADER_VALUES[key]}))
    (start,) = decoder.decode(header, 0.0)
    field = FIELD_OF[key]
    assert getattr(start.config, field) == DetectorConfig.__dataclass_fields__[field].default
    if key == "nimages":  # the receiver puts back the armed number (next test); the decoder keeps the default
        start = dataclasses.replace(start, config=dataclasses.replace(start.config, nimages=3))
    writer = NxmxWriter(SavingParams(directory=tmp_path / "run", data_roots=(tmp_path,)))
    writer.start_series(start)
    for i, image in enumerate(IMAGES):
        (frame,) = decoder.decode(v1_image(SERIES, i, image), 0.0)
        writer.process(frame)
    (end,) = decoder.decode(v1_end(SERIES), 0.0)
    writer.finish(end)
    np.testing.assert_array_equal(read_stack(writer.master_path), np.stack(IMAGES))


def test_a_header_announcing_other_frames_than_armed_keeps_the_armed_number(push, receiver: StreamReceiver) -> None:
    armed = EigerStreamDecoder().decode(v1_header(SERIES, "basic", v1_config(SHAPE, nimages=3, ntrigger=1)), 0.0)
    socket, _ = push
    outbox: FrameQueue = FrameQueue(16, FullPolicy.DROP)
    receiver.listen(SERIES, outbox, armed[0].config)
    socket.send_multipart(v1_header(SERIES, "basic", v1_config(SHAPE, nimages=10**30, ntrigger=1)))
    socket.send_multipart(v1_end(SERIES))
    start = outbox.get(timeout_s=5)
    assert start.config.frames_expected == 3


def test_decoder_bug_on_one_message_is_counted_and_the_stream_goes_on(push, receiver: StreamReceiver,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever one message raises, not only FrameRejected, stays with that message."""
    decode = receiver.decoder.decode
    calls = iter(range(100))

    def sometimes_broken(parts, received_s):
        if next(calls) == 2:
            raise RecursionError("maximum recursion depth exceeded")
        return decode(parts, received_s)

    monkeypatch.setattr(receiver.decoder, "decode", sometimes_broken)
    frames = run_series(push[0], receiver, v1_header(SERIES, "basic", v1_config(SHAPE, nimages=4, ntrigger=1)),
                        [v1_image(SERIES, 3, IMAGES[0])], [v1_image(SERIES, i, image) for i, image in enumerate(IMAGES)],
                        v1_end(SERIES))
    assert [f.index for f in frames] == [0, 1, 2]
    assert receiver.stats.rejected == {"undecodable": 1}


def run_series(socket: zmq.Socket, receiver: StreamReceiver, header: list[bytes], bad: list[list[bytes]],
               good: list[list[bytes]], end: list[bytes]) -> list[Frame]:
    """Header, the bad messages after the first good frame, the other good frames, end; the frames forwarded."""
    outbox: FrameQueue = FrameQueue(64, FullPolicy.DROP)
    receiver.listen(SERIES, outbox, None)
    socket.send_multipart(header)
    socket.send_multipart(good[0])
    for message in bad:
        socket.send_multipart(message)
    for message in good[1:]:
        socket.send_multipart(message)
    socket.send_multipart(end)
    items = []
    while not isinstance(item := outbox.get(timeout_s=5), EndOfSeries):
        items.append(item)
    return [item for item in items if isinstance(item, Frame)]


def test_deep_cbor_nesting_is_bad_cbor(push, receiver: StreamReceiver) -> None:
    socket, _ = push
    outbox: FrameQueue = FrameQueue(16, FullPolicy.DROP)
    receiver.listen(SERIES, outbox, None)
    socket.send(v2_message(v2_start(SERIES, SHAPE, number_of_images=1)))
    socket.send(b"\xd9\xd9\xf7" + b"\x81" * 100_000 + b"\x00")
    socket.send(v2_message(v2_image(SERIES, 0, {"threshold_1": v2_array(IMAGES[0], "bslz4")})))
    socket.send(v2_message(v2_end(SERIES)))
    _, frame, _ = [outbox.get(timeout_s=5) for _ in range(3)]
    assert frame.index == 0 and receiver.stats.rejected == {"bad_cbor": 1}


def test_a_receive_thread_that_dies_anyway_names_its_cause_and_ends_the_series(push) -> None:
    socket, endpoint = push
    receiver = StreamReceiver(endpoint)

    def broken(parts):
        raise RuntimeError("a bug outside decoding")

    receiver._handle_message = broken  # type: ignore[method-assign]
    receiver.start()
    outbox: FrameQueue = FrameQueue(16, FullPolicy.DROP)
    receiver.listen(SERIES, outbox, None)
    socket.send_multipart(v1_end(SERIES))
    end = outbox.get(timeout_s=5)
    receiver.close()
    assert isinstance(end, EndOfSeries) and end.reason is EndReason.ERROR
    assert receiver.failure == "receive thread died: RuntimeError: a bug outside decoding" and end.detail == receiver.failure


def test_a_series_that_would_end_after_year_9999_still_opens_its_files(tmp_path: Path) -> None:
    decoder = EigerStreamDecoder()
    (start,) = decoder.decode(v1_header(SERIES, "basic", v1_config(SHAPE, **{"nimages": 2**31 - 1, "ntrigger": 1,
                                                                           "frame_time": 1e6})), 0.0)
    writer = NxmxWriter(SavingParams(directory=tmp_path / "run", data_roots=(tmp_path,)))
    writer.start_series(start)
    (frame,) = decoder.decode(v1_image(SERIES, 0, IMAGES[0]), 0.0)
    writer.process(frame)
    (end,) = decoder.decode(v1_end(SERIES), 0.0)
    writer.finish(end)
    np.testing.assert_array_equal(read_stack(writer.master_path), IMAGES[:1])

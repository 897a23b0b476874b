"""The simulator as a whole: series control, external triggers, death mid-series, clean shutdown."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from detpipe.simulators import DetectorState, EigerSimulator
from tests.simulators.eiger_sim_client import RestError, SimplonClient, StreamReceiver
from tests.simulators.eiger_sim_wire import decode_v1_image
from tests.waiting import wait_until


def htype(message: list[bytes]) -> str:
    return json.loads(message[0])["htype"]


def in_background(action: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            errors.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


@pytest.fixture
def slow_series(rest: SimplonClient, receiver: StreamReceiver) -> SimplonClient:
    """A 500-image series at 10 ms per image: long enough to interrupt, armed and streaming V1 to ``receiver``."""
    rest.configure(nimages=500, count_time=0.01 - 1e-7, frame_time=0.01)
    rest.enable_stream(header_detail="none")
    rest.command("initialize")
    rest.command("arm")
    return rest


@pytest.fixture
def sim_killed_mid_series(
    sim: EigerSimulator, slow_series: SimplonClient, receiver: StreamReceiver
) -> Iterator[tuple[EigerSimulator, list[list[bytes]], list[BaseException]]]:
    trigger, errors = in_background(lambda: slow_series.command("trigger"))
    received = [receiver.receive(timeout_s=5.0) for _ in range(4)]
    sim.kill()
    trigger.join(timeout=10)
    assert not trigger.is_alive()
    yield sim, [m for m in received if m is not None], errors


def test_a_killed_simulator_sends_no_end_message_and_closes_its_servers(
    sim_killed_mid_series: tuple[EigerSimulator, list[list[bytes]], list[BaseException]], receiver: StreamReceiver
) -> None:
    sim, received, trigger_errors = sim_killed_mid_series
    assert [htype(m) for m in received] == ["dheader-1.0"] + ["dimage-1.0"] * 3
    while (message := receiver.receive(timeout_s=0.3)) is not None:
        assert htype(message) == "dimage-1.0"
    assert sim.frames_sent < 500
    assert len(trigger_errors) == 1 and not isinstance(trigger_errors[0], RestError)  # no HTTP reply at all
    with pytest.raises(urllib.error.URLError):
        SimplonClient(sim.rest_url, timeout_s=2).get("detector", "status/state")
    port = int(sim.stream_endpoint.rsplit(":", 1)[1])
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZMQ binds; TIME_WAIT may linger
        probe.bind(("127.0.0.1", port))
        probe.listen()  # nobody listens on the stream port any more


def test_abort_stops_now_sends_the_end_message_and_goes_idle(
    sim: EigerSimulator, slow_series: SimplonClient, receiver: StreamReceiver
) -> None:
    trigger, errors = in_background(lambda: slow_series.command("trigger"))
    wait_until(lambda: sim.frames_sent, lambda n: n >= 2)
    assert slow_series.value("detector", "status/state") == "acquire"
    assert slow_series.value("stream", "status/state") == "acquire"
    assert slow_series.command("abort") == {"sequence id": 1}
    trigger.join(timeout=10)
    assert not errors and slow_series.value("detector", "status/state") == "idle"
    messages = receiver.receive_until(lambda m: htype(m) == "dseries_end-1.0")
    assert len(messages) - 2 == sim.frames_sent < 500


def test_cancel_stops_after_the_current_image_and_stays_armed(
    sim: EigerSimulator, slow_series: SimplonClient, receiver: StreamReceiver
) -> None:
    trigger, errors = in_background(lambda: slow_series.command("trigger"))
    wait_until(lambda: sim.frames_sent, lambda n: n >= 2)
    slow_series.command("cancel")
    trigger.join(timeout=10)
    assert not errors and sim.state is DetectorState.READY
    sent = sim.frames_sent
    assert sent < 500
    slow_series.command("disarm")
    messages = receiver.receive_until(lambda m: htype(m) == "dseries_end-1.0")
    assert [json.loads(m[0]).get("frame") for m in messages[1:-1]] == list(range(sent))


def test_external_series_trigger_sends_one_trigger_of_images(
    sim: EigerSimulator, rest: SimplonClient, receiver: StreamReceiver
) -> None:
    rest.configure(trigger_mode="exts", nimages=2, ntrigger=2, frame_time=0.001)
    rest.enable_stream(header_detail="none")
    rest.command("initialize")
    rest.command("arm")
    sim.fire_external_trigger()
    sim.fire_external_trigger()
    rest.command("disarm")
    messages = receiver.receive_until(lambda m: htype(m) == "dseries_end-1.0")
    assert [json.loads(m[0]).get("frame") for m in messages[1:-1]] == [0, 1, 2, 3]


def test_inte_trigger_takes_the_exposure_as_its_value(
    sim: EigerSimulator, rest: SimplonClient, receiver: StreamReceiver
) -> None:
    rest.configure(trigger_mode="inte", nimages=1, ntrigger=2)
    rest.enable_stream(header_detail="none")
    rest.command("initialize")
    rest.command("arm")
    with pytest.raises(RestError):
        rest.command("trigger")  # no exposure given
    rest.command("trigger", 0.003)
    rest.command("trigger", 0.005)
    rest.command("disarm")
    images = receiver.receive_until(lambda m: htype(m) == "dseries_end-1.0")[1:-1]
    assert [json.loads(m[3])["real_time"] for m in images] == [3_000_000, 5_000_000]


def test_rearming_closes_the_previous_series_first(
    sim: EigerSimulator, rest: SimplonClient, receiver: StreamReceiver
) -> None:
    rest.configure(nimages=1, frame_time=0.001)
    rest.enable_stream(header_detail="none")
    rest.command("initialize")
    assert rest.command("arm") == {"sequence id": 1}
    assert rest.command("arm") == {"sequence id": 2}
    rest.command("disarm")
    messages = [receiver.receive() for _ in range(4)]
    assert [(htype(m), json.loads(m[0])["series"]) for m in messages] == [
        ("dheader-1.0", 1), ("dseries_end-1.0", 1), ("dheader-1.0", 2), ("dseries_end-1.0", 2)
    ]


def test_images_nobody_takes_are_dropped_and_counted(make_sim: Callable[..., EigerSimulator]) -> None:
    sim = make_sim(send_timeout_s=0.2)
    rest = SimplonClient(sim.rest_url)
    rest.configure(nimages=5, frame_time=0.001)
    rest.enable_stream()
    rest.command("initialize")
    rest.command("arm")
    rest.command("trigger")
    assert rest.value("stream", "status/dropped") == 5 and sim.frames_sent == 0
    rest.command("disarm")


def test_unpaced_series_are_complete_and_in_order(make_sim: Callable[..., EigerSimulator]) -> None:
    sim = make_sim("1M", paced=False, distinct_frames=4, hit_fraction=1.0)
    rest = SimplonClient(sim.rest_url)
    rest.configure(nimages=40)
    rest.enable_stream(header_detail="none")
    receiver = StreamReceiver(sim.stream_endpoint)
    try:
        rest.command("initialize")
        rest.command("arm")
        rest.command("trigger")
        rest.command("disarm")
        images = receiver.receive_until(lambda m: htype(m) == "dseries_end-1.0")[1:-1]
    finally:
        receiver.close()
    assert [json.loads(m[0])["frame"] for m in images] == list(range(40))
    np.testing.assert_array_equal(decode_v1_image(images[37])[1], sim.frames.pixels(1))


def test_stop_during_a_trigger_ends_the_series_and_releases_everything(
    sim: EigerSimulator, slow_series: SimplonClient, receiver: StreamReceiver
) -> None:
    trigger, _ = in_background(lambda: slow_series.command("trigger"))
    wait_until(lambda: sim.frames_sent, lambda n: n >= 1)
    sim.stop()
    trigger.join(timeout=10)
    assert not trigger.is_alive()
    messages = receiver.receive_until(lambda m: htype(m) == "dseries_end-1.0")
    assert htype(messages[-1]) == "dseries_end-1.0"
    sim.stop()  # idempotent


def test_two_simulators_run_side_by_side_on_their_own_ports(make_sim: Callable[..., EigerSimulator]) -> None:
    a, b = make_sim(), make_sim()
    assert a.rest_url != b.rest_url and a.stream_endpoint != b.stream_endpoint
    assert a.rest_url.startswith("http://127.0.0.1:") and a.stream_endpoint.startswith("tcp://127.0.0.1:")


def test_a_busy_port_is_reported_at_construction(sim: EigerSimulator) -> None:
    stream_port = int(sim.stream_endpoint.rsplit(":", 1)[1])
    rest_port = int(sim.rest_url.rsplit(":", 1)[1])
    with pytest.raises(OSError, match="stream"):
        EigerSimulator("500K", stream_port=stream_port)
    with pytest.raises(OSError):
        EigerSimulator("500K", rest_port=rest_port)

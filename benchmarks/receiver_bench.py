"""Our receive stage (decode, header checks, accounting, queue put) vs a bare pyzmq PULL loop on the same unpaced
V1 stream. ``receiver.thread_us_per_frame`` is the CPU our receive thread spends per frame,
``receiver.bare_thread_us_per_frame`` the bare loop's: the difference is what decoding, accounting and the
hand-off to the next stage cost. (The payload is verified by the writer's frame check: ``writer.checked_ratio``.)"""

from __future__ import annotations

import threading
import time

import zmq

from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.eiger.simplon_client import SimplonClient
from detpipe.pipeline.eiger.stream_receiver import StreamReceiver

from .bench_size import BenchSize
from .cpu_use import thread_cpu_seconds
from .frames import DISTINCT_FRAMES
from .rounds import Measured, Spread, interleaved_times, rate, ratio
from .simulator_process import SEND_TIMEOUT_S, unpaced_simulator

KEYS = ("receiver.fps", "receiver.bare_pull_fps", "receiver.ratio_vs_bare_pull", "receiver.thread_us_per_frame",
        "receiver.bare_thread_us_per_frame")
RECEIVE_TIMEOUT_MS = int(2 * SEND_TIMEOUT_S * 1000)
# Each round connects a new PULL socket to the simulator's PUSH. Until the simulator's ZMQ thread has seen the
# previous round's socket close, PUSH may still hand it the next series' first messages, which are then lost;
# on a loaded machine that takes a noticeable time, so each round waits this long after closing (untimed).
PEER_GONE_S = 1.0


def bench_receiver(size: BenchSize) -> dict[str, Measured]:
    n_frames = size.frames
    with unpaced_simulator() as sim:
        client = SimplonClient(sim.rest_url)
        configure_series(client, 2 * DISTINCT_FRAMES)
        _bare_pull(sim.stream_endpoint, client, 2 * DISTINCT_FRAMES)  # warm-up: the simulator caches its blobs
        configure_series(client, n_frames)
        thread_s: list[float] = []
        bare_thread_s: list[float] = []
        bare_s, ours_s = interleaved_times([
            lambda: _bare_pull(sim.stream_endpoint, client, n_frames, thread_s=bare_thread_s),
            lambda: _our_receiver(sim.stream_endpoint, client, n_frames, thread_s=thread_s),
        ], size.rounds)
    return {
        "receiver.fps": rate(n_frames, ours_s),
        "receiver.bare_pull_fps": rate(n_frames, bare_s),
        "receiver.ratio_vs_bare_pull": ratio(bare_s, ours_s),
        "receiver.thread_us_per_frame": Spread.of(s / n_frames * 1e6 for s in thread_s),
        "receiver.bare_thread_us_per_frame": Spread.of(s / n_frames * 1e6 for s in bare_thread_s),
    }


def configure_series(client: SimplonClient, n_frames: int, stream_format: str = "legacy") -> None:
    if client.detector_status() == "na":
        client.command("initialize")
    for key, value in (("count_time", 0.002), ("frame_time", 0.002), ("nimages", n_frames), ("ntrigger", 1),
                       ("trigger_mode", "ints"), ("compression", "bslz4")):
        client.set_config(key, value)
    client.set_config("mode", "enabled", module="stream")
    client.set_config("format", stream_format, module="stream")


def _triggered(client: SimplonClient) -> threading.Thread:
    thread = threading.Thread(target=client.command, args=("trigger",), daemon=True)
    thread.start()
    return thread


def _bare_pull(endpoint: str, client: SimplonClient, n_frames: int, *, thread_s: list[float] | None = None) -> float:
    socket = zmq.Context.instance().socket(zmq.PULL)
    socket.setsockopt(zmq.RCVTIMEO, RECEIVE_TIMEOUT_MS)  # a lost message fails the benchmark, never hangs it
    socket.connect(endpoint)
    try:
        client.command("arm")
        socket.recv_multipart(copy=False)  # series header
        cpu_before = time.thread_time()
        t0 = time.perf_counter()
        trigger = _triggered(client)
        for _ in range(n_frames):
            socket.recv_multipart(copy=False)
        elapsed = time.perf_counter() - t0
        if thread_s is not None:
            thread_s.append(time.thread_time() - cpu_before)
        trigger.join()
        client.command("disarm")
        socket.recv_multipart(copy=False)  # end of series
    finally:
        socket.close(linger=0)
        time.sleep(PEER_GONE_S)
    return elapsed


def _our_receiver(endpoint: str, client: SimplonClient, n_frames: int, *, thread_s: list[float]) -> float:
    """Seconds our receiver takes for the series' frames; appends its receive thread's CPU seconds to ``thread_s``."""
    receiver = StreamReceiver(endpoint)
    outbox: FrameQueue = FrameQueue(n_frames + 8, FullPolicy.DROP)
    receiver.start()
    try:
        series_id = client.command("arm")
        assert series_id is not None
        receiver.listen(series_id, outbox, None)
        outbox.get(timeout_s=30)  # series header
        cpu_before = thread_cpu_seconds(receiver.thread_id)
        t0 = time.perf_counter()
        trigger = _triggered(client)
        for _ in range(n_frames):
            outbox.get(timeout_s=30)
        elapsed = time.perf_counter() - t0
        thread_s.append(thread_cpu_seconds(receiver.thread_id) - cpu_before)
        trigger.join()
        client.command("disarm")
        outbox.get(timeout_s=30)  # end of series
        assert receiver.stats.frames_received == n_frames and receiver.stats.frames_dropped_total == 0
    finally:
        receiver.close()
        time.sleep(PEER_GONE_S)
    return elapsed


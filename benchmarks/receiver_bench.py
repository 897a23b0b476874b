"""Our receive stage (decode, payload check, queue, stats) vs a bare pyzmq PULL loop on the same unpaced V1
stream, and vs a bare loop that also verifies each payload (the least any receiver that refuses corrupt
chunks must do)."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import zmq

from detpipe.pipeline.core.chunk_framing import verify_payload
from detpipe.pipeline.core.frame import Encoding
from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.eiger.simplon_client import SimplonClient
from detpipe.pipeline.eiger.stream_receiver import StreamReceiver

from .bench_size import BenchSize
from .frames import DISTINCT_FRAMES
from .rounds import Measured, interleaved_times, rate, ratio
from .simulator_process import SEND_TIMEOUT_S, unpaced_simulator

KEYS = ("receiver.fps", "receiver.bare_pull_fps", "receiver.ratio_vs_bare_pull", "receiver.bare_checked_pull_fps",
        "receiver.ratio_vs_bare_checked_pull")
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
        bare_s, checked_s, ours_s = interleaved_times([
            lambda: _bare_pull(sim.stream_endpoint, client, n_frames),
            lambda: _bare_pull(sim.stream_endpoint, client, n_frames, check=True),
            lambda: _our_receiver(sim.stream_endpoint, client, n_frames),
        ], size.rounds)
    return {
        "receiver.fps": rate(n_frames, ours_s),
        "receiver.bare_pull_fps": rate(n_frames, bare_s),
        "receiver.ratio_vs_bare_pull": ratio(bare_s, ours_s),
        "receiver.bare_checked_pull_fps": rate(n_frames, checked_s),
        "receiver.ratio_vs_bare_checked_pull": ratio(checked_s, ours_s),
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


def _bare_pull(endpoint: str, client: SimplonClient, n_frames: int, *, check: bool = False) -> float:
    socket = zmq.Context.instance().socket(zmq.PULL)
    socket.setsockopt(zmq.RCVTIMEO, RECEIVE_TIMEOUT_MS)  # a lost message fails the benchmark, never hangs it
    socket.connect(endpoint)
    try:
        client.command("arm")
        socket.recv_multipart(copy=False)  # series header
        t0 = time.perf_counter()
        trigger = _triggered(client)
        for _ in range(n_frames):
            parts = socket.recv_multipart(copy=False)
            if check:
                _verify(parts)
        elapsed = time.perf_counter() - t0
        trigger.join()
        client.command("disarm")
        socket.recv_multipart(copy=False)  # end of series
    finally:
        socket.close(linger=0)
        time.sleep(PEER_GONE_S)
    return elapsed


def _our_receiver(endpoint: str, client: SimplonClient, n_frames: int) -> float:
    receiver = StreamReceiver(endpoint)
    outbox: FrameQueue = FrameQueue(n_frames + 8, FullPolicy.DROP)
    receiver.start()
    try:
        series_id = client.command("arm")
        assert series_id is not None
        receiver.listen(series_id, outbox, None)
        outbox.get(timeout_s=30)  # series header
        t0 = time.perf_counter()
        trigger = _triggered(client)
        for _ in range(n_frames):
            outbox.get(timeout_s=30)
        elapsed = time.perf_counter() - t0
        trigger.join()
        client.command("disarm")
        outbox.get(timeout_s=30)  # end of series
        assert receiver.stats.frames_received == n_frames and receiver.stats.frames_dropped_total == 0
    finally:
        receiver.close()
        time.sleep(PEER_GONE_S)
    return elapsed


def _verify(parts: list[zmq.Frame]) -> None:
    """What a minimal checking receiver does to a V1 bslz4 image message: read its shape and type, verify."""
    dimage_d = json.loads(parts[1].bytes)
    dtype = np.dtype(dimage_d["type"])
    nbytes = int(np.prod(dimage_d["shape"])) * dtype.itemsize
    verify_payload(Encoding.BSLZ4, parts[2].buffer, nbytes, dtype.itemsize)

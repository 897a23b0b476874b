"""Our receive stage (decode, header checks, accounting, queue put) vs a bare pyzmq PULL loop on the same unpaced
V1 stream.

The bare loop (``bare_pull.py``) runs where a user's script would: in a plain Python process of its own. Our
receiver runs here, as in ``detpipe server``, with the malloc settings the stream receiver applies
(``pipeline/core/frame_memory.py``): ``receiver.ratio_vs_bare_pull`` compares the two, the goal.
``receiver.ratio_vs_same_allocator`` runs the bare loop in this process too, under those settings: it isolates
what our Python per frame (decoding, accounting, the hand-off to another thread) costs against the loop.
``receiver.thread_us_per_frame`` is the CPU our receive thread spends per frame,
``receiver.bare_thread_us_per_frame`` the plain process's loop's. (The payload is verified by the writer's frame
check: ``writer.checked_ratio``.)"""

from __future__ import annotations

import time

from detpipe.pipeline.core.frame_memory import keep_freed_frames_mapped
from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.eiger.simplon_client import SimplonClient
from detpipe.pipeline.eiger.stream_receiver import StreamReceiver

from .bare_pull import PEER_GONE_S, bare_pull, bare_pull_in_plain_process, triggered
from .bench_size import BenchSize
from .cpu_use import thread_cpu_seconds
from .frames import DISTINCT_FRAMES
from .rounds import Measured, Spread, interleaved_times, rate, ratio
from .simulator_process import unpaced_simulator

KEYS = ("receiver.fps", "receiver.bare_pull_fps", "receiver.ratio_vs_bare_pull", "receiver.ratio_vs_same_allocator",
        "receiver.thread_us_per_frame", "receiver.bare_thread_us_per_frame")


def bench_receiver(size: BenchSize) -> dict[str, Measured]:
    n_frames = size.receiver_frames
    with unpaced_simulator() as sim:
        client = SimplonClient(sim.rest_url)
        configure_series(client, 2 * DISTINCT_FRAMES)
        # warm-up: the simulator caches its blobs
        bare_pull_in_plain_process(sim.rest_url, sim.stream_endpoint, 2 * DISTINCT_FRAMES)
        configure_series(client, n_frames)
        keep_freed_frames_mapped()  # as our receiver's start does, before the first same-allocator round
        thread_s: list[float] = []
        bare_thread_s: list[float] = []

        def in_plain_process() -> float:
            elapsed, cpu_s = bare_pull_in_plain_process(sim.rest_url, sim.stream_endpoint, n_frames)
            bare_thread_s.append(cpu_s)
            return elapsed

        bare_s, ours_s, same_allocator_s = interleaved_times([
            in_plain_process,
            lambda: _our_receiver(sim.stream_endpoint, client, n_frames, thread_s=thread_s),
            lambda: bare_pull(sim.stream_endpoint, client, n_frames)[0],
        ], size.receiver_rounds)
    return {
        "receiver.fps": rate(n_frames, ours_s),
        "receiver.bare_pull_fps": rate(n_frames, bare_s),
        "receiver.ratio_vs_bare_pull": ratio(bare_s, ours_s),
        "receiver.ratio_vs_same_allocator": ratio(same_allocator_s, ours_s),
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
        trigger = triggered(client)
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


"""The receiver benchmark's baseline: the bare pyzmq PULL loop a user would write, one series per round.

Run as ``python -m benchmarks.bare_pull REST_URL ENDPOINT FRAMES`` it is one round in a plain Python process
(what ``receiver.ratio_vs_bare_pull`` compares against): it prints the loop's seconds and CPU seconds.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import zmq

from detpipe.pipeline.eiger.simplon_client import SimplonClient

from .simulator_process import SEND_TIMEOUT_S

RECEIVE_TIMEOUT_MS = int(2 * SEND_TIMEOUT_S * 1000)
# Each round connects a new PULL socket to the simulator's PUSH. Until the simulator's ZMQ thread has seen the
# previous round's socket close, PUSH may still hand it the next series' first messages, which are then lost;
# on a loaded machine that takes a noticeable time, so each round waits this long after closing (untimed).
PEER_GONE_S = 1.0
_REPOSITORY = Path(__file__).resolve().parents[1]


def bare_pull(endpoint: str, client: SimplonClient, n_frames: int) -> tuple[float, float]:
    """Seconds a bare PULL loop takes for the series' frames, and the CPU seconds it spent."""
    socket = zmq.Context.instance().socket(zmq.PULL)
    socket.setsockopt(zmq.RCVTIMEO, RECEIVE_TIMEOUT_MS)  # a lost message fails the benchmark, never hangs it
    socket.connect(endpoint)
    try:
        client.command("arm")
        socket.recv_multipart(copy=False)  # series header
        cpu_before = time.thread_time()
        t0 = time.perf_counter()
        trigger = triggered(client)
        for _ in range(n_frames):
            socket.recv_multipart(copy=False)
        elapsed = time.perf_counter() - t0
        cpu_s = time.thread_time() - cpu_before
        trigger.join()
        client.command("disarm")
        socket.recv_multipart(copy=False)  # end of series
    finally:
        socket.close(linger=0)
        time.sleep(PEER_GONE_S)
    return elapsed, cpu_s


def bare_pull_in_plain_process(rest_url: str, endpoint: str, n_frames: int) -> tuple[float, float]:
    """One round of ``bare_pull`` in a fresh Python process: nothing of this one (its threads, its malloc
    settings, its heap) weighs on it."""
    done = subprocess.run([sys.executable, "-m", __spec__.name, rest_url, endpoint, str(n_frames)],
                          cwd=_REPOSITORY, capture_output=True, text=True, check=True)
    elapsed, cpu_s = done.stdout.split()
    return float(elapsed), float(cpu_s)


def triggered(client: SimplonClient) -> threading.Thread:
    """The trigger command in a thread of its own: with ``ints`` it returns once the series was sent."""
    thread = threading.Thread(target=client.command, args=("trigger",), daemon=True)
    thread.start()
    return thread


if __name__ == "__main__":
    rest, stream, frames = sys.argv[1:]
    print(*bare_pull(stream, SimplonClient(rest), int(frames)))

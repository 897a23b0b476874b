"""AGIPD: our receiver + EXDF writer vs a bare ``karabo_bridge.Client`` loop on the same unpaced 64-cell
raw stream (simulator in its own process, REQ/REP)."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from karabo_bridge import Client

from detpipe.devices.cli.embedded_database import free_tcp_port
from detpipe.devices.cli.managed_process import ManagedProcess
from detpipe.pipeline.agipd.receiver import AgipdReceiver
from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.core.saving_target import SavingParams
from detpipe.pipeline.core.stage_runner import StageRunner
from detpipe.pipeline.writers.exdf_writer import ExdfWriter

from .bench_size import BenchSize
from .rounds import Measured, interleaved_times, rate, ratio

CELLS = 64
KEYS = ("agipd.trains_per_s", "agipd.bare_client_trains_per_s", "agipd.ratio_vs_bare_client")


def bench_agipd(size: BenchSize) -> dict[str, Measured]:
    trains = size.agipd_trains
    port = free_tcp_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    simulator = ManagedProcess(
        [sys.executable, "-m", "detpipe.simulators.agipd_cli", "--port", str(port), "--socket", "REP",
         "--product", "raw", "--cells", str(CELLS), "--unpaced", "--seed", "3"],
        ready_marker="AGIPD simulator ready",
    )
    with simulator, tempfile.TemporaryDirectory(prefix="detpipe-agipd-") as tmp:
        _bare_client(endpoint, 2)  # warm-up: the simulator builds its constants and background pools
        runs = iter(range(1000))
        bare_s, ours_s = interleaved_times([
            lambda: _bare_client(endpoint, trains),
            lambda: _receive_and_write(endpoint, Path(tmp), next(runs) + 1, trains),
        ], size.agipd_rounds)
    return {
        "agipd.trains_per_s": rate(trains, ours_s),
        "agipd.bare_client_trains_per_s": rate(trains, bare_s),
        "agipd.ratio_vs_bare_client": ratio(bare_s, ours_s),
    }


def _bare_client(endpoint: str, trains: int) -> float:
    with Client(endpoint, sock="REQ", timeout=30) as client:
        t0 = time.perf_counter()
        for _ in range(trains):
            client.next()
        return time.perf_counter() - t0


def _receive_and_write(endpoint: str, root: Path, run_number: int, trains: int) -> float:
    writer = ExdfWriter(SavingParams(directory=root, data_roots=(root,)), trains_per_sequence=256)
    inbox: FrameQueue = FrameQueue(4, FullPolicy.DROP)
    runner = StageRunner("writer", writer, inbox)
    receiver = AgipdReceiver(endpoint)
    runner.start()
    receiver.start()
    try:
        writer.prepare(run_number)
        t0 = time.perf_counter()
        receiver.listen(run_number, inbox, max_trains=trains)
        if not runner.series_done.wait(300):
            raise TimeoutError("run not written within 300 s")
        elapsed = time.perf_counter() - t0
        assert writer.stats.frames_written == trains * CELLS, writer.stats
    finally:
        receiver.close()
        runner.close()
        _remove_run(root)
    return elapsed


def _remove_run(root: Path) -> None:
    """Each round starts with the page cache the last one filled freed: ten 268 MB trains a round, left on a
    memory-backed /tmp or in the cache, made each later round slower than the one before (0.4–1.2 of the bare
    client in one run)."""
    for path in root.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()

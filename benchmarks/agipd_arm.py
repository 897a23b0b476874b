"""One arm of the AGIPD benchmark in a process of its own, started the way that arm runs for real: the bare
``karabo_bridge.Client`` loop as a user's script, our receiver + EXDF writer as in ``detpipe server``
(agipd_bench.py chooses the environment). Between its warm-up and its timed trains it touches and frees as
much memory as those trains will put in the page cache (recycled_memory.py); ``--cold`` idles instead, as a
server may between runs. Prints the seconds the trains took, alone on its last line."""

from __future__ import annotations

import argparse
import math
import shutil
import time
from pathlib import Path

from karabo_bridge import Client

from detpipe.pipeline.agipd.receiver import AgipdReceiver
from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.core.saving_target import SavingParams
from detpipe.pipeline.core.stage_runner import StageRunner
from detpipe.pipeline.core.train import AGIPD_MODULES, Product
from detpipe.pipeline.exdf.module_file import PIXEL_KEYS
from detpipe.pipeline.writers.exdf_writer import ExdfWriter

from .recycled_memory import recycle_memory

CELLS = 64
TRAIN_BYTES = CELLS * AGIPD_MODULES * sum(math.prod(k.shape) * k.dtype.itemsize for k in PIXEL_KEYS[Product.RAW])
# Trains each process takes untimed first, as a server has run before the run that counts: the first run of
# a fresh process paid ~1 s more than the next (HDF5's and the writer pool's first use, the first huge pages)
WARM_UP_TRAINS = 2


def bare_client(endpoint: str, trains: int) -> float:
    with Client(endpoint, sock="REQ", timeout=30) as client:
        t0 = time.perf_counter()
        for _ in range(trains):
            client.next()
        return time.perf_counter() - t0


def receive_and_write(endpoint: str, root: Path, run_number: int, trains: int) -> float:
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


def _before_timed_trains(args: argparse.Namespace) -> None:
    if args.cold is not None:
        time.sleep(args.cold)
    else:
        recycle_memory(args.trains * TRAIN_BYTES)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.agipd_arm", description=__doc__)
    parser.add_argument("arm", choices=("bare", "ours"))
    parser.add_argument("endpoint")
    parser.add_argument("trains", type=int)
    parser.add_argument("--root", type=Path, help="ours: the data root its run directory goes in")
    parser.add_argument("--run", type=int, default=1, help="ours: the run numbers are RUN (warm-up) and RUN + 1")
    parser.add_argument("--cold", type=float, metavar="SECONDS",
                        help="idle SECONDS instead of recycling memory: the page cache then takes memory as the "
                             "machine has it after idling (on a VM with free page reporting, memory its host "
                             "took back)")
    args = parser.parse_args(argv)
    if args.arm == "bare":
        bare_client(args.endpoint, WARM_UP_TRAINS)
        _before_timed_trains(args)
        seconds = bare_client(args.endpoint, args.trains)
    else:
        receive_and_write(args.endpoint, args.root, args.run, WARM_UP_TRAINS)
        _before_timed_trains(args)
        seconds = receive_and_write(args.endpoint, args.root, args.run + 1, args.trains)
    print(seconds)


if __name__ == "__main__":
    main()

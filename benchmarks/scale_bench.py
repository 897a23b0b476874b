"""Scale-out: offline reduction of many series on Dask, 2 local workers vs 1 (``scale.reduce_speedup_2``).

Eight triaged EIGER2 4M raw series (5 % hits) are reduced with the RED benchmark's policy (hits only, 1 % of
misses, 8 mantissa bits) by ``reduce_on_dask``, the code ``detpipe reduce`` runs, on a local cluster of one
worker process and on one of two, interleaved round by round into fresh folders. The clusters start, and
their workers import detpipe and load the rounding kernels, before any round: a facility's workers live for
a whole batch. On 2 cores the speed-up is bounded by 2 and by what the CPUs share (the page cache, memory
bandwidth); docs/scale_out.md gives the numbers.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from detpipe.pipeline.core.saving_target import SavingParams
from detpipe.pipeline.core.series import EndOfSeries
from detpipe.pipeline.core.triage_params import TriageParams
from detpipe.pipeline.policy.batch_reduction import local_cluster, plan_reductions, reduce_on_dask
from detpipe.pipeline.writers.nxmx_writer import NxmxWriter

from .bench_size import BenchSize
from .red_bench import POLICY, series_frames
from .rounds import Measured, interleaved_times, rate, ratio

if TYPE_CHECKING:
    from distributed import Client

SERIES = 8
KEYS = ("scale.reduce_series_per_s_1", "scale.reduce_series_per_s_2", "scale.reduce_speedup_2")


def bench_scale(size: BenchSize) -> dict[str, Measured]:
    from distributed import Client

    logging.getLogger("distributed").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="detpipe-scale-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        raws = _raw_series(root / "raw", size.scale_frames)
        clients = []
        for workers in (1, 2):
            cluster = stack.enter_context(local_cluster(workers))
            client = stack.enter_context(Client(cluster))
            _reduce_all(client, raws[:workers], root / f"warm-up-{workers}")  # imports and kernels, every worker
            clients.append(client)
        rounds = iter(range(1000))
        measurements: list[Callable[[], float]] = [
            lambda c=client: _reduce_all(c, raws, root / f"round-{next(rounds)}") for client in clients]
        one_s, two_s = interleaved_times(measurements, size.rounds)
    return {
        "scale.reduce_series_per_s_1": rate(SERIES, one_s),
        "scale.reduce_series_per_s_2": rate(SERIES, two_s),
        "scale.reduce_speedup_2": ratio(one_s, two_s),
    }


def _raw_series(directory: Path, frames: int) -> list[Path]:
    """``SERIES`` raw series masters that hold their frames' triage, as a triaged acquisition writes them."""
    start, series = series_frames(frames)
    start = replace(start, triage=TriageParams())
    masters = []
    for k in range(SERIES):
        writer = NxmxWriter(SavingParams(directory=directory, prefix=f"scan_{k}", data_roots=(directory.parent,)))
        writer.start_series(start)
        for frame in series:
            writer.process(frame)
        writer.finish(EndOfSeries(start.series_id, frames_sent=len(series)))
        masters.append(directory / f"scan_{k}_master.h5")
    return masters


def _reduce_all(client: Client, raws: list[Path], output: Path) -> float:
    """Seconds to reduce every series of ``raws`` on ``client``'s cluster into ``output``; every one must succeed."""
    output.mkdir()
    jobs = plan_reductions(raws, output)
    t0 = time.perf_counter()
    outcomes = reduce_on_dask(jobs, POLICY, client)
    elapsed = time.perf_counter() - t0
    if failed := [o for o in outcomes if o.manifest is None]:
        raise RuntimeError(f"{len(failed)} series failed, e.g. {failed[0].job.raw}: {failed[0].error}")
    return elapsed

"""The loop each triage worker process runs: setup → images from shared memory → results.

Worker processes (not threads) let peakfinder8 use every core without holding the writer's GIL; images
come through a shared-memory slot (one copy in the parent, none here) and only results are pickled back.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from multiprocessing import shared_memory
from multiprocessing.connection import Connection

import numpy as np

from ..core.frame import Encoding
from ..core.openmp_threads import use_one_openmp_thread
from ..core.thread_names import name_this_thread_for_the_kernel
from ..core.train import AGIPD_MODULES, MODULE_SHAPE
from .hit_finder import HitFinder
from .setup import AGIPD_IMAGE_BYTES, TriageSetup

log = logging.getLogger(__name__)

AGIPD_CELL_SHAPE = (AGIPD_MODULES, *MODULE_SHAPE)


@dataclass(frozen=True, slots=True)
class Configure:
    """Use ``setup`` for the following jobs, reading images from shared memory ``shm_name``."""

    setup: TriageSetup
    shm_name: str
    slot_bytes: int


@dataclass(frozen=True, slots=True)
class EigerJob:
    job_id: int
    slot: int
    nbytes: int
    encoding: Encoding
    shape: tuple[int, int]
    dtype: str


@dataclass(frozen=True, slots=True)
class AgipdJob:
    job_id: int
    slot: int
    has_mask: bool


@dataclass(frozen=True, slots=True)
class WorkerReady:
    worker: int
    startup_s: float


@dataclass(frozen=True, slots=True)
class Configured:
    """The worker has its hit finder for the setup last sent (built, or kept when the setup was equal)."""

    worker: int


@dataclass(frozen=True, slots=True)
class JobDone:
    """``result`` is a FrameTriage, or None with ``error`` saying why the image could not be triaged."""

    worker: int
    job_id: int
    slot: int
    result: object
    error: str = ""


def run_worker(worker: int, jobs: Connection, results: Connection) -> None:
    """Entry point of a worker process; returns when it receives ``None`` or the pool has gone."""
    name_this_thread_for_the_kernel(f"dp-triage-{worker}")
    use_one_openmp_thread()  # the decode's: two workers' spinning OpenMP threads cost 40 % of their rate
    t0 = time.monotonic()
    HitFinder.warm_up_kernels()
    results.send(WorkerReady(worker, time.monotonic() - t0))
    hit_finder: HitFinder | None = None
    built_for: object = None
    shm: shared_memory.SharedMemory | None = None
    slot_bytes = 0
    try:
        while (message := _next(jobs)) is not None:
            if isinstance(message, Configure):
                if shm is None or shm.name != message.shm_name:
                    if shm is not None:
                        shm.close()
                    # Spawned workers share the pool's resource tracker, so attaching registers nothing
                    # new and the pool alone unlinks the block.
                    shm = shared_memory.SharedMemory(name=message.shm_name)
                slot_bytes = message.slot_bytes
                if (key := message.setup.key()) != built_for or hit_finder is None:
                    hit_finder, built_for = _build(message.setup), key
                results.send(Configured(worker))
                continue
            results.send(_run_job(worker, message, hit_finder, shm, slot_bytes))
    finally:
        if shm is not None:
            shm.close()


def _next(jobs: Connection) -> object:
    try:
        return jobs.recv()
    except EOFError:  # the parent closed the pipe or died: nothing more will come
        return None


def _build(setup: TriageSetup) -> HitFinder | None:
    try:
        return setup.hit_finder()
    except Exception:  # noqa: BLE001 - every job of this series then reports the error
        log.exception("triage worker could not build its hit finder")
        return None


def _run_job(worker: int, job: EigerJob | AgipdJob, hit_finder: HitFinder | None,
             shm: shared_memory.SharedMemory | None, slot_bytes: int) -> JobDone:
    if hit_finder is None or shm is None:
        return JobDone(worker, job.job_id, job.slot, None, "no usable triage setup (see the worker log)")
    offset = job.slot * slot_bytes
    t0 = time.perf_counter()
    try:
        if isinstance(job, EigerJob):
            blob = shm.buf[offset:offset + job.nbytes]
            try:
                result = hit_finder.triage_eiger(job.encoding, blob, job.shape, np.dtype(job.dtype))
            finally:
                blob.release()
        else:
            image = np.ndarray(AGIPD_CELL_SHAPE, np.float32, buffer=shm.buf, offset=offset)
            mask = (np.ndarray(AGIPD_CELL_SHAPE, np.uint32, buffer=shm.buf, offset=offset + AGIPD_IMAGE_BYTES)
                    if job.has_mask else None)
            result = hit_finder.triage_agipd(image, mask)
            del image, mask
    except Exception as err:  # noqa: BLE001 - one bad image must not end the worker
        return JobDone(worker, job.job_id, job.slot, None, f"{type(err).__name__}: {err}")
    return JobDone(worker, job.job_id, job.slot, replace(result, time_ms=(time.perf_counter() - t0) * 1e3))

"""A fixed set of triage worker processes fed through shared-memory image slots.

Only the parent touches slot bookkeeping: it copies an image into a free slot (≈0.2 ms for a 2 MB bslz4
chunk, 1 ms for a 4 MB AGIPD cell), sends the slot number to the least busy worker and frees the slot when
the result comes back. ``slots_per_worker = 2`` keeps one image queued behind the one being triaged, so a
worker never waits for the parent between images.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from multiprocessing import shared_memory
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

import numpy as np

from ..core.frame import Frame
from ..core.train import Train
from .setup import AGIPD_IMAGE_BYTES, TriageSetup
from .worker import AgipdJob, Configure, Configured, EigerJob, JobDone, WorkerReady, run_worker

log = logging.getLogger(__name__)


def default_worker_count() -> int:
    """One worker per core this process may use: on a 2-core box both run peakfinder8 while the receiver
    and writer threads, which mostly wait on sockets and disk, share the same cores."""
    return max(1, len(os.sched_getaffinity(0)))


class TriagePool:
    """Worker processes, a job pipe and a result pipe per worker, and the shared-memory slots.

    Pipes per worker rather than shared queues: a worker that dies mid-message can then only break its
    own pipes (it is restarted with new ones), never a lock the other workers share; and no feeder
    threads are left in the parent. Not thread-safe: one owner thread (the dispatcher) calls everything.
    """

    def __init__(self, workers: int = 0, *, slots_per_worker: int = 2) -> None:
        self.workers = workers or default_worker_count()
        self.slots = self.workers * slots_per_worker
        self._ctx = multiprocessing.get_context("spawn")  # never fork a process that runs Tango and ZMQ threads
        self._jobs: list[Connection | None] = [None] * self.workers
        self._results: list[Connection | None] = [None] * self.workers
        self._processes: list[BaseProcess | None] = [None] * self.workers
        self._busy = [0] * self.workers
        self._ready: set[int] = set()
        self.startup_s = 0.0  # the slowest worker's start-up (peakfinder8 compiles on a machine's first start)
        self._configured: set[int] = set()
        self._in_flight: dict[int, tuple[int, int]] = {}  # job id -> (worker, slot)
        self._free_slots: list[int] = []
        self._shm: shared_memory.SharedMemory | None = None
        self._slot_bytes = 0
        self._configure: Configure | None = None

    # --- lifecycle ---
    def start(self) -> None:
        for worker in range(self.workers):
            self._spawn(worker)

    def close(self) -> None:
        """Stop every worker (after the jobs already queued) and release the shared memory."""
        for worker, process in enumerate(self._processes):
            if process is not None and process.is_alive():
                self._send_to(worker, None)
        for worker, process in enumerate(self._processes):
            if process is not None:
                process.join(5.0)  # a worker finishes its current image well within this
                if process.is_alive():
                    process.kill()
                    process.join(2.0)
            self._close_pipes(worker)
        self._release_shm()

    @property
    def ready(self) -> bool:
        """True once every worker has compiled its kernels."""
        return len(self._ready) == self.workers

    @property
    def configured(self) -> bool:
        """True once every worker holds a hit finder for the setup last sent."""
        return len(self._configured) == self.workers

    @property
    def workers_alive(self) -> int:
        return sum(p is not None and p.is_alive() for p in self._processes)

    # --- per series ---
    def configure(self, setup: TriageSetup) -> None:
        """Send the series' setup to every worker; jobs queued before it still use the previous setup.

        Re-allocates the slots when this series' images are bigger, which needs no job in flight.
        """
        if setup.slot_bytes > self._slot_bytes:
            if self._in_flight:
                raise RuntimeError("cannot grow the triage slots with images still being triaged")
            self._release_shm()
            self._shm = shared_memory.SharedMemory(create=True, size=setup.slot_bytes * self.slots)
            self._slot_bytes = setup.slot_bytes
            self._free_slots = list(range(self.slots))
        assert self._shm is not None
        self._configure = Configure(setup, self._shm.name, self._slot_bytes)
        self._configured = set()
        for worker in range(self.workers):
            self._send_to(worker, self._configure)

    # --- jobs ---
    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def has_free_slot(self) -> bool:
        return bool(self._free_slots)

    def submit_frame(self, job_id: int, frame: Frame) -> None:
        slot = self._take_slot(frame.nbytes_encoded)
        assert self._shm is not None
        offset = slot * self._slot_bytes
        self._shm.buf[offset:offset + frame.nbytes_encoded] = frame.blob
        self._send(EigerJob(job_id, slot, frame.nbytes_encoded, frame.encoding, frame.shape, frame.dtype.str))

    def submit_cell(self, job_id: int, train: Train, cell: int) -> None:
        slot = self._take_slot(2 * AGIPD_IMAGE_BYTES)
        assert self._shm is not None
        offset = slot * self._slot_bytes
        image = np.ndarray(train.data.shape[1:], np.float32, buffer=self._shm.buf, offset=offset)
        image[...] = train.data[cell]
        if train.mask is not None:
            mask = np.ndarray(train.mask.shape[1:], np.uint32, buffer=self._shm.buf, offset=offset + AGIPD_IMAGE_BYTES)
            mask[...] = train.mask[cell]
            del mask
        del image
        self._send(AgipdJob(job_id, slot, train.mask is not None))

    def results(self, timeout_s: float) -> list[JobDone]:
        """Finished jobs, waiting up to ``timeout_s`` for the first; frees their slots."""
        done: list[JobDone] = []
        readers = [r for r in self._results if r is not None]
        for reader in wait(readers, timeout_s):
            while reader.poll():
                try:
                    message = reader.recv()
                except (EOFError, OSError):  # the worker died; lost_jobs() restarts it
                    break
                if isinstance(message, Configured):
                    self._configured.add(message.worker)
                elif isinstance(message, WorkerReady):
                    self._ready.add(message.worker)
                    self.startup_s = max(self.startup_s, message.startup_s)
                    log.info("triage worker %d ready after %.1f s", message.worker, message.startup_s)
                elif self._in_flight.pop(message.job_id, None) is not None:
                    self._release(message.worker, message.slot)
                    done.append(message)  # a job already counted lost (its worker died) is ignored
        return done

    def lost_jobs(self) -> list[int]:
        """Jobs of workers that died (their results will never come); the workers are restarted."""
        lost: list[int] = []
        for worker, process in enumerate(self._processes):
            if process is None or process.is_alive():
                continue
            log.error("triage worker %d died (exit code %s); restarting it", worker, process.exitcode)
            jobs = [job for job, (w, _) in self._in_flight.items() if w == worker]
            for job in jobs:
                self._free_slots.append(self._in_flight.pop(job)[1])
            lost += jobs
            self._ready.discard(worker)
            self._close_pipes(worker)
            self._busy[worker] = 0
            self._spawn(worker)
            if self._configure is not None:
                self._send_to(worker, self._configure)
        return lost

    # --- internals ---
    def _spawn(self, worker: int) -> None:
        job_reader, job_writer = self._ctx.Pipe(duplex=False)
        result_reader, result_writer = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(target=run_worker, args=(worker, job_reader, result_writer),
                                    name=f"detpipe-triage-{worker}", daemon=True)
        process.start()
        job_reader.close()  # the child's ends: closed here so a dead child shows as EOF
        result_writer.close()
        self._processes[worker] = process
        self._jobs[worker], self._results[worker] = job_writer, result_reader

    def _send_to(self, worker: int, message: object) -> None:
        pipe = self._jobs[worker]
        try:
            if pipe is not None:
                pipe.send(message)
        except (BrokenPipeError, OSError) as err:  # a dead worker: lost_jobs() restarts it and its jobs count lost
            log.warning("triage worker %d did not take a message: %s", worker, err)

    def _close_pipes(self, worker: int) -> None:
        for pipes in (self._jobs, self._results):
            if (pipe := pipes[worker]) is not None:
                pipe.close()
                pipes[worker] = None

    def fits(self, nbytes: int) -> bool:
        return nbytes <= self._slot_bytes

    def _take_slot(self, nbytes: int) -> int:
        if not self._free_slots or not self.fits(nbytes):
            raise RuntimeError(f"no free triage slot for {nbytes} B; check has_free_slot and fits() first")
        return self._free_slots.pop()

    def _send(self, job: EigerJob | AgipdJob) -> None:
        worker = min(range(self.workers), key=lambda w: (self._busy[w], w))
        self._busy[worker] += 1
        self._in_flight[job.job_id] = (worker, job.slot)
        self._send_to(worker, job)

    def _release(self, worker: int, slot: int) -> None:
        self._busy[worker] -= 1
        self._free_slots.append(slot)

    def _release_shm(self) -> None:
        if self._shm is not None:
            self._shm.close()
            self._shm.unlink()
            self._shm = None
            self._slot_bytes = 0

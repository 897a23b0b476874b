"""Kept frames reduced on worker threads, several at once, handed back in the order they were kept.

Reducing one kept EIGER2 4M frame (decode, rounding, its error, recompression) takes ~12 ms of CPU, and the data
policy stage keeps every hit: at a 5 % hit rate one thread spends ~0.7 ms per incoming frame on it, as much as the
raw writer spends writing the frame to disk. Every step releases the GIL (bitshuffle, numba, large numpy passes),
so ``REDUCTION_THREADS`` threads reduce that many frames at once, while the stage's own thread goes on deciding
and writing in frame order. Each thread limits bitshuffle's OpenMP to itself (``openmp_threads``) and tells the
kernel its name (``dp-reduce``), as pipeline threads do.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

from ..core.errors import FrameRejected
from ..core.openmp_threads import use_one_openmp_thread
from ..core.thread_names import name_this_thread_for_the_kernel
from .frame_reducer import ReducedFrame

REDUCTION_THREADS = min(4, os.cpu_count() or 1)
# Kept frames in flight before the oldest is waited for and written: bounded memory. A constant, never the thread
# count or whichever reduction happens to be done: RED files are then written at the same points on any machine
# and under any load, which a reduction repeated byte for byte (SOURCE_DATE_EPOCH) needs.
IN_FLIGHT = 8

Tag = TypeVar("Tag")


def _reduction_thread() -> None:
    name_this_thread_for_the_kernel("dp-reduce")
    use_one_openmp_thread()


class ReductionPool(Generic[Tag]):
    """Runs reductions on ``threads`` threads; ``done`` yields their outcomes in submission order, each with the
    ``tag`` it was submitted with. A reduction that raises ``FrameRejected`` yields the rejection; anything else
    it raises is raised from ``done``."""

    def __init__(self, threads: int = REDUCTION_THREADS) -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="detpipe-reduce", initializer=_reduction_thread)
        self._in_flight: deque[tuple[Future[ReducedFrame], Tag]] = deque()

    @property
    def pending(self) -> int:
        return len(self._in_flight)

    def submit(self, reduction: Callable[[], ReducedFrame], tag: Tag) -> None:
        self._in_flight.append((self._executor.submit(reduction), tag))

    def done(self, *, wait_all: bool = False) -> Iterator[tuple[ReducedFrame | FrameRejected, Tag]]:
        """The oldest outcomes while more than ``IN_FLIGHT`` are in flight (with ``wait_all``, every one), each
        waited for: which ones come out depends only on how many were submitted, never on timing."""
        while self._in_flight and (wait_all or len(self._in_flight) > IN_FLIGHT):
            future, tag = self._in_flight.popleft()
            try:
                outcome: ReducedFrame | FrameRejected = future.result()
            except FrameRejected as err:
                outcome = err
            yield outcome, tag

    def close(self) -> None:
        """Drop what is still queued, wait for the reductions running, and end the threads."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._in_flight.clear()

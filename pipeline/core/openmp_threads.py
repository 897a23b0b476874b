"""One OpenMP thread for each pipeline thread that (de)compresses bitshuffle chunks.

bitshuffle's wheels bundle libgomp and run every compression and decompression with one OpenMP thread per
core, threads that spin while they wait. In detpipe every core already has a pipeline thread or a triage
worker on it: two triage workers on 2 cores, each decoding with two spinning OpenMP threads, spent 20 ms per
EIGER2 4M frame instead of 12 and triaged 85 instead of 138 frames/s. libgomp's thread limit belongs to the
thread that sets it (``omp_set_num_threads``), so each pipeline thread sets its own when it starts; threadpoolctl
finds the libgomp that bitshuffle loaded and sets it.
"""

from __future__ import annotations

import threading

from threadpoolctl import threadpool_limits

_limited = threading.local()


def use_one_openmp_thread() -> None:
    """Limit OpenMP parallel regions started from the calling thread to one thread; cheap after the first call."""
    if not getattr(_limited, "done", False):
        threadpool_limits(limits=1, user_api="openmp")
        _limited.done = True

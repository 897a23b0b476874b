"""Keep bitshuffle's OpenMP to one thread in the threads that compress frames.

bitshuffle 0.5.2 wheels bundle libgomp and compress each frame with one OpenMP thread per core. With
spinning OpenMP threads, a busy machine is ruinous: on 2 cores shared with a receiver process, one 4M
bslz4 compression took 200–300 ms instead of 4 ms. One thread takes 7.6 ms unshared, and a simulator must
leave the cores to the receiver it is testing anyway.

libgomp's thread limit belongs to the thread that sets it (``omp_set_num_threads``), so this limits only
simulator threads, never a receiver's or a test's threads in the same process; threadpoolctl finds the
libgomp bitshuffle loaded (and does nothing where none is).
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

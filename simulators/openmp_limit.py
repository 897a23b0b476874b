"""Keep bitshuffle's OpenMP to one thread in the threads that compress frames.

bitshuffle 0.5.2 wheels bundle libgomp and compress each frame with one OpenMP thread per core. With
spinning OpenMP threads, a busy machine is ruinous: on 2 cores shared with a receiver process, one 4M
bslz4 compression took 200–300 ms instead of 4 ms. One thread takes 7.6 ms unshared, and a simulator must
leave the cores to the receiver it is testing anyway.

``omp_set_num_threads`` sets the calling thread's own ICV in libgomp (a non-OpenMP thread gets a private
copy of the global ICVs on first write), so this limits only simulator threads, never a receiver's or
a test's threads in the same process. Where no libgomp is loaded (other platforms, builds without
OpenMP) it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import threading

log = logging.getLogger(__name__)
_limited = threading.local()


@functools.cache
def _loaded_openmp_runtimes() -> tuple[ctypes.CDLL, ...]:
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "libgomp" in line and "/" in line})
    except OSError:
        return ()
    runtimes = []
    for path in paths:
        try:
            runtimes.append(ctypes.CDLL(path))
        except OSError as err:
            log.debug("cannot open OpenMP runtime %s: %s", path, err)
    return tuple(runtimes)


def use_one_openmp_thread() -> None:
    """Limit OpenMP parallel regions started from the calling thread to one thread; cheap after the first call."""
    if getattr(_limited, "done", False):
        return
    for runtime in _loaded_openmp_runtimes():
        runtime.omp_set_num_threads(1)
    _limited.done = True

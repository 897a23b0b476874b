"""glibc allocator settings for a process that receives EIGER frames: freed frame buffers stay mapped.

Every frame read from ZMQ is a fresh buffer of 1–10 MB that libzmq's I/O thread allocates with ``malloc`` and
whichever stage drops the frame last frees. glibc's defaults suit a program that frees each big block at once:
its mmap threshold follows the largest block freed, and the top of a heap is given back to the kernel
(trimmed) once twice that much is free there. A pipeline always holds a few frames (queued, being checked,
being written), so the top of the I/O thread's heap empties every few frames, is trimmed, and the next frames
are faulted in again page by page: on a 2-core machine a 4M frame cost the receiving process 65–77 page
faults against 10–55 for a loop that drops each frame at once, and the receiver ran at 0.76–0.84 of that
loop; with the settings below at 0.97–1.15 (docs/performance.md, "Receiver").

Both thresholds are therefore set explicitly (which also ends glibc's adaptation of them): blocks up to
``MMAP_THRESHOLD_BYTES`` come from the heap, and up to ``TRIM_THRESHOLD_BYTES`` of free memory at the top of a
heap stays mapped for the next frames. The price is resident memory: a process keeps up to that much freed
memory per malloc arena after a burst, as LImA's and odin-data's preallocated frame buffers keep theirs.
A process whose environment already sets either threshold (``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_MMAP_THRESHOLD_``, or ``glibc.malloc.trim_threshold``/``mmap_threshold`` in ``GLIBC_TUNABLES``) keeps
the operator's choice; other C libraries are left alone. (An AGIPD train is one buffer of hundreds of MB,
which glibc maps on its own whatever these thresholds say: ``devices/cli/huge_page_buffers.py`` is its remedy.)
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform

log = logging.getLogger(__name__)

# glibc caps an explicit mmap threshold at half a 64-bit heap (HEAP_MAX_SIZE / 2): frames up to 32 MB (an
# EIGER2 16M frame compressed) come from the heap, larger ones are mapped alone.
MMAP_THRESHOLD_BYTES = 32 * 2**20
TRIM_THRESHOLD_BYTES = 256 * 2**20  # ~150 compressed 4M frames
_M_TRIM_THRESHOLD = -1  # malloc.h
_M_MMAP_THRESHOLD = -3
_OPERATOR_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")
_OPERATOR_TUNABLES = ("glibc.malloc.trim_threshold", "glibc.malloc.mmap_threshold")


@functools.cache
def keep_freed_frames_mapped() -> bool:
    """Apply the settings once per process (the stream receiver calls it when it starts); True when they are in
    force."""
    if platform.libc_ver()[0] != "glibc":
        return False
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if set_by := [name for name in _OPERATOR_VARIABLES if name in os.environ] + [
            name for name in _OPERATOR_TUNABLES if name in tunables]:
        log.info("malloc thresholds left as the environment sets them (%s)", ", ".join(set_by))
        return False
    mallopt = ctypes.CDLL(None).mallopt
    applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    if applied:
        log.info("malloc keeps up to %d MB of freed frame buffers mapped per arena (mmap threshold %d MB)",
                 TRIM_THRESHOLD_BYTES // 2**20, MMAP_THRESHOLD_BYTES // 2**20)
    return applied

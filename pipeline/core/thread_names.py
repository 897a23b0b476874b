"""Pipeline threads the kernel knows by name, so ``top -H``, ``ps -L``, py-spy and the benchmark's CPU table
show which stage uses the CPU (odin-data and LImA name their threads for the same reason).

Python 3.11 keeps a thread's name to itself; Linux takes it with ``prctl(PR_SET_NAME)``, called from the
thread itself, 15 bytes at most. Elsewhere the name stays Python's only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from collections.abc import Callable

from .openmp_threads import use_one_openmp_thread

THREAD_PREFIX = "detpipe-"
_PR_SET_NAME = 15
_KERNEL_NAME_BYTES = 15


def pipeline_thread(target: Callable[[], object], name: str) -> threading.Thread:
    """An unstarted daemon thread ``detpipe-<name>`` that first gives the kernel its name (``dp-<name>``) and
    limits its OpenMP (bitshuffle) to one thread (``openmp_threads``)."""

    def run() -> None:
        name_this_thread_for_the_kernel(f"dp-{name}")
        use_one_openmp_thread()
        target()

    return threading.Thread(target=run, name=f"{THREAD_PREFIX}{name}", daemon=True)


def name_this_thread_for_the_kernel(name: str) -> None:
    if _libc is not None:
        _libc.prctl(_PR_SET_NAME, name.encode("ascii", "replace")[:_KERNEL_NAME_BYTES], 0, 0, 0)


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


_libc = _load_libc()

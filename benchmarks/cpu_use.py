"""Which process and thread of a chain used the CPU during a series, so ``make bench`` names the bottleneck stage.

detpipe's pipeline threads give the kernel their names (``dp-receiver``, ``dp-writer``, ``dp-triage-0`` for a
triage worker process…; ``pipeline.core.thread_names``), ZMQ its own (``ZMQbg/…``); threads that stay
``python`` are Tango's and the interpreter's. A thread's CPU is read from the kernel before and after the
series (psutil), summed by name; threads that start and end inside one series are not counted.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import psutil

TOP_THREADS = 8


def cpu_seconds(processes: Sequence[tuple[str, int]]) -> Counter[str]:
    """CPU seconds so far of every thread of each ``(label, pid)`` process and its children, by
    ``label: thread name``; a process is counted once, under the first label that reaches it."""
    python_names = {t.native_id: t.name for t in threading.enumerate()}  # this process: Python knows better
    seconds: Counter[str] = Counter()
    seen: set[int] = set()
    for label, pid in processes:
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in tree:
            if process.pid in seen:
                continue
            seen.add(process.pid)
            try:
                threads = process.threads()
            except psutil.NoSuchProcess:
                continue
            for thread in threads:
                name = python_names.get(thread.id) if process.pid == os.getpid() else None
                cpu_s = thread.user_time + thread.system_time
                seconds[f"{label}: {name or _kernel_name(process.pid, thread.id)}"] += cpu_s
    return seconds


def thread_cpu_seconds(native_id: int) -> float:
    """CPU seconds so far of one thread of this process (``threading.Thread.native_id``), to the nanosecond
    (the scheduler's own account, ``/proc/self/task/<id>/schedstat``; psutil's ticks are 10 ms)."""
    return int(Path(f"/proc/self/task/{native_id}/schedstat").read_text().split()[0]) * 1e-9


def print_cpu_table(title: str, used: Counter[str], wall_s: float) -> None:
    """The busiest threads first, as cores used over the wall time (1.00 = one core all the time)."""
    if wall_s <= 0 or not used:
        return
    busiest = used.most_common(TOP_THREADS)
    width = max(len(name) for name, _ in busiest)
    print(f"\nCPU by thread, {title} ({wall_s:.1f} s of series; cores = CPU s / wall s):")
    for name, seconds in busiest:
        print(f"  {name:<{width}}  {seconds:8.2f} s  {seconds / wall_s:5.2f} cores")
    print(f"  busiest: {busiest[0][0]}")


def _kernel_name(pid: int, tid: int) -> str:
    try:
        return Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    except OSError:
        return "?"

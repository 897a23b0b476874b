"""Device servers run with glibc's transparent-huge-page tunable, so a train's receive buffer costs a few
hundred page faults instead of 65,000.

libzmq allocates every received message with ``malloc``; glibc serves an allocation over 32 MB (a 64-cell raw
AGIPD-1M train is one 268 MB array part) with a fresh ``mmap`` and returns it to the system when the train
is freed, so the kernel faults in and zeroes the next train's buffer 4 KiB at a time: ~0.2 s of ZMQ's I/O
thread per train, more than the writer's own work (docs/performance.md, "AGIPD"). With
``glibc.malloc.hugetlb=1`` (glibc 2.35 and later) those mappings are advised for transparent huge pages,
2 MiB each. A tunable is read once, when the process starts, so ``detpipe server`` (and ``DetpipeServer``)
restarts itself with it in the environment, keeping its PID and arguments. Where it is already set, by a
user or a Starter's environment, that value is kept (``glibc.malloc.hugetlb=0`` turns this off); other
C libraries ignore it, as does a kernel whose transparent huge pages are ``never``.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from collections.abc import Mapping

log = logging.getLogger(__name__)

TUNABLES = "GLIBC_TUNABLES"  # glibc's one variable for its tunables: name=value pairs joined by ':'
HUGE_PAGE_TUNABLE = "glibc.malloc.hugetlb"


def with_huge_page_buffers(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with the huge-page tunable added to any tunables already there; one already set stays."""
    env = dict(environ)
    tunables = [t for t in env.get(TUNABLES, "").split(":") if t]
    if not any(t.split("=", 1)[0] == HUGE_PAGE_TUNABLE for t in tunables):
        env[TUNABLES] = ":".join([*tunables, f"{HUGE_PAGE_TUNABLE}=1"])
    return env


def restart_with_huge_page_buffers() -> None:
    """Replaces this process by itself with the tunable set; returns at once where it is set or the C
    library is not glibc. Call it before the process starts anything (threads, sockets, files)."""
    env = with_huge_page_buffers(os.environ)
    if env == dict(os.environ) or platform.libc_ver()[0] != "glibc":
        return
    log.debug("restarting with %s=%s", TUNABLES, env[TUNABLES])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)

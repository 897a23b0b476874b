"""Servers restart themselves once with glibc's huge-page tunable, keeping their PID; a user's own setting wins."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from detpipe.devices.cli.huge_page_buffers import TUNABLES, with_huge_page_buffers

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the tunable is glibc's")


@pytest.mark.parametrize(("before", "after"), [
    (None, "glibc.malloc.hugetlb=1"),
    ("glibc.malloc.arena_max=2", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
    ("glibc.malloc.hugetlb=0", "glibc.malloc.hugetlb=0"),  # the user turned it off
    ("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2"),
])
def test_the_tunable_joins_those_set_and_never_replaces_a_users_value(before: str | None, after: str) -> None:
    environ = {"TANGO_HOST": "db:10000"} | ({} if before is None else {TUNABLES: before})
    assert with_huge_page_buffers(environ) == {"TANGO_HOST": "db:10000", TUNABLES: after}


@glibc_only
def test_the_process_restarts_once_with_the_tunable_under_the_same_pid() -> None:
    script = ("import os; from detpipe.devices.cli.huge_page_buffers import restart_with_huge_page_buffers; "
              "print('start', os.getpid(), flush=True); restart_with_huge_page_buffers(); "
              "print('running', os.getpid(), os.environ.get('GLIBC_TUNABLES'))")
    env = {k: v for k, v in os.environ.items() if k != TUNABLES}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.split("\n")
    pid = lines[0].split()[1]
    assert lines[:3] == [f"start {pid}", f"start {pid}", f"running {pid} glibc.malloc.hugetlb=1"]

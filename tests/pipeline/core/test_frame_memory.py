"""The malloc settings the stream receiver applies: freed frame-sized buffers stay mapped, so the next frame does
not fault its pages in again. Each case runs in a fresh interpreter: the settings are process-wide and glibc's own
thresholds adapt to what a process freed before."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's")

# Eight frame-sized buffers are in flight, all freed, then eight again: the second eight's page faults.
FRAMES_IN_FLIGHT = """
import ctypes, resource, sys
from detpipe.pipeline.core.frame_memory import keep_freed_frames_mapped
from detpipe.pipeline.eiger.stream_receiver import StreamReceiver
applied = keep_freed_frames_mapped() if sys.argv[1] == "settings" else False
if sys.argv[1] == "receiver":  # as a server does: a stream receiver started, nothing else
    receiver = StreamReceiver("tcp://127.0.0.1:9")
    receiver.start()
    receiver.close()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 2 * 2**20
def in_flight():
    buffers = [libc.malloc(SIZE) for _ in range(8)]
    for b in buffers:
        ctypes.memset(b, 1, SIZE)
    for b in buffers:
        libc.free(b)
in_flight()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
in_flight()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES = 8 * 2 * 2**20 // 4096


def frames_in_flight(mode: str, **environment: str) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    done = subprocess.run([sys.executable, "-c", FRAMES_IN_FLIGHT, mode], env={**env, **environment},
                          capture_output=True, text=True, check=True, timeout=60)
    applied, faults = done.stdout.split()
    return applied == "True", int(faults)


def test_with_the_settings_freed_frames_are_reused_without_page_faults() -> None:
    applied, faults = frames_in_flight("settings")
    assert applied and faults < PAGES // 10


def test_a_started_stream_receiver_applies_them() -> None:
    _, faults = frames_in_flight("receiver")
    assert faults < PAGES // 10


def test_without_them_glibc_gives_freed_frames_back_and_faults_them_in_again() -> None:
    """What the settings are for: glibc's defaults return the freed buffers, and every page comes back."""
    applied, faults = frames_in_flight("defaults")
    assert not applied and faults > PAGES // 2


@pytest.mark.parametrize("environment", [{"MALLOC_TRIM_THRESHOLD_": "1048576"},
                                         {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1048576"}],
                         ids=["variable", "tunable"])
def test_thresholds_the_environment_sets_are_left_alone(environment: dict[str, str]) -> None:
    applied, _ = frames_in_flight("settings", **environment)
    assert not applied

"""Many series through one server: memory, file descriptors and threads stay flat (issue 14's soak).

``make test`` runs a smoke soak of a few series; ``make soak`` runs 50 (``DETPIPE_SOAK_SERIES``) and prints the
figures. The server process is read through /proc, so nothing in it is instrumented for the test.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from detpipe.simulators import EigerSimulator
from tests.device_servers import device_server
from tests.integration.conftest import DETECTOR, WRITER, server_devices
from tests.integration.test_eiger_slice import acquire, configure

SERIES = int(os.environ.get("DETPIPE_SOAK_SERIES", "6"))
FRAMES = 20
WARM_UP_SERIES = 2  # numba caches, HDF5 free lists and ZMQ buffers settle in the first series
RSS_GROWTH_LIMIT_MB = 20.0


def process_figures(pid: int) -> tuple[float, int, int]:
    """(RSS in MB, open file descriptors, threads) of process ``pid``."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    rss_mb = int(status["VmRSS"].split()[0]) / 1024
    return rss_mb, len(os.listdir(f"/proc/{pid}/fd")), int(status["Threads"])


def test_series_after_series_leave_memory_descriptors_and_threads_flat(eiger_sim: EigerSimulator,
                                                                       data_root: Path) -> None:
    with device_server(server_devices(eiger_sim, data_root), timeout_s=30) as ctx:
        detector, writer = ctx.get_device(DETECTOR), ctx.get_device(WRITER)
        pid = ctx.thread.pid
        figures = []
        for series in range(SERIES):
            configure(detector, writer, data_root, FRAMES, prefix=f"soak_{series}_$id", frames_per_file=8)
            assert acquire(detector) == "Ready", detector.Status()
            assert writer.frames_written == FRAMES
            figures.append(process_figures(pid))
        with h5py.File(writer.master_file) as f:
            np.testing.assert_array_equal(f["/entry/data/data"][FRAMES - 1], eiger_sim.frames.pixels(FRAMES - 1))
    (rss0, fds0, threads0), (rss1, fds1, threads1) = figures[WARM_UP_SERIES - 1], figures[-1]
    print(f"\nsoak, {SERIES} series x {FRAMES} frames: RSS {rss0:.1f} -> {rss1:.1f} MB, fds {fds0} -> {fds1}, "
          f"threads {threads0} -> {threads1}")
    assert rss1 - rss0 < RSS_GROWTH_LIMIT_MB
    assert fds1 <= fds0 + 2 and threads1 <= threads0 + 1

"""AGIPD: our receiver + EXDF writer vs a bare ``karabo_bridge.Client`` loop on the same unpaced 64-cell
raw stream (simulator in its own process, REQ/REP).

Each arm runs in a fresh process (agipd_arm.py) with the environment it has for real: ours as ``detpipe
server`` starts itself, with glibc's huge-page tunable (devices/cli/huge_page_buffers.py); the bare client
as a user's script, without it (``agipd.ratio_vs_bare_client``, the goal). A third arm runs the bare client
with the tunable too (``agipd.ratio_vs_tuned_bare_client``): how close we are to receiving alone, once the
page faults the tunable removes are gone from both.

Every arm starts its timed trains on recycled memory (recycled_memory.py): on a VM whose balloon reports free
pages, the arm that fills the page cache would otherwise pay the host for backing memory again, 268 MB a
train, which a server that has been writing does not. A fourth arm runs ours after idling instead
(``agipd.cold_memory_ratio_vs_bare_client``), so what the machine's memory costs stays in the table.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from detpipe.devices.cli.embedded_database import free_tcp_port
from detpipe.devices.cli.huge_page_buffers import HUGE_PAGE_TUNABLE, TUNABLES, with_huge_page_buffers
from detpipe.devices.cli.managed_process import ManagedProcess

from .agipd_arm import CELLS  # the trains the simulator sends are those the arms expect and size
from .bench_size import BenchSize
from .rounds import Measured, interleaved_times, rate, ratio

KEYS = ("agipd.trains_per_s", "agipd.bare_client_trains_per_s", "agipd.ratio_vs_bare_client",
        "agipd.tuned_bare_client_trains_per_s", "agipd.ratio_vs_tuned_bare_client",
        "agipd.cold_memory_trains_per_s", "agipd.cold_memory_ratio_vs_bare_client")
REPO = Path(__file__).resolve().parents[1]


def bench_agipd(size: BenchSize) -> dict[str, Measured]:
    trains = size.agipd_trains
    port = free_tcp_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    simulator = ManagedProcess(
        [sys.executable, "-m", "detpipe.simulators.agipd_cli", "--port", str(port), "--socket", "REP",
         "--product", "raw", "--cells", str(CELLS), "--unpaced", "--seed", "3"],
        ready_marker="AGIPD simulator ready",
    )
    stock, server = _stock_environment(os.environ), with_huge_page_buffers(os.environ)
    with simulator, tempfile.TemporaryDirectory(prefix="detpipe-agipd-") as tmp:
        _arm(stock, "bare", endpoint, 1)  # warm-up: the simulator builds its constants and background pools
        runs = iter(range(1000))

        def ours(*options: str) -> float:
            return _arm(server, "ours", endpoint, trains, "--root", tmp, "--run", str(2 * next(runs) + 1), *options)

        measurements: list[Callable[[], float]] = [
            lambda: _arm(stock, "bare", endpoint, trains),
            ours,
            lambda: _arm(server, "bare", endpoint, trains),
            lambda: ours("--cold", str(size.agipd_idle_s)),
        ]
        bare_s, ours_s, tuned_bare_s, cold_s = interleaved_times(measurements, size.agipd_rounds)
    return {
        "agipd.trains_per_s": rate(trains, ours_s),
        "agipd.bare_client_trains_per_s": rate(trains, bare_s),
        "agipd.ratio_vs_bare_client": ratio(bare_s, ours_s),
        "agipd.tuned_bare_client_trains_per_s": rate(trains, tuned_bare_s),
        "agipd.ratio_vs_tuned_bare_client": ratio(tuned_bare_s, ours_s),
        "agipd.cold_memory_trains_per_s": rate(trains, cold_s),
        "agipd.cold_memory_ratio_vs_bare_client": ratio(bare_s, cold_s),
    }


def _stock_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` as a user's script gets it: without the huge-page tunable, whatever this shell set."""
    env = dict(environ)
    kept = [t for t in env.pop(TUNABLES, "").split(":") if t and t.split("=", 1)[0] != HUGE_PAGE_TUNABLE]
    if kept:
        env[TUNABLES] = ":".join(kept)
    return env


def _arm(env: Mapping[str, str], *args: str | int) -> float:
    """Seconds one arm took for its trains, in a process of its own (its start-up is not counted)."""
    command = [sys.executable, "-m", "benchmarks.agipd_arm", *map(str, args)]
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return float(done.stdout.split()[-1])

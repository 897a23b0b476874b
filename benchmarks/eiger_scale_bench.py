"""Scale-out online: one unpaced EIGER2 4M stream, every frame triaged and written, received by one receiver
server or spread by the fan-out over two (``scale.eiger_fps_1``, ``scale.eiger_fps_2``,
``scale.eiger_efficiency_2`` = fps_2 / (2 × fps_1)).

The topology is the demo's (config/demo-eiger-receivers.yaml) in a real embedded Tango database: the controlling
EigerDetector (its fan-out) in one server process, each receiver (its hit finder with one triage worker, its
writer) in its own. Both topologies run in the same servers, round after round interleaved; the controlling
device is switched between one receiver and two by its ``Receivers`` property and an Init, as an operator would.
Each receiver's queues hold the whole series, so no frame skips triage and none is dropped: the rate is the
chain's, and 0 lost is checked. The CPU each process used (its threads and triage workers) is printed, and per
frame for the fan-out's process, for its data path alone (its receive thread and ZMQ's I/O threads; the rest is
Tango and the coordination), and for the receivers (``scale.eiger_fan_out_ms_per_frame``,
``scale.eiger_fan_out_data_ms_per_frame``, ``scale.eiger_receiver_ms_per_frame``): the numbers
docs/scale_out.md projects to N hosts from. On 2 cores the
efficiency is bounded by the shared CPU, not by the fan-out.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import tango

from detpipe.devices.cli.demo import DETECTOR, RECEIVER_WRITER, WRITER, config_file
from detpipe.devices.cli.embedded_database import EmbeddedTangoDatabase, free_tcp_port
from detpipe.devices.cli.managed_process import ManagedProcess
from detpipe.devices.state_wait import prepare, wait_until_saved, wait_while_state
from detpipe.devices.tangodb.config_model import load_database_config
from detpipe.devices.tangodb.server_config import register
from detpipe.simulators import EigerSimulator

from .bench_size import BenchSize
from .cpu_use import cpu_seconds, print_cpu_table
from .frames import DISTINCT_FRAMES
from .rounds import Measured, Spread
from .simulator_process import SEND_TIMEOUT_S

KEYS = ("scale.eiger_fps_1", "scale.eiger_fps_2", "scale.eiger_efficiency_2", "scale.eiger_frames_lost",
        "scale.eiger_fan_out_ms_per_frame", "scale.eiger_fan_out_data_ms_per_frame",
        "scale.eiger_receiver_ms_per_frame")
DATA_PATH_THREADS = ("dp-receiver", "ZMQbg")  # the fan-out's receive thread and ZMQ's I/O threads
RECEIVERS = ("eiger/receiver/1", "eiger/receiver/2")
HIT_FINDERS = ("eiger/receiver-hitfinder/1", "eiger/receiver-hitfinder/2")
SERVERS = ("receiver-1", "receiver-2", "demo")
START_TIMEOUT_S = 300.0  # a receiver's triage worker compiles peakfinder8 on its first start on a machine
SERIES_TIMEOUT_S = 600.0


@dataclass(frozen=True, slots=True)
class _Series:
    fps: float
    lost: int
    wall_s: float
    cpu: Counter[str]  # CPU seconds by "process: thread"

    def process_seconds(self, label: str, threads: tuple[str, ...] = ("",)) -> float:
        """CPU seconds of process ``label``'s threads whose names start with one of ``threads`` (default all)."""
        return sum(seconds for name, seconds in self.cpu.items()
                   if any(name.startswith(f"{label}: {thread}") for thread in threads))


def bench_eiger_scale(size: BenchSize) -> dict[str, Measured]:
    frames = size.triage_frames
    with _topology(frames) as topology:
        one, two = [], []
        for _ in range(size.triage_rounds):
            for receivers, results in ((1, one), (2, two)):
                topology.use_receivers(receivers)
                results.append(topology.series(frames))
    for title, results in (("one receiver", one), ("two receivers", two)):
        used: Counter[str] = Counter()
        for result in results:
            used.update(result.cpu)
        wall = sum(r.wall_s for r in results)
        print_cpu_table(f"triaged 4M stream, {title}", used, wall)
        shares = ", ".join(f"{label} {sum(r.process_seconds(label) for r in results) / wall:.2f}"
                           for label in ("fan-out", *SERVERS[:2], "bench + simulator"))
        print(f"  cores by process: {shares}")
    fps_1, fps_2 = Spread.of(r.fps for r in one), Spread.of(r.fps for r in two)
    return {
        "scale.eiger_fps_1": fps_1,
        "scale.eiger_fps_2": fps_2,
        "scale.eiger_efficiency_2": Spread.of(b.fps / (2 * a.fps) for a, b in zip(one, two, strict=True)),
        "scale.eiger_frames_lost": float(max(r.lost for r in one + two)),
        "scale.eiger_fan_out_ms_per_frame": Spread.of(1e3 * r.process_seconds("fan-out") / frames for r in two),
        "scale.eiger_fan_out_data_ms_per_frame": Spread.of(
            1e3 * r.process_seconds("fan-out", DATA_PATH_THREADS) / frames for r in two),
        "scale.eiger_receiver_ms_per_frame": Spread.of(
            1e3 * sum(r.process_seconds(label) for label in SERVERS[:2]) / frames for r in two),
    }


class _Topology:
    def __init__(self, db: EmbeddedTangoDatabase, data: Path, servers: dict[str, int], endpoints: list[str]) -> None:
        self.tango_host, self.data, self.servers, self.endpoints = db.tango_host, data, servers, endpoints
        self.database = db.client()
        self.detector = self.proxy(DETECTOR)

    def proxy(self, name: str) -> tango.DeviceProxy:
        """By full name: a bare name would tie this process's Tango client to this database for good."""
        return tango.DeviceProxy(f"tango://{self.tango_host}/{name}")

    def use_receivers(self, n: int) -> None:
        """The controlling device's Receivers and FanOutEndpoints, in the database, then Init."""
        self.database.put_device_property(DETECTOR, {"Receivers": list(RECEIVERS[:n]),
                                                     "FanOutEndpoints": self.endpoints[:n]})
        self.detector.Init()
        state = wait_while_state(self.detector, {tango.DevState.INIT}, START_TIMEOUT_S)
        if state != tango.DevState.ON:
            raise RuntimeError(f"{DETECTOR} did not come back after Init: {self.detector.Status()}")

    def series(self, frames: int) -> _Series:
        os.sync()
        processes = [("fan-out", self.servers["demo"]), *((name, self.servers[name]) for name in SERVERS[:2]),
                     ("bench + simulator", os.getpid())]
        prepare(self.detector)
        before = cpu_seconds(processes)
        t0 = time.perf_counter()
        self.detector.Start()
        if wait_until_saved(self.detector, SERIES_TIMEOUT_S) != "Ready":
            raise RuntimeError(f"series failed: {self.detector.Status()}")
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds(processes)
        cpu.subtract(before)
        written = self.detector.receivers_frames_written
        _remove_files(self.data)
        return _Series(written / elapsed, frames - written, elapsed, +cpu)


@contextmanager
def _topology(frames: int) -> Iterator[_Topology]:
    with tempfile.TemporaryDirectory(prefix="detpipe-scale-online-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        data = root / "data"
        data.mkdir()
        sim = stack.enter_context(EigerSimulator(model="4M", seed=3, distinct_frames=DISTINCT_FRAMES, paced=False,
                                                 send_timeout_s=SEND_TIMEOUT_S))
        for i in range(DISTINCT_FRAMES):
            sim.encoded_blob(i)
        db = stack.enter_context(EmbeddedTangoDatabase(root / "tango.db"))
        ports = [free_tcp_port(), free_tcp_port()]
        register(db.client(), load_database_config(config_file("demo-eiger-receivers.yaml"), {
            "EIGER_REST_PORT": sim.rest_url.rsplit(":", 1)[1],
            "EIGER_STREAM_PORT": sim.stream_endpoint.rsplit(":", 1)[1],
            "FAN_OUT_PORT_1": str(ports[0]), "FAN_OUT_PORT_2": str(ports[1]), "DATA_ROOT": str(data)}))
        client = db.client()
        for k in (1, 2):  # queues that hold the series: the chain's rate is measured, and no frame skips triage
            client.put_device_property(HIT_FINDERS[k - 1], {"BufferFrames": [str(frames + 8)], "BypassFill": ["100"]})
            client.put_device_property(RECEIVER_WRITER.format(k), {"BufferFrames": [str(frames + 8)]})
        pids = {}
        for instance in SERVERS:
            process = stack.enter_context(ManagedProcess(
                [*_DETPIPE, "server", instance, "--host", "127.0.0.1"], ready_marker="Ready to accept request",
                env={"TANGO_HOST": db.tango_host}))
            pids[instance] = process.pid
        topology = _Topology(db, data, pids, [f"tcp://127.0.0.1:{port}" for port in ports])
        for finder in HIT_FINDERS:
            wait_while_state(topology.proxy(finder), {tango.DevState.INIT}, START_TIMEOUT_S)
        block = max(1, frames // 12)
        for proxy, directory in [(topology.proxy(WRITER), data), *(
                (topology.proxy(RECEIVER_WRITER.format(k)), data / f"receiver-{k}") for k in (1, 2))]:
            proxy.saving_directory, proxy.saving_frame_per_file = str(directory), block
        topology.detector.acq_nb_frames, topology.detector.acq_expo_time = frames, 0.002
        yield topology


_DETPIPE = [sys.executable, "-m", "detpipe.devices.cli"]


def _remove_files(directory: Path) -> None:
    """Each series starts with the page cache the last one used freed (e2e_bench.py says why)."""
    for path in directory.rglob("*.h5"):
        path.unlink()

"""``detpipe demo``: simulator → devices → NXmx files, on an embedded Tango database.

Everything it starts (database, simulator, device server) is a child process stopped by PID at the
end, whatever happens. Prints a summary a beamline user can check against the files.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import tango

from .managed_process import ManagedProcess
from .server_config import load_server_config, register
from .tango_database import EmbeddedTangoDatabase, free_tcp_port

CONFIG = Path(__file__).resolve().parent.parent / "config" / "demo-eiger.yaml"
DETECTOR, WRITER = "eiger/detector/1", "eiger/writer/1"
EXPO_TIME_S = 0.002
ACQUISITION_TIMEOUT_S = 600.0


@dataclass(frozen=True, slots=True)
class DemoSummary:
    frames_acquired: int
    frames_written: int
    frames_lost: int
    megabytes_written: float
    compression_ratio: float
    frames_per_s: float
    master_file: str

    def lines(self) -> list[str]:
        return [
            f"frames acquired   {self.frames_acquired}",
            f"frames written    {self.frames_written}",
            f"frames lost       {self.frames_lost}",
            f"MB written        {self.megabytes_written:.1f}",
            f"compression ratio {self.compression_ratio:.2f}",
            f"frames/s          {self.frames_per_s:.1f}",
            f"master file       {self.master_file}",
        ]


def config_file() -> Path:
    """The demo's YAML: next to the sources in a checkout, else in the working directory."""
    for candidate in (CONFIG, Path.cwd() / "config" / "demo-eiger.yaml"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"config/demo-eiger.yaml not found (looked at {CONFIG} and ./config)")


def run_demo(*, output: Path | None, frames: int = 200, model: str = "4M") -> int:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    output = (output or Path.cwd() / "detpipe-demo" / stamp).resolve()
    data_root = output / "data"
    data_root.mkdir(parents=True, exist_ok=True)
    detpipe = [sys.executable, "-m", "detpipe.devices.cli"]
    rest_port, stream_port = free_tcp_port(), free_tcp_port()
    with ExitStack() as stack:
        print(f"[demo] starting embedded Tango database (sqlite in {output})", flush=True)
        db = stack.enter_context(EmbeddedTangoDatabase(output / "tango_database.db"))
        env = {"TANGO_HOST": db.tango_host}
        register(db.client(), load_server_config(config_file(), {
            "EIGER_REST_PORT": str(rest_port), "EIGER_STREAM_PORT": str(stream_port), "DATA_ROOT": str(data_root),
        }))
        print(f"[demo] TANGO_HOST={db.tango_host}; starting EIGER2 {model} simulator", flush=True)
        stack.enter_context(ManagedProcess(
            [*detpipe, "sim", "eiger", "--model", model, "--rest-port", str(rest_port),
             "--stream-port", str(stream_port), "--seed", "1", "--hit-fraction", "0.1"],
            ready_marker="EIGER simulator ready",
        ))
        print("[demo] starting device server detpipe/demo", flush=True)
        stack.enter_context(ManagedProcess([*detpipe, "server", "demo"], ready_marker="Ready to accept request",
                                           env=env))
        os.environ["TANGO_HOST"] = db.tango_host
        summary = acquire(frames, data_root)
    print("[demo] summary")
    for line in summary.lines():
        print(f"  {line}")
    return 0 if summary.frames_lost == 0 and summary.frames_written == frames else 1


def acquire(frames: int, data_root: Path) -> DemoSummary:
    detector, writer = tango.DeviceProxy(DETECTOR), tango.DeviceProxy(WRITER)
    writer.saving_directory = str(data_root)
    writer.saving_prefix = "demo_$id"
    writer.saving_frame_per_file = 100
    detector.acq_nb_frames = frames
    detector.acq_expo_time = EXPO_TIME_S
    detector.compression_type = "bslz4"
    detector.Prepare()
    print(f"[demo] {detector.Status()}", flush=True)
    t0 = time.monotonic()
    detector.Start()
    status = wait_until_done(detector, ACQUISITION_TIMEOUT_S)
    elapsed = time.monotonic() - t0
    if status != "Ready":
        raise RuntimeError(f"acquisition ended in {detector.State()}: {detector.Status()}")
    print(f"[demo] {detector.Status()}", flush=True)
    received, written = detector.frames_received, writer.frames_written
    return DemoSummary(
        frames_acquired=received,
        frames_written=written,
        frames_lost=frames - written,
        megabytes_written=writer.bytes_written / 1e6,
        compression_ratio=writer.compression_ratio,
        frames_per_s=written / elapsed if elapsed > 0 else 0.0,
        master_file=writer.master_file,
    )


def wait_until_done(detector: tango.DeviceProxy, timeout_s: float) -> str:
    """Poll acq_status until the series is saved (Ready) or failed (Fault); raise on timeout."""
    deadline = time.monotonic() + timeout_s
    while (status := detector.acq_status) == "Running":
        if time.monotonic() > deadline:
            raise TimeoutError(f"{detector.name()} still running after {timeout_s}s: {detector.Status()}")
        time.sleep(0.05)
    return status

"""Unpaced simulator → detpipe device server (separate process) → NXmx files."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from tango.test_context import MultiDeviceTestContext

from detpipe.devices.eiger_detector import EigerDetector
from detpipe.devices.nexus_writer import NexusWriter
from detpipe.simulators import EigerSimulator

from .frames import DISTINCT_FRAMES

DETECTOR, WRITER = "bench/eiger/1", "bench/writer/1"


def bench_e2e(n_frames: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="detpipe-e2e-") as tmp, EigerSimulator(
        model="4M", seed=3, distinct_frames=DISTINCT_FRAMES, paced=False
    ) as sim:
        for i in range(DISTINCT_FRAMES):
            sim.encoded_blob(i)
        devices = [
            {"class": EigerDetector, "devices": [{"name": DETECTOR, "properties": {
                "DetectorUrl": sim.rest_url, "StreamEndpoint": sim.stream_endpoint, "WriterDevice": WRITER}}]},
            {"class": NexusWriter, "devices": [{"name": WRITER, "properties": {
                "DataRoots": [tmp], "BufferFrames": 256}}]},
        ]
        with MultiDeviceTestContext(devices, process=True, host="127.0.0.1", timeout=60) as ctx:
            detector, writer = ctx.get_device(DETECTOR), ctx.get_device(WRITER)
            detector.set_timeout_millis(60000)
            writer.saving_directory = str(Path(tmp))
            writer.saving_frame_per_file = 1000
            detector.acq_nb_frames = n_frames
            detector.acq_expo_time = 0.002
            detector.Prepare()
            t0 = time.perf_counter()
            detector.Start()
            deadline = t0 + 600
            while detector.acq_status == "Running" and time.perf_counter() < deadline:
                time.sleep(0.01)
            elapsed = time.perf_counter() - t0
            written = writer.frames_written
    return {"e2e.fps": written / elapsed, "e2e.frames_lost": float(n_frames - written)}

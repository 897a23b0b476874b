"""Unpaced simulator → detpipe device server (separate process, on 127.0.0.1) → NXmx files, with or without
triage. The benchmark drives the server as any Tango client does: default 3 s timeout, waiting on State."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import tango
from tango.test_context import MultiDeviceTestContext

from detpipe.devices.eiger_detector import EigerDetector
from detpipe.devices.hit_finder import HitFinder
from detpipe.devices.nexus_writer import NexusWriter
from detpipe.devices.state_wait import prepare, wait_until_saved, wait_while_state
from detpipe.simulators import EigerSimulator

from .bench_size import BenchSize
from .frames import DISTINCT_FRAMES
from .simulator_process import SEND_TIMEOUT_S

DETECTOR, HIT_FINDER, WRITER = "bench/eiger/1", "bench/hitfinder/1", "bench/writer/1"
WORKERS_START_S = 300.0
SERIES_TIMEOUT_S = 600.0
KEYS = ("e2e.fps", "e2e.frames_lost")
TRIAGE_KEYS = ("triage.e2e_fps", "triage.e2e_fps_worst", "triage.e2e_frames_lost", "triage.e2e_frames_not_triaged")


def bench_e2e(size: BenchSize) -> dict[str, float]:
    fps, lost, _ = _run_chain(size.frames, triage=False)
    return {"e2e.fps": fps, "e2e.frames_lost": lost}


def bench_triage_e2e(size: BenchSize) -> dict[str, float]:
    """Every frame triaged (the hit finder's queue holds the whole series, so none skips triage) and written.

    Best of ``size.triage_rounds`` (after ``os.sync()``, as ``best_of`` does): on the shared 2-core VM a
    page-cache writeback stall of 1–2 s in one series halves its rate; the worst round is reported too.
    """
    rounds = []
    for _ in range(size.triage_rounds):
        os.sync()
        rounds.append(_run_chain(size.triage_frames, triage=True))
    fps = [r[0] for r in rounds]
    return {"triage.e2e_fps": max(fps), "triage.e2e_fps_worst": min(fps),
            "triage.e2e_frames_lost": max(r[1] for r in rounds),
            "triage.e2e_frames_not_triaged": max(r[2] for r in rounds)}


def _run_chain(n_frames: int, *, triage: bool) -> tuple[float, float, float]:
    """(frames written per second from Start to saved, frames lost, frames not triaged)."""
    with tempfile.TemporaryDirectory(prefix="detpipe-e2e-") as tmp, EigerSimulator(
        model="4M", seed=3, distinct_frames=DISTINCT_FRAMES, paced=False, send_timeout_s=SEND_TIMEOUT_S
    ) as sim:
        for i in range(DISTINCT_FRAMES):
            sim.encoded_blob(i)
        detector_props = {"DetectorUrl": sim.rest_url, "StreamEndpoint": sim.stream_endpoint, "WriterDevice": WRITER}
        devices = [
            {"class": EigerDetector, "devices": [{"name": DETECTOR, "properties": {
                **detector_props, **({"HitFinderDevice": HIT_FINDER} if triage else {})}}]},
            {"class": NexusWriter, "devices": [{"name": WRITER, "properties": {
                "DataRoots": [tmp], "BufferFrames": 256}}]},
        ]
        if triage:
            devices.append({"class": HitFinder, "devices": [{"name": HIT_FINDER, "properties": {
                "BufferFrames": n_frames + 8, "BypassFill": 100.0}}]})
        with MultiDeviceTestContext(devices, process=True, host="127.0.0.1", timeout=60) as ctx:
            detector, writer = ctx.get_device(DETECTOR), ctx.get_device(WRITER)
            finder = ctx.get_device(HIT_FINDER) if triage else None
            if finder is not None:
                wait_while_state(finder, {tango.DevState.INIT}, WORKERS_START_S)
            writer.saving_directory = str(Path(tmp))
            writer.saving_frame_per_file = 1000
            detector.acq_nb_frames = n_frames
            detector.acq_expo_time = 0.002
            prepare(detector)
            t0 = time.perf_counter()
            detector.Start()
            wait_until_saved(detector, SERIES_TIMEOUT_S)
            elapsed = time.perf_counter() - t0
            written = writer.frames_written
            untriaged = float(n_frames - finder.frames_triaged) if finder is not None else 0.0
    return written / elapsed, float(n_frames - written), untriaged

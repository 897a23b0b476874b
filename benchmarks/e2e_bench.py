"""Unpaced simulator → detpipe device server (separate process, on 127.0.0.1) → NXmx files, with or without
triage, and with the live view off or at its default rate. The benchmark drives the server as any Tango client
does: default 3 s timeout, waiting on State."""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tango
from tango.test_context import MultiDeviceTestContext

from detpipe.devices.eiger_detector import EigerDetector
from detpipe.devices.hit_finder import HitFinder
from detpipe.devices.nexus_writer import NexusWriter
from detpipe.devices.state_wait import prepare, wait_until_saved, wait_while_state
from detpipe.pipeline.core.live_view import DEFAULT_RATE_HZ
from detpipe.simulators import EigerSimulator

from .bench_size import BenchSize
from .cpu_use import cpu_seconds, print_cpu_table
from .frames import DISTINCT_FRAMES
from .rounds import Measured, Spread
from .simulator_process import SEND_TIMEOUT_S

DETECTOR, HIT_FINDER, WRITER = "bench/eiger/1", "bench/hitfinder/1", "bench/writer/1"
WORKERS_START_S = 300.0
SERIES_TIMEOUT_S = 600.0
KEYS = ("e2e.fps", "e2e.frames_lost", "e2e.live_view_ratio", "e2e.live_view_pictures")
LIVE_VIEW_ROUNDS = 5  # interleaved series pairs (live view off, on) in one server
TRIAGE_KEYS = ("triage.e2e_fps", "triage.e2e_worker_ms", "triage.e2e_frames_lost", "triage.e2e_frames_not_triaged")


def bench_e2e(size: BenchSize) -> dict[str, Measured]:
    """``e2e.fps``: the series with the live view off (median and spread); ``e2e.live_view_ratio``: interleaved
    pairs of series in the same server, frames/s with the live view at its default rate (5 Hz) over frames/s
    without (goal >= 0.97; one pair varies by +-15 % on a shared VM, the median of 5 by a few %);
    ``e2e.live_view_pictures``: pictures the live view made over those series (0 would mean it never ran; on a
    fully loaded machine a single short series may get none, as the live view's thread yields to the data)."""
    rounds = min(size.rounds, LIVE_VIEW_ROUNDS)
    series = _run_chain(size.frames, triage=False, live_rates_hz=(0.0, DEFAULT_RATE_HZ) * rounds)
    off, on = series[0::2], series[1::2]
    _print_cpu("4M chain, live view off", off)
    return {"e2e.fps": Spread.of(r.fps for r in off), "e2e.frames_lost": max(r.frames_lost for r in series),
            "e2e.live_view_ratio": Spread.of(b.fps / a.fps for a, b in zip(off, on, strict=True)),
            "e2e.live_view_pictures": float(sum(r.pictures for r in on))}


def bench_triage_e2e(size: BenchSize) -> dict[str, Measured]:
    """Every frame triaged (the hit finder's queue holds the whole series, so none skips triage) and written:
    ``size.triage_rounds`` series in one server (each after ``os.sync()``, its files removed after it), the
    median and spread of their frames/s. On the shared 2-core VM a page-cache writeback stall of 1–2 s in one
    series halves its rate: that shows as the spread's low end, not as the median. ``triage.e2e_worker_ms``:
    a worker's mean time per frame (decode + peakfinder8, the HitFinder's ``triage_time``) in those series, to
    set beside the kernel's on an idle core (``triage.eiger4m_ms_fast`` + ``_decode``)."""
    rounds = _run_chain(size.triage_frames, triage=True, live_rates_hz=(0.0,) * size.triage_rounds)
    _print_cpu("triaged 4M chain", rounds)
    return {"triage.e2e_fps": Spread.of(r.fps for r in rounds),
            "triage.e2e_worker_ms": Spread.of(r.worker_ms for r in rounds),
            "triage.e2e_frames_lost": max(r.frames_lost for r in rounds),
            "triage.e2e_frames_not_triaged": max(r.frames_not_triaged for r in rounds)}


@dataclass(frozen=True, slots=True)
class SeriesResult:
    fps: float  # frames written per second, from Start to saved
    frames_lost: float
    frames_not_triaged: float
    pictures: int  # live view pictures made during the series
    wall_s: float
    worker_ms: float  # a triage worker's mean time per frame (0 without triage)
    cpu: Counter[str]  # CPU seconds during the series by "process: thread"


def _print_cpu(title: str, series: Sequence[SeriesResult]) -> None:
    used: Counter[str] = Counter()
    for result in series:
        used.update(result.cpu)
    print_cpu_table(title, used, sum(r.wall_s for r in series))


def _run_chain(n_frames: int, *, triage: bool, live_rates_hz: Sequence[float] = (0.0,)) -> list[SeriesResult]:
    """One series per entry of ``live_rates_hz`` (the live view's rate during it; 0 = off), in one server."""
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
                # the whole series fits: the unpaced simulator sends faster than any disk takes it, and this
                # measures the chain's rate, not how soon a smaller queue overflows (0 lost is still checked)
                "DataRoots": [tmp], "BufferFrames": n_frames + 8}}]},
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
            results = []
            for rate_hz in live_rates_hz:
                detector.live_image_max_rate = rate_hz
                os.sync()
                processes = (("server", ctx.thread.pid), ("bench + simulator", os.getpid()))
                results.append(_series(detector, writer, finder, n_frames, processes))
                _remove_files(Path(tmp))
    return results


def _remove_files(directory: Path) -> None:
    """Each series starts with the page cache the last one used freed: on this VM, pages the guest touches for
    the first time cost several times more than reused ones, so a series writing after earlier series' files
    (still cached) measured a third of the first one's rate with nothing else changed."""
    for path in directory.iterdir():
        if path.is_file():
            path.unlink()


def _series(detector: tango.DeviceProxy, writer: tango.DeviceProxy, finder: tango.DeviceProxy | None,
            n_frames: int, processes: Sequence[tuple[str, int]]) -> SeriesResult:
    pictures_before = detector.video_last_image_counter
    prepare(detector)
    cpu_before = cpu_seconds(processes)
    t0 = time.perf_counter()
    detector.Start()
    wait_until_saved(detector, SERIES_TIMEOUT_S)
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds(processes)
    cpu.subtract(cpu_before)
    written = writer.frames_written
    untriaged = float(n_frames - finder.frames_triaged) if finder is not None else 0.0
    worker_ms = finder.triage_time if finder is not None else 0.0
    return SeriesResult(written / elapsed, float(n_frames - written), untriaged,
                        detector.video_last_image_counter - pictures_before, elapsed, worker_ms, +cpu)

"""The writer stage as the writer device runs it (``CheckedWriter``: every chunk verified on the frame-check
thread, then written with HDF5 direct chunk writes) vs plain sequential writes + fsync of the same bytes; and
what the frame check costs, as the chain vs the bare ``NxmxWriter`` alone.

The check costs CPU, not disk, and disk time on a shared VM varies run to run by more than the whole check;
so the chain and the bare writer are compared on a memory file system (``/dev/shm`` where it has room), where
the writer is CPU-bound and any cost of the check shows."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from detpipe.pipeline.core.frame import Frame
from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.core.saving_target import SavingParams
from detpipe.pipeline.core.series import DetectorConfig, EndOfSeries, SeriesStart
from detpipe.pipeline.writers.checked_writer import CheckedWriter
from detpipe.pipeline.writers.nxmx_writer import NxmxWriter

from .bench_size import BenchSize
from .frames import bslz4_frames
from .rounds import Measured, Spread, interleaved_times, rate, ratio

KEYS = ("writer.fps", "writer.mbps_on_disk", "writer.raw_write_fps", "writer.ratio_vs_raw_write",
        "writer.fsync_ms_per_frame", "writer.raw_fsync_ms_per_frame",
        "writer.in_memory_fps", "writer.checked_in_memory_fps", "writer.checked_ratio")
MEMORY_FS = Path("/dev/shm")


def bench_writer(size: BenchSize) -> dict[str, Measured]:
    n_frames = size.writer_frames
    frames = bslz4_frames(n_frames)
    total_bytes = sum(len(f.blob) for f in frames)
    raw_fsync_s: list[float] = []
    fsync_s: list[float] = []
    with tempfile.TemporaryDirectory(prefix="detpipe-bench-") as tmp:
        root = Path(tmp)
        runs = iter(range(1_000_000))
        raw_s, writer_s = interleaved_times([
            lambda: _raw_write(frames, root / f"raw_{next(runs)}.bin", raw_fsync_s),
            lambda: _nxmx_write(frames, root, next(runs), checked=True, fsync_s=fsync_s),
        ], size.rounds)
    with tempfile.TemporaryDirectory(prefix="detpipe-bench-", dir=_memory_dir(total_bytes)) as tmp:
        root = Path(tmp)
        memory_s, checked_s = interleaved_times([
            lambda: _nxmx_write(frames, root, next(runs)),
            lambda: _nxmx_write(frames, root, next(runs), checked=True),
        ], size.rounds)
    return {
        "writer.fps": rate(n_frames, writer_s),
        "writer.mbps_on_disk": rate(total_bytes / 1e6, writer_s),
        "writer.raw_write_fps": rate(n_frames, raw_s),
        "writer.ratio_vs_raw_write": ratio(raw_s, writer_s),
        "writer.fsync_ms_per_frame": Spread.of(s / n_frames * 1e3 for s in fsync_s),
        "writer.raw_fsync_ms_per_frame": Spread.of(s / n_frames * 1e3 for s in raw_fsync_s),
        "writer.in_memory_fps": rate(n_frames, memory_s),
        "writer.checked_in_memory_fps": rate(n_frames, checked_s),
        "writer.checked_ratio": ratio(memory_s, checked_s),
    }


def _raw_write(frames: list, path: Path, fsync_s: list[float]) -> float:
    """Seconds to write the frames' bytes to one file and fsync it; the fsync's share goes to ``fsync_s``."""
    t0 = time.perf_counter()
    with open(path, "wb") as out:
        for frame in frames:
            out.write(frame.blob)
        out.flush()
        t_sync = time.perf_counter()
        os.fsync(out.fileno())
    elapsed = time.perf_counter() - t0
    fsync_s.append(time.perf_counter() - t_sync)
    path.unlink()  # as the NXmx files are: no round's files stay in the page cache for the next
    return elapsed


def _nxmx_write(frames: list[Frame], root: Path, run: int, *, checked: bool = False,
                fsync_s: list[float] | None = None) -> float:
    """Seconds to write ``frames`` as one NXmx series, files on disk: through the writer device's chain
    (``checked``: frame check, then writer, each on its thread, started beforehand as the device starts them
    at Init) or by calling the bare writer on this thread. The fsync's share goes to ``fsync_s``."""
    first = frames[0]
    directory = root / f"nxmx_{run}"
    writer = NxmxWriter(SavingParams(directory=directory, data_roots=(root,), frames_per_file=1000))
    start = SeriesStart(series_id=1, config=DetectorConfig(shape=first.shape, dtype=np.dtype(first.dtype),
                                                           nimages=len(frames)))
    inbox: FrameQueue = FrameQueue(len(frames) + 2, FullPolicy.BLOCK)
    chain = CheckedWriter(writer, inbox)
    if checked:
        chain.start()
    try:
        t0 = time.perf_counter()
        writer.prepare(1)
        if checked:
            for item in (start, *frames, EndOfSeries(1)):
                inbox.put(item)
            if not chain.series_done.wait(300):
                raise TimeoutError("series not written within 300 s")
            assert not chain.rejected, chain.rejected
        else:
            writer.start_series(start)
            for frame in frames:
                writer.process(frame)
            writer.finish(EndOfSeries(1))
        t_sync = time.perf_counter()
        for path in directory.iterdir():
            with open(path, "rb+") as f:
                os.fsync(f.fileno())
        elapsed = time.perf_counter() - t0
        if fsync_s is not None:
            fsync_s.append(time.perf_counter() - t_sync)
    finally:
        if checked:
            chain.close()
    assert writer.stats.frames_written == len(frames)
    shutil.rmtree(directory)  # a memory file system holds one series at a time
    return elapsed


def _memory_dir(series_bytes: int) -> str | None:
    """``/dev/shm`` if it can hold two series (a container's is often 64 MB), else the default temp dir."""
    if MEMORY_FS.is_dir() and shutil.disk_usage(MEMORY_FS).free > 2 * series_bytes:
        return str(MEMORY_FS)
    return None


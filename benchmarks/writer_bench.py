"""Direct-chunk NXmx writing vs plain sequential writes + fsync of the same bytes, and what verifying every
chunk's payload first (the stream receiver's frame-check thread, feeding the writer) costs the writer.

The check costs CPU, not disk, and disk time on a shared VM varies run to run by more than the whole check;
so writer and checked writer are compared on a memory file system (``/dev/shm`` where it has room), where
the writer is CPU-bound and any cost of the check shows."""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from detpipe.pipeline.core.chunk_framing import verify_payload
from detpipe.pipeline.core.frame import Frame
from detpipe.pipeline.core.saving_target import SavingParams
from detpipe.pipeline.core.series import DetectorConfig, EndOfSeries, SeriesStart
from detpipe.pipeline.writers.nxmx_writer import NxmxWriter

from .bench_size import BenchSize
from .frames import bslz4_frames
from .rounds import Measured, interleaved_times, rate, ratio

KEYS = ("writer.fps", "writer.mbps_on_disk", "writer.raw_write_fps", "writer.ratio_vs_raw_write",
        "writer.in_memory_fps", "writer.checked_in_memory_fps", "writer.checked_ratio")
MEMORY_FS = Path("/dev/shm")
CHECK_QUEUE = 64  # as the receiver's hand-over


def bench_writer(size: BenchSize) -> dict[str, Measured]:
    n_frames = size.frames
    frames = bslz4_frames(n_frames)
    total_bytes = sum(len(f.blob) for f in frames)
    with tempfile.TemporaryDirectory(prefix="detpipe-bench-") as tmp:
        root = Path(tmp)
        runs = iter(range(1_000_000))
        raw_s, writer_s = interleaved_times([
            lambda: _raw_write(frames, root / f"raw_{next(runs)}.bin"),
            lambda: _nxmx_write(frames, root, next(runs)),
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
        "writer.in_memory_fps": rate(n_frames, memory_s),
        "writer.checked_in_memory_fps": rate(n_frames, checked_s),
        "writer.checked_ratio": ratio(memory_s, checked_s),
    }


def _raw_write(frames: list, path: Path) -> float:
    t0 = time.perf_counter()
    with open(path, "wb") as out:
        for frame in frames:
            out.write(frame.blob)
        out.flush()
        os.fsync(out.fileno())
    elapsed = time.perf_counter() - t0
    path.unlink()  # as the NXmx files are: no round's files stay in the page cache for the next
    return elapsed


def _nxmx_write(frames: list[Frame], root: Path, run: int, *, checked: bool = False) -> float:
    first = frames[0]
    directory = root / f"nxmx_{run}"
    writer = NxmxWriter(SavingParams(directory=directory, data_roots=(root,), frames_per_file=1000))
    config = DetectorConfig(shape=first.shape, dtype=np.dtype(first.dtype), nimages=len(frames))
    t0 = time.perf_counter()
    writer.prepare(1)
    writer.start_series(SeriesStart(series_id=1, config=config))
    for frame in _payload_checked(frames) if checked else frames:
        writer.process(frame)
    writer.finish(EndOfSeries(1))
    for path in directory.iterdir():
        with open(path, "rb+") as f:
            os.fsync(f.fileno())
    elapsed = time.perf_counter() - t0
    shutil.rmtree(directory)  # a memory file system holds one series at a time
    return elapsed


def _memory_dir(series_bytes: int) -> str | None:
    """``/dev/shm`` if it can hold two series (a container's is often 64 MB), else the default temp dir."""
    if MEMORY_FS.is_dir() and shutil.disk_usage(MEMORY_FS).free > 2 * series_bytes:
        return str(MEMORY_FS)
    return None


def _payload_checked(frames: list[Frame]):
    """The frames as the writer gets them behind the receiver: verified one by one in another thread."""
    handover: queue.Queue[Frame | None] = queue.Queue(CHECK_QUEUE)

    def check() -> None:
        for frame in frames:
            verify_payload(frame.encoding, frame.blob, frame.nbytes_uncompressed, frame.dtype.itemsize)
            handover.put(frame)
        handover.put(None)

    threading.Thread(target=check, daemon=True).start()
    while (frame := handover.get()) is not None:
        yield frame

"""Direct-chunk NXmx writing vs plain sequential writes + fsync of the same bytes."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from detpipe.pipeline.core.saving_target import SavingParams
from detpipe.pipeline.core.series import DetectorConfig, EndOfSeries, SeriesStart
from detpipe.pipeline.writers.nxmx_writer import NxmxWriter

from .bench_size import BenchSize
from .best_of import best_times
from .frames import bslz4_frames

KEYS = ("writer.fps", "writer.mbps_on_disk", "writer.raw_write_fps", "writer.ratio_vs_raw_write")


def bench_writer(size: BenchSize) -> dict[str, float]:
    n_frames = size.frames
    frames = bslz4_frames(n_frames)
    total_bytes = sum(len(f.blob) for f in frames)
    with tempfile.TemporaryDirectory(prefix="detpipe-bench-") as tmp:
        root = Path(tmp)
        runs = iter(range(1_000_000))
        raw_s, writer_s = best_times([
            lambda: _raw_write(frames, root / f"raw_{next(runs)}.bin"),
            lambda: _nxmx_write(frames, root, next(runs)),
        ], size.rounds)
    return {
        "writer.fps": n_frames / writer_s,
        "writer.mbps_on_disk": total_bytes / writer_s / 1e6,
        "writer.raw_write_fps": n_frames / raw_s,
        "writer.ratio_vs_raw_write": raw_s / writer_s,
    }


def _raw_write(frames: list, path: Path) -> float:
    t0 = time.perf_counter()
    with open(path, "wb") as out:
        for frame in frames:
            out.write(frame.blob)
        out.flush()
        os.fsync(out.fileno())
    return time.perf_counter() - t0


def _nxmx_write(frames: list, root: Path, run: int) -> float:
    first = frames[0]
    directory = root / f"nxmx_{run}"
    writer = NxmxWriter(SavingParams(directory=directory, data_roots=(root,), frames_per_file=1000))
    config = DetectorConfig(shape=first.shape, dtype=np.dtype(first.dtype), nimages=len(frames))
    t0 = time.perf_counter()
    writer.prepare(1)
    writer.start_series(SeriesStart(series_id=1, config=config))
    for frame in frames:
        writer.process(frame)
    writer.finish(EndOfSeries(1))
    for path in directory.iterdir():
        with open(path, "rb+") as f:
            os.fsync(f.fileno())
    return time.perf_counter() - t0

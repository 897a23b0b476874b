"""AGIPD module-file pixel storage: each way of storing one module's raw frames vs a plain disk write of the same
bytes, one thread, so the choice of the writer's default rests on numbers (docs/agipd.md, "Pixel compression").

Frames are the AGIPD simulator's raw module 0 (analog + digital gain, per-cell offsets, noise and Bragg peaks).
Every method writes one frame per chunk, as ``ExdfModuleFile`` does; ``none``, ``deflate`` and ``bslz4`` encode
chunks with ``PixelCompression.chunk`` and ``write_direct_chunk`` (the writer's path); LZF, which only h5py can
encode, goes through HDF5's filter pipeline. ``*_ratio`` is disk-write time / method time (1.0 = as fast as
writing the bytes), ``*_stored`` the stored bytes per raw byte.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from detpipe.pipeline.exdf.pixel_compression import PixelCompression
from detpipe.simulators import AgipdSimulator

from .bench_size import BenchSize
from .rounds import Measured, interleaved_times, rate, ratio

CELLS = 64
METHODS = ("none", "deflate", "lzf", "bslz4")
KEYS = ("exdf_compression.disk_write_mb_s",
        *(f"exdf_compression.{m}_ratio" for m in METHODS),
        *(f"exdf_compression.{m}_stored" for m in METHODS))


def bench_exdf_compression(size: BenchSize) -> dict[str, Measured]:
    with AgipdSimulator(product="raw", cells=CELLS, seed=3) as simulator:
        frames = np.concatenate([simulator.train(i).data[:, 0] for i in range(size.agipd_trains)])
    results: dict[str, Measured] = {}
    with tempfile.TemporaryDirectory(prefix="detpipe-exdf-compression-") as tmp:
        directory = Path(tmp)
        writes: dict[str, Callable[[], float]] = {"disk": lambda: _disk_write(directory / "raw.bin", frames)}
        for method in METHODS:
            writes[method] = (lambda m=method: _h5_write(directory / f"{m}.h5", frames, m))
        times = dict(zip(writes, interleaved_times(list(writes.values()), size.agipd_rounds), strict=True))
        for method in METHODS:
            results[f"exdf_compression.{method}_ratio"] = ratio(times["disk"], times[method])
            results[f"exdf_compression.{method}_stored"] = _stored_bytes(directory / f"{method}.h5") / frames.nbytes
    results["exdf_compression.disk_write_mb_s"] = rate(frames.nbytes / 1e6, times["disk"])
    return results


def _disk_write(path: Path, frames: np.ndarray) -> float:
    path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with path.open("wb") as handle:
        for frame in frames:
            handle.write(frame)
    return time.perf_counter() - t0


def _h5_write(path: Path, frames: np.ndarray, method: str) -> float:
    path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with h5py.File(path, "w") as handle:
        if method == "lzf":
            dataset = handle.create_dataset("data", shape=frames.shape, chunks=(1, *frames.shape[1:]),
                                            dtype=frames.dtype, compression="lzf")
            for i, frame in enumerate(frames):
                dataset[i] = frame
        else:
            compression = PixelCompression(method)
            dataset = handle.create_dataset("data", shape=frames.shape, chunks=(1, *frames.shape[1:]),
                                            dtype=frames.dtype, **compression.dataset_options)
            offset = (0,) * (frames.ndim - 1)
            for i, frame in enumerate(frames):
                dataset.id.write_direct_chunk((i, *offset), compression.chunk(frame))
    return time.perf_counter() - t0


def _stored_bytes(path: Path) -> int:
    with h5py.File(path) as handle:
        return handle["data"].id.get_storage_size()

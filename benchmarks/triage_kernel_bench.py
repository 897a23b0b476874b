"""Hit-triage kernel speed: milliseconds per frame on one core, warm, as published peakfinder8 timings measure it.

Frames come from the simulators: EIGER2 4M frames (uint16 counts, gaps and dead pixels at 2**16 − 1,
50 Bragg peaks each) triaged as prepared float32 images against the static mask built from the NXmx
pixel mask; AGIPD-1M corrected frames (float32 photons, 50 peaks each) triaged as stacked (8192, 128)
images. Each number is the median over ``kernel_repeats`` rounds of ``FRAMES`` distinct frames, after
``HitFinder.warm_up``, with the process pinned to one CPU and bitshuffle's OpenMP held to one thread.
``triage.eiger4m_ms_decode`` is the bslz4 decode plus float32/mask preparation alone (for information:
``HitFinder.triage_eiger`` pays it on top of the fast or full figure). Nothing is asserted: the shared
2-core VM varies by up to ~1.8× run to run.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from detpipe.pipeline.core.chunk_framing import decode_chunk_pixels
from detpipe.pipeline.core.frame import Encoding
from detpipe.pipeline.core.triage_params import TriageParams
from detpipe.pipeline.triage import peakfinder8
from detpipe.pipeline.triage.detector_geometry import agipd_triage_geometry, eiger_triage_geometry
from detpipe.pipeline.triage.geometry import TriageGeometry
from detpipe.pipeline.triage.hit_finder import HitFinder
from detpipe.simulators import AgipdSimulator, DetectorModel, SfxFrames, bslz4_chunk
from detpipe.simulators.openmp_limit import use_one_openmp_thread

from .bench_size import FULL, BenchSize

FRAMES = 3
PEAKS_PER_FRAME = 50
KEYS = ("triage.eiger4m_ms_full", "triage.eiger4m_ms_fast", "triage.agipd_ms_full", "triage.agipd_ms_fast",
        "triage.eiger4m_ms_decode")


def triage_kernel_bench(size: BenchSize = FULL) -> dict[str, float]:
    """Milliseconds per frame of each kernel, the median of ``size.kernel_repeats`` rounds."""
    repeats = size.kernel_repeats
    params = TriageParams()
    sfx = SfxFrames(DetectorModel.EIGER2_4M, seed=3, hit_fraction=1.0, peaks_per_hit=(PEAKS_PER_FRAME,) * 2)
    eiger_geometry = eiger_triage_geometry(
        sfx.shape, beam_center_x_px=sfx.beam_center[0], beam_center_y_px=sfx.beam_center[1],
        pixel_mask=sfx.pixel_mask, params=params,
    )
    raw = [sfx.pixels(i) for i in range(FRAMES)]
    eiger_images = [frame.astype(np.float32) for frame in raw]
    blobs = [bslz4_chunk(frame) for frame in raw]
    agipd_images = _agipd_hit_frames()
    agipd_geometry = agipd_triage_geometry(params=params)
    results: dict[str, float] = {}
    with _one_core():
        use_one_openmp_thread()
        for mode in ("full", "fast"):
            mode_params = TriageParams(fast_mode=mode == "fast")
            eiger = _warm(eiger_geometry, mode_params)
            agipd = _warm(agipd_geometry, mode_params)
            results[f"triage.eiger4m_ms_{mode}"] = _median_ms(
                [lambda im=im: eiger.triage(im) for im in eiger_images], repeats
            )
            results[f"triage.agipd_ms_{mode}"] = _median_ms(
                [lambda im=im: agipd.triage_agipd(im) for im in agipd_images], repeats
            )
        results["triage.eiger4m_ms_decode"] = _median_ms(
            [lambda blob=blob: _decode_and_prepare(eiger, blob, sfx.shape, sfx.dtype) for blob in blobs], repeats
        )
    return results


def _agipd_hit_frames() -> list[np.ndarray]:
    simulator = AgipdSimulator(
        product="corrected", cells=16, seed=3, paced=False, hit_fraction=1.0,
        peaks_per_hit=(PEAKS_PER_FRAME,) * 2,
    )
    try:
        train = simulator.train(0)
        hits = np.flatnonzero(simulator.truth.train(0).hits)[:FRAMES]
        return [np.ascontiguousarray(train.data[frame]) for frame in hits]
    finally:
        simulator.stop()


def _warm(geometry: TriageGeometry, params: TriageParams) -> HitFinder:
    hit_finder = HitFinder(geometry, params)
    hit_finder.warm_up()
    return hit_finder


def _decode_and_prepare(hit_finder: HitFinder, blob: bytes, shape: tuple[int, int], dtype: np.dtype) -> None:
    """What ``HitFinder.triage_eiger`` does before peakfinder8 (the same kernels and buffers)."""
    pixels = decode_chunk_pixels(Encoding.BSLZ4, blob, shape, dtype)
    work = hit_finder._work  # the benchmark reaches into the workspace to time this step alone
    peakfinder8.prepare_eiger_image(
        pixels.reshape(-1), hit_finder.geometry.mask.reshape(-1), (1 << (8 * dtype.itemsize)) - 1,
        hit_finder.params.lit_pixel_threshold, work.image, work.mask,
    )


def _median_ms(calls: list[Callable[[], object]], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        for call in calls:
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


@contextmanager
def _one_core() -> Iterator[None]:
    """Pin this process to one CPU for the measurement (Linux), as the anchors were measured."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


if __name__ == "__main__":
    for name, value in triage_kernel_bench().items():
        print(f"{name:<28} {value:8.2f}")
    sys.exit(0)

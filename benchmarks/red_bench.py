"""``red.*``: the data policy stage on an EIGER2 4M series at a 5 % hit fraction (hits + 1 % misses, 8 significant
bits), against writing every frame raw in the same run.

Frames carry triage results taken from the simulator's truth, so the number is the policy's own cost
(decision, decode, rounding, recompression, RED file writing), not peak finding (``triage.*``).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from detpipe.pipeline.core.chunk_framing import bslz4_chunk
from detpipe.pipeline.core.frame import Encoding, Frame
from detpipe.pipeline.core.peak_list import FrameTriage, PeakList
from detpipe.pipeline.core.saving_target import SavingParams
from detpipe.pipeline.core.series import DetectorConfig, EndOfSeries, SeriesStart
from detpipe.pipeline.policy.data_policy_stage import DataPolicyStage
from detpipe.pipeline.policy.reduction_params import Policy, ReductionParams
from detpipe.pipeline.writers.nxmx_writer import NxmxWriter

from .bench_size import BenchSize

KEYS = ("red.fps", "red.raw_writer_fps", "red.fps_vs_raw_writer", "red.reduction_ratio", "red.frames_kept")
POLICY = ReductionParams(policy=Policy.RED, hits_only=True, miss_fraction=0.01, miss_seed=3, mantissa_bits=8)


def _series(n_frames: int) -> tuple[SeriesStart, list[Frame]]:
    from detpipe.simulators import SfxFrames

    sfx = SfxFrames("4M", seed=8, hit_fraction=0.05)
    no_peaks = PeakList.empty()
    frames = [Frame(1, i, sfx.shape, sfx.dtype, Encoding.BSLZ4, bslz4_chunk(sfx.pixels(i)), 0.0,
                    triage=FrameTriage(n_peaks=0, peaks=no_peaks, lit_pixels=0, is_hit=sfx.truth(i).is_hit))
              for i in range(n_frames)]
    config = DetectorConfig(shape=sfx.shape, dtype=np.dtype(sfx.dtype), nimages=n_frames)
    return SeriesStart(1, config=config, pixel_mask=sfx.pixel_mask), frames


def _rate(stage: NxmxWriter | DataPolicyStage, start: SeriesStart, frames: list[Frame]) -> float:
    t0 = time.perf_counter()
    stage.start_series(start)
    for frame in frames:
        stage.process(frame)
    stage.finish(EndOfSeries(1, frames_sent=len(frames)))
    return len(frames) / (time.perf_counter() - t0)


def bench_red(size: BenchSize) -> dict[str, float]:
    start, frames = _series(size.red_frames)
    with tempfile.TemporaryDirectory(prefix="detpipe-red-bench-") as tmp:
        root = Path(tmp)
        raw_fps = _rate(NxmxWriter(SavingParams(directory=root / "raw", data_roots=(root,))), start, frames)
        stage = DataPolicyStage(SavingParams(directory=root / "run", data_roots=(root,)), POLICY)
        red_fps = _rate(stage, start, frames)
        stage.finalise([])
        return {"red.fps": red_fps, "red.raw_writer_fps": raw_fps, "red.fps_vs_raw_writer": red_fps / raw_fps,
                "red.reduction_ratio": stage.stats.reduction_ratio,
                "red.frames_kept": float(stage.stats.frames_kept)}

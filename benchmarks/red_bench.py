"""``red.*``: the data policy stage on an EIGER2 4M series at a 5 % hit fraction (hits + 1 % misses, 8 significant
bits), against writing every frame raw in the same run; each until its files are on disk (fsync), in
interleaved rounds.

Frames carry triage results taken from the simulator's truth, so the number is the policy's own cost
(decision, decode, rounding, recompression, RED file writing), not peak finding (``triage.*``).

``red.realistic_*``: the same policy on the simulator's ``realistic`` preset (low flux, weak and saturated
peaks, defects; docs/simulators.md), its frames triaged by the hit finder at default parameters, as online.
``red.realistic_bragg_kept`` is what the RED data keeps of the true Bragg signal: over every true peak of the
series, the background-subtracted counts in a window around it in the RED frames (0 for a frame not kept) over
the same in the raw frames (goal ≥ 0.99: a missed hit or a coarse rounding would show).
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers the bitshuffle filter the RED frames are read through
import numpy as np

from detpipe.pipeline.core.chunk_framing import bslz4_chunk
from detpipe.pipeline.core.frame import Encoding, Frame
from detpipe.pipeline.core.peak_list import FrameTriage, PeakList
from detpipe.pipeline.core.saving_target import SavingParams
from detpipe.pipeline.core.series import DetectorConfig, EndOfSeries, SeriesStart
from detpipe.pipeline.core.triage_params import TriageParams
from detpipe.pipeline.policy.data_policy_stage import DataPolicyStage
from detpipe.pipeline.policy.reduction_params import Policy, ReductionParams
from detpipe.pipeline.policy.reduction_stats import ReductionStats
from detpipe.pipeline.triage.detector_geometry import eiger_triage_geometry
from detpipe.pipeline.triage.hit_finder import HitFinder
from detpipe.pipeline.writers.nxmx_writer import NxmxWriter

from .bench_size import BenchSize
from .rounds import Measured, interleaved_times, rate, ratio

KEYS = ("red.fps", "red.raw_writer_fps", "red.fps_vs_raw_writer", "red.reduction_ratio", "red.frames_kept",
        "red.realistic_reduction_ratio", "red.realistic_bragg_kept")
BRAGG_WINDOW_PX = 4  # ≥ 3σ of the simulator's widest peaks (σ ≤ 1.3 px)
DISTINCT_FRAMES = 100  # simulated frames the RED series cycles over (5 hits among them)
POLICY = ReductionParams(policy=Policy.RED, hits_only=True, miss_fraction=0.01, miss_seed=3, mantissa_bits=8)


def series_frames(n_frames: int) -> tuple[SeriesStart, list[Frame]]:
    """``n_frames`` frames cycling over up to ``DISTINCT_FRAMES`` simulated ones (5 % hits), triaged as the simulator's
    truth says."""
    from detpipe.simulators import SfxFrames

    sfx = SfxFrames("4M", seed=8, hit_fraction=0.05)
    no_peaks = PeakList.empty()
    distinct = [(bslz4_chunk(sfx.pixels(i)), sfx.truth(i).is_hit) for i in range(min(n_frames, DISTINCT_FRAMES))]
    frames = [Frame(1, i, sfx.shape, sfx.dtype, Encoding.BSLZ4, blob, 0.0,
                    triage=FrameTriage(n_peaks=0, peaks=no_peaks, lit_pixels=0, is_hit=is_hit))
              for i, (blob, is_hit) in zip(range(n_frames), itertools.cycle(distinct))]
    config = DetectorConfig(shape=sfx.shape, dtype=np.dtype(sfx.dtype), nimages=n_frames)
    return SeriesStart(1, config=config, pixel_mask=sfx.pixel_mask), frames


def _seconds(stage: NxmxWriter | DataPolicyStage, start: SeriesStart, frames: list[Frame], root: Path) -> float:
    """From the series' start until every file it wrote under ``root`` is on disk (fsync), as ``writer.*``
    measures the raw writer: what RED saves is the bytes it does not write, which the page cache alone hides."""
    t0 = time.perf_counter()
    stage.start_series(start)
    for frame in frames:
        stage.process(frame)
    stage.finish(EndOfSeries(1, frames_sent=len(frames)))
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb+") as written:
                os.fsync(written.fileno())
    return time.perf_counter() - t0


def bench_red(size: BenchSize) -> dict[str, Measured]:
    """Raw writer and policy stage interleaved, each round into fresh folders removed after it."""
    start, frames = series_frames(size.red_frames)
    stats: list[ReductionStats] = []

    def raw(root: Path) -> float:
        return _seconds(NxmxWriter(SavingParams(directory=root / "raw", data_roots=(root,))), start, frames, root)

    def red(root: Path) -> float:
        stage = DataPolicyStage(SavingParams(directory=root / "run", data_roots=(root,)), POLICY)
        elapsed = _seconds(stage, start, frames, root)
        stage.finalise([])
        stats.append(stage.stats)
        return elapsed

    for warm_up in (raw, red):  # the rounding kernels load from numba's cache on first use: in no round
        _in_fresh_folder(warm_up)
    raw_s, red_s = interleaved_times([lambda: _in_fresh_folder(raw), lambda: _in_fresh_folder(red)], size.rounds)
    results: dict[str, Measured] = {
        "red.fps": rate(len(frames), red_s), "red.raw_writer_fps": rate(len(frames), raw_s),
        "red.fps_vs_raw_writer": ratio(raw_s, red_s), "red.reduction_ratio": stats[-1].reduction_ratio,
        "red.frames_kept": float(stats[-1].frames_kept)}
    return {**results, **_realistic(size.red_realistic_frames)}


def _in_fresh_folder(measure: Callable[[Path], float]) -> float:
    with tempfile.TemporaryDirectory(prefix="detpipe-red-bench-") as tmp:
        return measure(Path(tmp))


def _realistic(n_frames: int) -> dict[str, float]:
    """The policy on triaged ``realistic`` frames, and the share of the true Bragg signal it keeps."""
    from detpipe.simulators import SfxFrames
    from detpipe.simulators.sfx_difficulty import preset

    sfx = SfxFrames("4M", seed=8, hit_fraction=0.3, difficulty=preset("realistic"))
    params = TriageParams()
    finder = HitFinder(eiger_triage_geometry(sfx.shape, beam_center_x_px=sfx.beam_center[0],
                                             beam_center_y_px=sfx.beam_center[1], pixel_mask=sfx.pixel_mask,
                                             params=params), params)
    background = sfx.mean_background()
    frames, raw_signal = [], 0.0
    for i in range(n_frames):
        pixels = sfx.pixels(i)
        triage = finder.triage(pixels.astype(np.float32), (pixels != sfx.masked_value).astype(np.uint8))
        frames.append(Frame(1, i, sfx.shape, sfx.dtype, Encoding.BSLZ4, bslz4_chunk(pixels), 0.0, triage=triage))
        raw_signal += _bragg_signal(pixels, sfx.truth(i).peaks, background)
    config = DetectorConfig(shape=sfx.shape, dtype=np.dtype(sfx.dtype), nimages=n_frames)
    start = SeriesStart(1, config=config, pixel_mask=sfx.pixel_mask)
    with tempfile.TemporaryDirectory(prefix="detpipe-red-realistic-") as tmp:
        root = Path(tmp)
        stage = DataPolicyStage(SavingParams(directory=root / "run", data_roots=(root,)), POLICY)
        _seconds(stage, start, frames, root)
        stage.finalise([])
        with h5py.File(stage.run.red_master, "r") as red:
            kept = red["/entry/process_02/kept_frames"][()]
            images = red["/entry/data/data"]
            red_signal = sum(_bragg_signal(images[row], sfx.truth(int(index)).peaks, background)
                             for row, index in enumerate(kept))
        return {"red.realistic_reduction_ratio": stage.stats.reduction_ratio,
                "red.realistic_bragg_kept": red_signal / raw_signal if raw_signal else 1.0}


def _bragg_signal(image: np.ndarray, peaks: tuple, background: np.ndarray) -> float:
    """Σ over the peaks of the counts above the mean background in a window around each."""
    total = 0.0
    for peak in peaks:
        row, col = int(round(peak.y)), int(round(peak.x))
        window = np.s_[row - BRAGG_WINDOW_PX:row + BRAGG_WINDOW_PX + 1, col - BRAGG_WINDOW_PX:col + BRAGG_WINDOW_PX + 1]
        total += float(image[window].astype(np.float64).sum() - background[window].astype(np.float64).sum())
    return total

"""A RED run through the real stages, as the devices wire them: data policy stage → raw NxmxWriter in its own
thread, RED files written by the stage, then ``finalise`` once the raw files are closed.

Frames come from ``SfxFrames`` (Eiger 4M) and carry triage results made from its ground truth, so tests of the
policy do not depend on peak finding (``test_triage_accuracy`` covers that).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detpipe.pipeline.chunk_framing import bslz4_chunk
from detpipe.pipeline.data_policy_stage import RAW_SUBDIRECTORY, DataPolicyStage
from detpipe.pipeline.frame import Encoding, Frame
from detpipe.pipeline.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.nxmx_writer import NxmxWriter
from detpipe.pipeline.peak_list import FrameTriage, PeakList
from detpipe.pipeline.reduction_params import ReductionParams
from detpipe.pipeline.saving_target import SavingParams, SeriesFiles
from detpipe.pipeline.series import DetectorConfig, EndOfSeries, SeriesStart
from detpipe.pipeline.stage import Item
from detpipe.pipeline.stage_runner import StageRunner
from detpipe.pipeline.triage_params import TriageParams
from detpipe.simulators import SfxFrames

SERIES_ID = 3
FRAMES_PER_FILE = 40


@dataclass(frozen=True)
class SeriesFrames:
    """Encoded frames of one simulated series with their truth-made triage, generated once per test module."""

    sfx: SfxFrames
    frames: tuple[Frame, ...]

    @property
    def true_hits(self) -> list[int]:
        return [f.index for f in self.frames if self.sfx.truth(f.index).is_hit]


def truth_triage(sfx: SfxFrames, index: int) -> FrameTriage:
    truth = sfx.truth(index)
    fs = np.array([p.x for p in truth.peaks], np.float32)
    ss = np.array([p.y for p in truth.peaks], np.float32)
    intensity = np.array([p.intensity for p in truth.peaks], np.float32)
    ones = np.ones_like(fs)
    peaks = PeakList(fs=fs, ss=ss, intensity=intensity, snr=ones, npix=ones, max_value=ones)
    return FrameTriage(n_peaks=len(fs), peaks=peaks, lit_pixels=int(1e5), is_hit=truth.is_hit)


def series_frames(n: int, *, seed: int, hit_fraction: float) -> SeriesFrames:
    sfx = SfxFrames("4M", seed=seed, hit_fraction=hit_fraction)
    frames = tuple(
        Frame(SERIES_ID, i, sfx.shape, sfx.dtype, Encoding.BSLZ4, bslz4_chunk(sfx.pixels(i)), 0.0,
              triage=truth_triage(sfx, i))
        for i in range(n))
    return SeriesFrames(sfx, frames)


def series_start(series: SeriesFrames) -> SeriesStart:
    sfx = series.sfx
    height, width = sfx.shape
    config = DetectorConfig(shape=sfx.shape, dtype=sfx.dtype, nimages=len(series.frames), count_time_s=0.002,
                            frame_time_s=0.002, photon_energy_ev=12400.0, beam_center_x_px=width / 2,
                            beam_center_y_px=height / 2, detector_distance_m=0.1,
                            description="Dectris EIGER2 Si 4M", saturation_value=sfx.saturation_value)
    return SeriesStart(SERIES_ID, config=config, pixel_mask=sfx.pixel_mask, triage=TriageParams())


def online_run(run_directory: Path, series: SeriesFrames, params: ReductionParams) -> tuple[DataPolicyStage, Path]:
    """Runs the series through the policy stage and a raw writer thread; returns the stage and the manifest."""
    saving = SavingParams(directory=run_directory, frames_per_file=FRAMES_PER_FILE,
                          data_roots=(run_directory.parent,))
    raw_inbox: FrameQueue[Item] = FrameQueue(16, FullPolicy.BLOCK)
    raw_writer = NxmxWriter(saving)
    runner = StageRunner("raw writer", raw_writer, raw_inbox)
    stage = DataPolicyStage(saving, params, raw_outbox=raw_inbox)
    raw_dir = run_directory / RAW_SUBDIRECTORY
    if params.policy.keeps_raw:
        raw_writer.prepare(SERIES_ID, directory=raw_dir)
    runner.start()
    try:
        run = stage.prepare(SERIES_ID)
        stage.start_series(series_start(series))
        for frame in series.frames:
            stage.process(frame)
        stage.finish(EndOfSeries(SERIES_ID, frames_sent=len(series.frames)))
        if params.policy.keeps_raw:
            assert runner.series_done.wait(60), "raw writer did not finish"
        assert runner.failure is None, runner.failure
    finally:
        runner.close()
    raw = SeriesFiles(raw_dir, run.stem)
    raw_files = raw.existing() if params.policy.keeps_raw else []
    manifest = stage.finalise(raw_files, raw_master=raw.master if raw_files else None)
    return stage, manifest

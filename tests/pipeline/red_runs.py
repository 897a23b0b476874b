"""A RED run through the real stages, as the devices wire them: data policy stage → raw writer (NxmxWriter or
ExdfWriter) in its own thread, RED files written by the stage, then ``finalise`` once the raw files are closed.

Frames come from ``SfxFrames`` (Eiger 4M) and carry triage results made from its ground truth, so tests of the
policy do not depend on peak finding (``triage/test_accuracy.py`` covers that).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from detpipe.pipeline.core.chunk_framing import bslz4_chunk
from detpipe.pipeline.core.errors import FrameRejected
from detpipe.pipeline.core.frame import Encoding, Frame
from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.core.peak_list import FrameTriage, PeakList
from detpipe.pipeline.core.saving_target import SavingParams
from detpipe.pipeline.core.series import DetectorConfig, EndOfSeries, SeriesStart
from detpipe.pipeline.core.stage import Item
from detpipe.pipeline.core.stage_runner import StageRunner
from detpipe.pipeline.core.train import MODULE_SHAPE, Product, Train
from detpipe.pipeline.core.triage_params import TriageParams
from detpipe.pipeline.policy.data_policy_stage import DataPolicyStage
from detpipe.pipeline.policy.reduction_params import ReductionParams
from detpipe.pipeline.policy.run_layout import RAW_SUBDIRECTORY
from detpipe.pipeline.writers.exdf_writer import ExdfWriter
from detpipe.pipeline.writers.nxmx_writer import NxmxWriter
from detpipe.simulators import AgipdSimulator, SfxFrames
from detpipe.simulators.agipd_scene import AgipdTrainTruth

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
    """Runs the Eiger series through the policy stage and a raw writer thread; returns the stage and the manifest."""
    saving = SavingParams(directory=run_directory, frames_per_file=FRAMES_PER_FILE,
                          data_roots=(run_directory.parent,))
    return run_through_stage(NxmxWriter(saving), SERIES_ID, [series_start(series), *series.frames], params)


def files_below(directory: Path) -> dict[Path, bytes]:
    """Every file below ``directory`` by relative path, with its bytes: two reductions compared byte for byte."""
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def reduce_twice_holding_h5py_objects(reduce: Callable[[Path], object], out: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> tuple[dict[Path, bytes], dict[Path, bytes]]:
    """``reduce(out)`` twice into the same path (the files name their own path), the second time with every h5py
    group and dataset kept referenced, so h5py closes it with its file rather than when the code drops it: what
    a sampling profiler (every Dask worker runs one) does to the objects in the frames it samples. Returns the
    files of both runs (``files_below``); the first run's are moved aside to ``out`` + ``.freed``."""
    reduce(out)
    freed = out.with_name(out.name + ".freed")
    out.rename(freed)
    held: list[h5py.HLObject] = []
    for method in ("create_dataset", "create_group", "__getitem__"):
        def holding(self: h5py.Group, *args: object, _original=getattr(h5py.Group, method), **kwargs: object):
            held.append(_original(self, *args, **kwargs))
            return held[-1]
        monkeypatch.setattr(h5py.Group, method, holding)
    reduce(out)
    assert len(held) > 100, "the reduction opened too few h5py objects to test anything"
    return files_below(freed), files_below(out)


def run_through_stage(raw_writer: NxmxWriter | ExdfWriter, series_id: int, items: list[Item],
                      params: ReductionParams) -> tuple[DataPolicyStage, Path]:
    """``items`` (a start, frames or trains) through the stage into ``raw_writer``'s saving directory."""
    saving = raw_writer.params
    raw_inbox: FrameQueue[Item] = FrameQueue(16, FullPolicy.BLOCK)
    runner = StageRunner("raw writer", raw_writer, raw_inbox)
    stage = DataPolicyStage(saving, params, raw_outbox=raw_inbox)
    exdf = raw_writer if isinstance(raw_writer, ExdfWriter) else None
    if params.policy.keeps_raw:
        raw_writer.prepare(series_id, directory=saving.directory / RAW_SUBDIRECTORY)
    runner.start()
    try:
        run = stage.prepare(series_id, exdf=exdf)
        start, *data = items
        assert isinstance(start, SeriesStart)
        stage.start_series(start)
        for item in data:
            assert isinstance(item, (Frame, Train))
            try:
                stage.process(item)
            except FrameRejected as err:  # counted as the stage runner counts it
                stage.stats.rejected[err.reason] += 1
        stage.finish(EndOfSeries(series_id, frames_sent=len(data)))
        if params.policy.keeps_raw:
            assert runner.series_done.wait(60), "raw writer did not finish"
        assert runner.failure is None, runner.failure
    finally:
        runner.close()
    raw_files = run.layout.raw_paths() if params.policy.keeps_raw else []
    manifest = stage.finalise(raw_files, raw_master=run.layout.raw_master if raw_files else None)
    return stage, manifest


AGIPD_RUN = 7
UNLIT_PIXELS, LIT_PIXELS = 0, 50_000  # lit_pixels of truth-made triage: far on either side of lit_cell_min_pixels


def agipd_truth_triage(truth: AgipdTrainTruth, frame: int) -> FrameTriage:
    """The triage a perfect hit finder gives AGIPD frame ``frame``: the true peaks (stacked-frame ss), hit flag
    and a lit-pixel count that separates lit from unlit cells."""
    peaks = truth.peaks_in(frame)
    fs = np.array([p.fs for p in peaks], np.float32)
    ss = np.array([p.module * MODULE_SHAPE[0] + p.ss for p in peaks], np.float32)
    intensity = np.array([p.intensity for p in peaks], np.float32)
    ones = np.ones_like(fs)
    return FrameTriage(n_peaks=len(peaks), peaks=PeakList(fs, ss, intensity, ones, ones, ones),
                       lit_pixels=LIT_PIXELS if truth.lit[frame] else UNLIT_PIXELS, is_hit=bool(truth.hits[frame]))


def agipd_run_items(simulator: AgipdSimulator, trains: int, *, triaged: bool = True) -> list[Item]:
    """A run of ``trains`` simulator trains as the receiver and hit finder hand them on (start, trains)."""
    start = SeriesStart(AGIPD_RUN, config=None, received_s=1.7e9, triage=TriageParams() if triaged else None)
    items: list[Item] = [start]
    for k in range(trains):
        arrays, truth = simulator.train(k), simulator.truth.train(k)
        triage = tuple(agipd_truth_triage(truth, f) for f in range(arrays.cell_ids.size)) if triaged else None
        items.append(Train(AGIPD_RUN, k, arrays.train_id, Product(arrays.product.value), np.array(arrays.data),
                           np.array(arrays.cell_ids), np.array(arrays.pulse_ids), arrays.modules_present,
                           timestamp_s=1.7e9 + 0.1 * k, received_s=0.0,
                           gain=None if arrays.gain is None else np.array(arrays.gain),
                           mask=None if arrays.mask is None else np.array(arrays.mask), triage=triage))
    return items

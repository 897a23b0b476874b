"""The AGIPD correction stage gives back the photons a synthetic raw train was built from (docs/agipd_constants.md)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from detpipe.pipeline.agipd.constants import AgipdConstants, load_constants
from detpipe.pipeline.agipd.correction import MASK_NOT_FINITE, MASK_UNKNOWN_CELL, AgipdCorrection
from detpipe.pipeline.core.errors import ConfigError, FrameRejected
from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.core.series import EndOfSeries, SeriesStart
from detpipe.pipeline.core.stage_runner import StageRunner
from detpipe.pipeline.core.train import Product, Train

MODULES, SS, FS = 16, 512, 128
CELL_IDS = np.array([1, 3, 5, 7], np.uint16)  # rows 0..3 of offset_cell


@dataclass(frozen=True)
class Scene:
    """Constants, the photons and gain stages the raw train encodes, and the train itself."""

    constants: AgipdConstants
    photons: np.ndarray  # float32 (frames, 16, 512, 128)
    stages: np.ndarray  # uint8 (frames, 16, 512, 128)
    train: Train


def make_constants(rng: np.random.Generator) -> AgipdConstants:
    """Integer offsets and power-of-two gains, so the expected photons are exact in float32."""
    t0 = rng.integers(5000, 6000, (MODULES, SS, FS)).astype(np.float32)
    return AgipdConstants(
        offset_pixel=rng.integers(1000, 2000, (MODULES, 3, SS, FS)).astype(np.float32),
        offset_cell=rng.integers(-50, 50, (MODULES, CELL_IDS.size, 3)).astype(np.float32),
        relgain=(2.0 ** -rng.integers(1, 4, (MODULES, 3, SS, FS))).astype(np.float32),
        threshold=np.stack([t0, t0 + 3000], axis=1),
        cell_ids=CELL_IDS,
    )


def make_scene(cells: list[int], *, seed: int = 0, missing: tuple[int, ...] = ()) -> Scene:
    rng = np.random.default_rng(seed)
    c = make_constants(rng)
    frames = len(cells)
    shape = (frames, MODULES, SS, FS)
    stages = rng.integers(0, 3, shape).astype(np.uint8)
    photons = rng.integers(0, 60, shape).astype(np.float32)
    m = np.arange(MODULES)[None, :, None, None]
    y, x = np.arange(SS)[None, None, :, None], np.arange(FS)[None, None, None, :]
    rows = c.cell_rows(np.array(cells))
    cell_shift = np.where(rows[:, None, None, None] >= 0, c.offset_cell[m, rows[:, None, None, None], stages], 0)
    offset = c.offset_pixel[m, stages, y, x] + cell_shift
    analog = offset + photons / c.relgain[m, stages, y, x]
    t0, t1 = c.threshold[:, 0][None], c.threshold[:, 1][None]
    digital = np.where(stages == 0, t0 - 100, np.where(stages == 1, t0 + 100, t1 + 100))
    raw = np.stack([analog, digital], axis=2).astype(np.uint16)
    for array in (raw, photons, stages):
        array[:, list(missing)] = 0
    train = Train(series_id=1, index=0, train_id=1234, product=Product.RAW, data=raw,
                  cell_ids=np.array(cells, np.uint16), pulse_ids=np.arange(frames, dtype=np.uint64),
                  modules_present=tuple(m not in missing for m in range(MODULES)), timestamp_s=1.0, received_s=2.0)
    return Scene(c, photons, stages, train)


@pytest.fixture(scope="module")
def scene() -> Scene:
    return make_scene([3, 7, 1])


@pytest.fixture(scope="module")
def constants_file(scene: Scene, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("constants") / "agipd_constants.h5"
    scene.constants.write(path)
    return path


def test_raw_train_is_corrected_back_to_its_photons(scene: Scene, constants_file: Path) -> None:
    stage = AgipdCorrection(load_constants(constants_file))
    corrected = stage.process(scene.train)
    assert corrected.product is Product.CORRECTED and corrected.data.dtype == np.float32
    np.testing.assert_array_equal(corrected.data, scene.photons)
    np.testing.assert_array_equal(corrected.gain, scene.stages)
    assert corrected.gain.dtype == np.uint8 and corrected.mask.dtype == np.uint32 and not corrected.mask.any()
    assert (corrected.train_id, corrected.series_id, corrected.index) == (1234, 1, 0)
    np.testing.assert_array_equal(corrected.cell_ids, scene.train.cell_ids)
    assert stage.stats.processed == 1 and stage.stats.frames_unknown_cell == 0


def test_the_raw_train_itself_is_left_untouched(scene: Scene, constants_file: Path) -> None:
    data = scene.train.data.copy()
    data.flags.writeable = False  # as received: a view on the ZMQ buffer
    raw = replace(scene.train, data=data)
    AgipdCorrection(constants_file).process(raw)
    assert raw.product is Product.RAW and raw.gain is None
    np.testing.assert_array_equal(raw.data, scene.train.data)


def test_unknown_cell_is_masked_and_corrected_with_the_pixel_offset_alone(constants_file: Path) -> None:
    scene = make_scene([3, 2, 5])  # cell 2 is not in the constants
    stage = AgipdCorrection(constants_file)
    corrected = stage.process(scene.train)
    assert (corrected.mask[1] == MASK_UNKNOWN_CELL).all()
    assert not corrected.mask[[0, 2]].any()
    np.testing.assert_array_equal(corrected.data, scene.photons)  # the scene has no cell shift for cell 2
    assert stage.stats.frames_unknown_cell == 1 and not stage.stats.rejected


def test_non_finite_result_is_masked(scene: Scene) -> None:
    relgain = scene.constants.relgain.copy()
    relgain[4, :, 10, 20] = np.nan
    stage = AgipdCorrection(replace(scene.constants, relgain=relgain))
    corrected = stage.process(scene.train)
    assert (corrected.mask[:, 4, 10, 20] == MASK_NOT_FINITE).all()
    assert np.count_nonzero(corrected.mask) == 3 and stage.stats.pixels_not_finite == 3


def test_missing_module_stays_zero(scene: Scene) -> None:
    scene = make_scene([1, 5], missing=(6,))
    corrected = AgipdCorrection(scene.constants).process(scene.train)
    assert not corrected.data[:, 6].any() and corrected.modules_present[6] is False
    np.testing.assert_array_equal(corrected.data, scene.photons)


def test_corrected_trains_pass_through_unchanged(scene: Scene) -> None:
    stage = AgipdCorrection(scene.constants)
    corrected = stage.process(scene.train)
    assert stage.process(corrected) is corrected


def test_raw_train_of_the_wrong_shape_is_rejected(scene: Scene) -> None:
    bad = replace(scene.train, data=scene.train.data[:, :8])
    with pytest.raises(FrameRejected, match="wrong_shape"):
        AgipdCorrection(scene.constants).process(bad)


def test_stage_runs_under_the_generic_stage_runner(scene: Scene) -> None:
    inbox: FrameQueue = FrameQueue(4, FullPolicy.BLOCK)
    outbox: FrameQueue = FrameQueue(4, FullPolicy.BLOCK)
    runner = StageRunner("correction", AgipdCorrection(scene.constants), inbox, outbox)
    runner.start()
    try:
        for item in (SeriesStart(series_id=1), scene.train, EndOfSeries(1)):
            inbox.put(item)
        start, corrected, end = (outbox.get(timeout_s=20) for _ in range(3))
    finally:
        runner.close()
    assert isinstance(start, SeriesStart) and isinstance(end, EndOfSeries)
    np.testing.assert_array_equal(corrected.data, scene.photons)
    assert runner.failure is None and runner.stage.stats.time_mean_ms > 0


def test_bad_constants_file_lists_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f["offset_pixel"] = np.zeros((16, 3, 512, 64), np.float32)
        f["relgain"] = np.zeros((16, 3, 512, 128), np.float32)
        f["threshold"] = np.zeros((16, 2, 512, 128), np.float32)
        f["cell_ids"] = np.array([1, 1], np.uint16)
    with pytest.raises(ConfigError) as raised:
        load_constants(path)
    problems = " | ".join(raised.value.problems)
    assert "/offset_cell is missing" in problems and "/offset_pixel has shape" in problems
    assert "lists a cellId twice" in problems and len(raised.value.problems) == 3

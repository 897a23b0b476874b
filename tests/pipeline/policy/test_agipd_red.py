"""AGIPD RED runs through the data policy stage, against the simulator's ground truth: the cells kept are the
true hits plus the sampled misses of lit cells, the files are an EuXFEL run extra-data reads with the original
ids, the REDU00 file lists every decision, and the manifest and provenance say what is on disk."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers filter 32008 for reading back
import numpy as np
import pytest
from extra_data import H5File
from extra_data.components import AGIPD1M

from detpipe.pipeline.core.errors import ConfigError
from detpipe.pipeline.core.saving_target import SavingParams
from detpipe.pipeline.core.train import Product, Train
from detpipe.pipeline.exdf.module_file import module_file_name
from detpipe.pipeline.exdf.nexus_master import master_file_name
from detpipe.pipeline.policy.data_policy_stage import DataPolicyStage
from detpipe.pipeline.policy.event_selection import KeepReason, frame_key, in_miss_sample
from detpipe.pipeline.policy.offline_reduction import reduce_series
from detpipe.pipeline.policy.precision_rounding import round_precision
from detpipe.pipeline.policy.provenance import read_reduction_config
from detpipe.pipeline.policy.redu_flags_file import redu_file_name, redu_source
from detpipe.pipeline.policy.reduction_params import Policy, ReductionParams, Roi
from detpipe.pipeline.writers.exdf_writer import ExdfWriter
from detpipe.simulators import AgipdSimulator
from tests.pipeline.red_runs import AGIPD_RUN, agipd_run_items, run_through_stage
from tests.pipeline.writers.test_exdf_writer import open_run

TRAINS, CELLS = 4, 24
KEPT_MODULES = (0, 5, 15)
PARAMS = ReductionParams(policy=Policy.RAW_RED, hits_only=True, miss_fraction=0.2, miss_seed=4,
                         drop_unlit_cells=True, modules=KEPT_MODULES, rounding_step=0.5)


@pytest.fixture(scope="module")
def items() -> list:
    simulator = AgipdSimulator(product="corrected", cells=CELLS, seed=21, paced=False, hit_fraction=0.25)
    try:
        return agipd_run_items(simulator, TRAINS)
    finally:
        simulator.stop()


def exdf_writer(run_directory: Path) -> ExdfWriter:
    saving = SavingParams(directory=run_directory, data_roots=(run_directory.parent,))
    return ExdfWriter(saving, trains_per_sequence=3, compression_threads=2)


@pytest.fixture(scope="module")
def red_run(items, tmp_path_factory) -> tuple[DataPolicyStage, Path]:
    run_directory = tmp_path_factory.mktemp("agipd") / "run"
    return run_through_stage(exdf_writer(run_directory), AGIPD_RUN, items, PARAMS)


def expected_reasons(train: Train) -> list[KeepReason]:
    """The decisions from the truth, independently of the stage: unlit cells out, hits in, misses sampled."""
    reasons = []
    for k, triage in enumerate(train.triage or ()):
        assert triage is not None
        if triage.lit_pixels < PARAMS.lit_cell_min_pixels:
            reasons.append(KeepReason.DROPPED_UNLIT)
        elif triage.is_hit:
            reasons.append(KeepReason.HIT)
        elif in_miss_sample(frame_key(index=0, train_id=train.train_id, cell_id=int(train.cell_ids[k])),
                            seed=PARAMS.miss_seed, fraction=PARAMS.miss_fraction):
            reasons.append(KeepReason.SAMPLED_MISS)
        else:
            reasons.append(KeepReason.DROPPED_MISS)
    return reasons


def red_directory(stage: DataPolicyStage) -> Path:
    assert stage.run is not None
    return stage.run.red_master.parent


def kept_cells(train: Train) -> list[int]:
    return [k for k, reason in enumerate(expected_reasons(train)) if reason.kept]


def test_red_keeps_every_true_hit_and_the_sampled_misses_with_their_ids(items, red_run):
    stage, _ = red_run
    trains = items[1:]
    reasons = [r for t in trains for r in expected_reasons(t)]
    assert reasons.count(KeepReason.HIT) >= 5 and reasons.count(KeepReason.DROPPED_UNLIT) >= 5
    assert stage.stats.kept == {r: reasons.count(r) for r in set(reasons)}
    kept = [(t.train_id, int(t.cell_ids[k])) for t in trains for k in kept_cells(t)]
    detector = AGIPD1M(open_run(red_directory(stage)), raw=False, modules=list(KEPT_MODULES))
    train_ids = detector.get_array("image.trainId", unstack_pulses=False).values[0]
    cell_ids = detector.get_array("image.cellId", unstack_pulses=False).values[0]
    assert list(zip(train_ids.tolist(), cell_ids.tolist())) == kept
    assert stage.run is not None
    assert stage.run.kept_frames == [frame_key(index=0, train_id=t, cell_id=c) for t, c in kept]


def test_red_holds_only_the_kept_modules_with_half_photon_rounded_pixels(items, red_run):
    stage, _ = red_run
    directory = red_directory(stage)
    names = {p.name for p in directory.iterdir()}
    for module in range(16):
        assert (module_file_name(Product.CORRECTED, AGIPD_RUN, module, 0) in names) == (module in KEPT_MODULES)
    raw = np.concatenate([t.data[kept_cells(t)][:, list(KEPT_MODULES)] for t in items[1:]])
    detector = AGIPD1M(open_run(directory), raw=False, modules=list(KEPT_MODULES))
    stored = np.moveaxis(detector.get_array("image.data", unstack_pulses=False).values, 0, 1)
    np.testing.assert_array_equal(stored, round_precision(raw, mantissa_bits=23, step_exponent=-1))
    assert 0 < np.abs(stored - raw).max() <= 0.25


def test_redu00_lists_every_cell_with_its_decision(items, red_run):
    stage, _ = red_run
    trains = items[1:]
    path = red_directory(stage) / redu_file_name(Product.CORRECTED, AGIPD_RUN)
    with H5File(str(path)) as handle:
        source = handle[redu_source("SPB_DET_AGIPD1M-1")]
        assert list(handle.train_ids) == [t.train_id for t in trains]
        reasons = np.concatenate([np.asarray(expected_reasons(t), np.int8) for t in trains])
        np.testing.assert_array_equal(source["data.keepReason"].ndarray(), reasons)
        np.testing.assert_array_equal(source["data.hitFlag"].ndarray(), reasons == KeepReason.HIT)
        np.testing.assert_array_equal(source["data.missFlag"].ndarray(), reasons == KeepReason.SAMPLED_MISS)
        np.testing.assert_array_equal(source["data.dataFlag"].ndarray(),
                                      np.isin(reasons, [KeepReason.HIT, KeepReason.SAMPLED_MISS]))
        np.testing.assert_array_equal(source["data.cellId"].ndarray(), np.concatenate([t.cell_ids for t in trains]))


def test_manifest_provenance_and_retention_agree_with_the_disk(red_run):
    stage, manifest = red_run
    run = stage.run
    assert run is not None and manifest == run.run_directory / f"r{AGIPD_RUN:04d}_manifest.json"
    document = json.loads(manifest.read_text())
    files = {f["path"]: f for f in document["files"]}
    on_disk = [*run.layout.raw_paths(), *run.layout.red_paths()]
    assert sorted(files) == sorted(str(p.relative_to(run.run_directory)) for p in on_disk)
    for path in on_disk:
        assert files[str(path.relative_to(run.run_directory))]["size"] == path.stat().st_size
    assert document["DataPolicy_frames_in"] == TRAINS * CELLS
    assert document["DataPolicy_frames_kept"] == len(run.kept_frames)
    params, triage = read_reduction_config(run.red_master)
    assert params == PARAMS and triage is not None
    with h5py.File(run.red_master, "r") as handle:
        process = handle["/entry/process_02"]
        assert process["raw_master"][()].decode() == f"../../raw/r{AGIPD_RUN:04d}/{master_file_name(AGIPD_RUN)}"
        assert list(process["raw_data/file_name"].asstr()[()]) == [
            str(p.relative_to(run.run_directory)) for p in run.layout.raw_paths()]
        assert process["metrics/rms_error_photons"][()] > 0
    with h5py.File(run.layout.raw_master, "r") as handle:
        assert handle["/entry/data_policy/raw_retention_days"][()] == PARAMS.raw_retention_days


@pytest.mark.parametrize("change, message", [
    ({"rois": (Roi(0, 0, 10, 10),)}, "ROIs apply to Eiger"),
    ({"binning": 2}, "binning applies to Eiger"),
    ({"sparse": True}, "sparse frames apply to Eiger"),
    ({"modules": (16,)}, "module 16 does not exist"),
])
def test_reductions_that_do_not_apply_to_agipd_are_refused_at_prepare(tmp_path, change, message):
    writer = exdf_writer(tmp_path / "run")
    stage = DataPolicyStage(writer.params, dataclasses.replace(PARAMS, **change))
    with pytest.raises(ConfigError, match=message):
        stage.prepare(AGIPD_RUN, exdf=writer)
    assert not (tmp_path / "run" / "red").exists()


def test_rounding_a_raw_adu_train_is_rejected_with_its_reason_and_raw_still_written(tmp_path):
    simulator = AgipdSimulator(product="raw", cells=8, seed=3, paced=False, hit_fraction=0.5)
    try:
        raw_items = agipd_run_items(simulator, 2)
    finally:
        simulator.stop()
    stage, _ = run_through_stage(exdf_writer(tmp_path / "run"), AGIPD_RUN, raw_items, PARAMS)
    assert stage.stats.rejected == {"rounding_needs_photons": 2}
    assert stage.run is not None and stage.run.kept_frames == []
    assert len(stage.run.layout.raw_paths()) == 1 + 16  # the raw master and one sequence of 16 modules


def module_chunks(directory: Path) -> dict[str, list[bytes]]:
    """Every stored pixel chunk of every RED module file, by file name."""
    chunks = {}
    for path in sorted(directory.glob("*-AGIPD*-S*.h5")):
        with h5py.File(path, "r") as handle:
            source = next(iter(handle["INSTRUMENT/SPB_DET_AGIPD1M-1/CORR"].values()))
            for key, dataset in source["image"].items():
                if dataset.ndim == 3:
                    chunks[f"{path.name}:{key}"] = [dataset.id.read_direct_chunk((k, 0, 0))[1]
                                                    for k in range(dataset.shape[0])]
    return chunks


def test_offline_reduction_of_the_raw_run_gives_byte_identical_red_data(red_run, tmp_path):
    stage, _ = red_run
    assert stage.run is not None
    params, _ = read_reduction_config(stage.run.red_master)
    manifest = reduce_series(stage.run.layout.raw_master.parent, params, tmp_path / "offline")
    offline = tmp_path / "offline" / "red" / f"r{AGIPD_RUN:04d}"
    online_chunks, offline_chunks = module_chunks(red_directory(stage)), module_chunks(offline)
    assert len(online_chunks) == 3 * len(KEPT_MODULES) * 2  # data, gain, mask of 2 sequences (3 trains each)
    assert offline_chunks == online_chunks
    name = redu_file_name(Product.CORRECTED, AGIPD_RUN)
    with h5py.File(offline / name, "r") as off, h5py.File(red_directory(stage) / name, "r") as on:
        group = "INSTRUMENT/" + redu_source("SPB_DET_AGIPD1M-1") + "/data"
        for key in on[group]:
            np.testing.assert_array_equal(off[group][key][()], on[group][key][()])
    assert json.loads(manifest.read_text())["DataPolicy_frames_kept"] == len(stage.run.kept_frames)

"""The DataPolicy device in a real server between the hit finder and the writer, against the EIGER simulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import extra_data
import h5py
import numpy as np
import pytest
import tango

from detpipe.devices.agipd_detector import AgipdDetector
from detpipe.devices.cli.main import main as detpipe_main
from detpipe.devices.data_policy import DataPolicy
from detpipe.devices.eiger_detector import EigerDetector
from detpipe.devices.hit_finder import HitFinder
from detpipe.devices.nexus_writer import NexusWriter
from detpipe.devices.state_wait import prepare
from detpipe.simulators import AgipdSimulator, EigerSimulator
from tests.device_servers import device_server
from tests.integration.test_agipd_slice import run
from tests.integration.test_eiger_slice import acquire, configure
from tests.integration.test_hit_finder_device import WORKERS_START_S, eiger_props
from tests.pipeline.core.test_settings_document import ALIAS_BOMB
from tests.pipeline.policy.test_agipd_red import module_chunks
from tests.pipeline.policy.test_data_policy_stage import red_chunks
from tests.waiting import wait_until

DETECTOR, HIT_FINDER, POLICY, WRITER = "test/detector/1", "test/hitfinder/1", "test/datapolicy/1", "test/writer/1"


@contextmanager
def policy_server(sim: EigerSimulator | AgipdSimulator, data_root: Path) -> Iterator[tuple[tango.DeviceProxy, ...]]:
    detector_class, detector_props = ((EigerDetector, eiger_props(sim)) if isinstance(sim, EigerSimulator) else
                                      (AgipdDetector, {"BridgeEndpoint": sim.endpoint, "StreamTimeout": 30.0}))
    devices = [
        {"class": detector_class, "devices": [{"name": DETECTOR, "properties": {
            "WriterDevice": WRITER, "HitFinderDevice": HIT_FINDER, "DataPolicyDevice": POLICY,
            **detector_props}}]},
        {"class": HitFinder, "devices": [{"name": HIT_FINDER, "properties": {"Workers": 2, "BypassFill": 100.0}}]},
        {"class": DataPolicy, "devices": [{"name": POLICY, "properties": {"WriterDevice": WRITER}}]},
        {"class": NexusWriter, "devices": [{"name": WRITER, "properties": {
            "DataRoots": [str(data_root)], "TrainsPerSequence": 8}}]},
    ]
    with device_server(devices, timeout_s=60) as ctx:
        detector, finder, policy, writer = (ctx.get_device(n) for n in (DETECTOR, HIT_FINDER, POLICY, WRITER))
        wait_until(finder.State, lambda s: s != tango.DevState.INIT, WORKERS_START_S, "HitFinder State")
        wait_until(detector.State, lambda s: s != tango.DevState.INIT, 30, "detector State")
        yield detector, policy, writer


def test_raw_plus_red_keeps_every_true_hit_and_offline_reduce_reproduces_the_red_data(
        eiger_sim: EigerSimulator, data_root: Path, tmp_path: Path) -> None:
    frames = 60
    with policy_server(eiger_sim, data_root) as (detector, policy, writer):
        configure(detector, writer, data_root, frames, frames_per_file=25)
        policy.policy = "raw+red"
        policy.LoadPolicy('{"hits_only": true, "miss_fraction": 0.05, "miss_seed": 3}')
        assert acquire(detector) == "Ready", detector.Status()
        truth_hits = [i for i in range(frames) if eiger_sim.frames.truth(i).is_hit]
        assert policy.frames_in == frames and policy.hits_kept == len(truth_hits)
        assert policy.frames_kept == policy.hits_kept + policy.misses_kept
        assert policy.State() == tango.DevState.ON, policy.Status()
        with pytest.raises(tango.DevFailed, match="unknown policy"):
            policy.LoadPolicy("policy: keep-everything")
        with pytest.raises(tango.DevFailed, match="aliases"):  # a YAML alias bomb costs nothing
            policy.LoadPolicy(ALIAS_BOMB)
        assert json.loads(policy.policy_config)["policy"] == "raw+red"
        reduction_ratio = policy.reduction_ratio
    run_directory = data_root
    manifests = list(run_directory.glob("*_manifest.json"))
    assert len(manifests) == 1
    document = json.loads(manifests[0].read_text())
    assert document["DataPolicy_hits_kept"] == len(truth_hits)
    assert document["DataPolicy_reduction_ratio"] == pytest.approx(reduction_ratio)
    for entry in document["files"]:
        assert (run_directory / entry["path"]).stat().st_size == entry["size"]
    raw_master = next((run_directory / "raw").glob("*_master.h5"))
    red_master = run_directory / "red" / raw_master.name
    with h5py.File(red_master) as red:
        kept = red["/entry/process_02/kept_frames"][()]
    assert set(truth_hits) <= set(kept.tolist())
    raw_chunks = red_chunks(raw_master)
    assert red_chunks(red_master) == [raw_chunks[i] for i in kept]

    out = tmp_path / "offline"
    assert detpipe_main(["reduce", str(raw_master), "--config-from", str(red_master), "-o", str(out)]) == 0
    assert red_chunks(out / "red" / red_master.name) == red_chunks(red_master)


def test_bad_policy_values_are_refused_with_the_reason_and_change_nothing(eiger_sim: EigerSimulator,
                                                                         data_root: Path) -> None:
    with policy_server(eiger_sim, data_root) as (detector, policy, writer):
        before = policy.policy_config
        for attribute, value, reason in (("rounding_step", 0.3, "power of two"), ("rois", "[[0, 0, -5, 10]]", "ROI"),
                                         ("rois", "[[1, 2]]", "x, y, width, height"), ("miss_fraction", 1.5, "above the maximum")):
            with pytest.raises(tango.DevFailed, match=reason):
                policy.write_attribute(attribute, value)
        with pytest.raises(tango.DevFailed, match="unknown data policy parameter"):
            policy.LoadPolicy('{"hits_only": true, "keep_everything": 1}')
        assert policy.policy_config == before

        configure(detector, writer, data_root, 5)
        policy.policy = "red"
        policy.modules = "[99]"
        with pytest.raises(tango.DevFailed, match="module 99"):
            detector.Prepare()
        policy.modules = "[]"
        prepare(detector)
        with pytest.raises(tango.DevFailed, match="cannot change the policy"):
            policy.policy = "raw"
        detector.Start()
        wait_until(lambda: detector.acq_status, lambda s: s != "Running", 60, "acq_status")
        assert policy.frames_in == 5 and not (data_root / "raw").exists()
        policy.policy = "raw"  # allowed again once the series is finalised


def test_agipd_raw_plus_red_keeps_the_true_hits_of_lit_cells_in_a_red_run_directory(data_root: Path,
                                                                                     tmp_path: Path) -> None:
    trains, cells = 4, 32
    with AgipdSimulator(cells=cells, product="corrected", paced=False, seed=11, hit_fraction=0.2) as sim:
        with policy_server(sim, data_root) as (detector, policy, writer):
            writer.saving_directory = str(data_root)
            policy.policy = "raw+red"
            policy.LoadPolicy('{"hits_only": true, "miss_fraction": 0.1, "drop_unlit_cells": true, '
                              '"modules": [0, 1, 2, 3], "rounding_step": 0.5, "binning": 2}')
            detector.run_number = 3
            with pytest.raises(tango.DevFailed, match="binning applies to Eiger"):
                detector.Prepare()
            assert not (data_root / "red").exists() and not (data_root / "raw").exists()
            policy.binning = 1
            assert run(detector, trains, run_number=3) == "Ready", detector.Status()
            truth = [sim.truth.train(k) for k in range(trains)]
            assert policy.frames_in == trains * cells
            assert policy.hits_kept == sum(int(t.hits.sum()) for t in truth) > 0
            assert policy.State() == tango.DevState.ON, policy.Status()
    run_layout = data_root / "red" / "r0003"
    with extra_data.H5File(str(run_layout / "CORR-R0003-REDU00-S00000.h5")) as flags:
        source = flags["SPB_DET_AGIPD1M-1/REDU/DETPIPE_HITFINDER:output"]
        hit_flag = source["data.hitFlag"].ndarray().astype(bool)
        reasons = source["data.keepReason"].ndarray()
    np.testing.assert_array_equal(hit_flag, np.concatenate([t.hits for t in truth]))
    np.testing.assert_array_equal(reasons == 5, ~np.concatenate([t.lit for t in truth]))  # 5: dropped, unlit
    detector_files = sorted(p.name for p in run_layout.glob("CORR-R0003-AGIPD*-S00000.h5"))
    assert detector_files == [f"CORR-R0003-AGIPD{m:02d}-S00000.h5" for m in range(4)]
    document = json.loads((data_root / "r0003_manifest.json").read_text())
    assert document["DataPolicy_hits_kept"] == int(hit_flag.sum())
    for entry in document["files"]:
        assert (data_root / entry["path"]).stat().st_size == entry["size"]
    assert len(list((data_root / "raw" / "r0003").glob("CORR-R0003-AGIPD*-S00000.h5"))) == 16

    out = tmp_path / "offline"
    red_master = run_layout / "AGIPD-R0003-master.h5"
    assert detpipe_main(["reduce", str(data_root / "raw" / "r0003"), "--config-from", str(red_master),
                         "-o", str(out)]) == 0
    assert module_chunks(out / "red" / "r0003") == module_chunks(run_layout)

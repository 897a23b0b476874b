"""The DataPolicy device in a real server between the hit finder and the writer, against the EIGER simulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import pytest
import tango
from tango.test_context import MultiDeviceTestContext

from detpipe.devices.cli import main as detpipe_main
from detpipe.devices.data_policy import DataPolicy
from detpipe.devices.eiger_detector import EigerDetector
from detpipe.devices.hit_finder import HitFinder
from detpipe.devices.nexus_writer import NexusWriter
from detpipe.simulators import EigerSimulator
from tests.integration.test_eiger_slice import acquire, configure
from tests.integration.test_hit_finder_device import WORKERS_START_S, eiger_props
from tests.pipeline.test_data_policy_stage import red_chunks
from tests.waiting import wait_until

DETECTOR, HIT_FINDER, POLICY, WRITER = "test/detector/1", "test/hitfinder/1", "test/datapolicy/1", "test/writer/1"


@contextmanager
def policy_server(sim: EigerSimulator, data_root: Path) -> Iterator[tuple[tango.DeviceProxy, ...]]:
    devices = [
        {"class": EigerDetector, "devices": [{"name": DETECTOR, "properties": {
            "WriterDevice": WRITER, "HitFinderDevice": HIT_FINDER, "DataPolicyDevice": POLICY,
            **eiger_props(sim)}}]},
        {"class": HitFinder, "devices": [{"name": HIT_FINDER, "properties": {"Workers": 2}}]},
        {"class": DataPolicy, "devices": [{"name": POLICY, "properties": {"WriterDevice": WRITER}}]},
        {"class": NexusWriter, "devices": [{"name": WRITER, "properties": {"DataRoots": [str(data_root)]}}]},
    ]
    with MultiDeviceTestContext(devices, process=True, host="127.0.0.1", timeout=60) as ctx:
        detector, finder, policy, writer = (ctx.get_device(n) for n in (DETECTOR, HIT_FINDER, POLICY, WRITER))
        for proxy in (detector, policy):
            proxy.set_timeout_millis(60000)
        wait_until(finder.State, lambda s: s != tango.DevState.INIT, WORKERS_START_S, "HitFinder State")
        yield detector, policy, writer


def test_raw_plus_red_keeps_every_true_hit_and_offline_reduce_reproduces_the_red_data(
        eiger_sim: EigerSimulator, data_root: Path, tmp_path: Path) -> None:
    frames = 60
    with policy_server(eiger_sim, data_root) as (detector, policy, writer):
        configure(detector, writer, data_root, frames, frames_per_file=25)
        policy.policy = 2  # raw+red
        policy.LoadPolicy('{"hits_only": true, "miss_fraction": 0.05, "miss_seed": 3}')
        assert acquire(detector) == "Ready", detector.Status()
        truth_hits = [i for i in range(frames) if eiger_sim.frames.truth(i).is_hit]
        assert policy.frames_in == frames and policy.hits_kept == len(truth_hits)
        assert policy.frames_kept == policy.hits_kept + policy.misses_kept
        assert policy.State() == tango.DevState.ON, policy.Status()
        with pytest.raises(tango.DevFailed, match="unknown policy"):
            policy.LoadPolicy("policy: keep-everything")
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
        policy.policy = 1  # red
        policy.modules = "[99]"
        with pytest.raises(tango.DevFailed, match="module 99"):
            detector.Prepare()
        policy.modules = "[]"
        detector.Prepare()
        with pytest.raises(tango.DevFailed, match="cannot change the policy"):
            policy.policy = 0
        detector.Start()
        wait_until(lambda: detector.acq_status, lambda s: s != "Running", 60, "acq_status")
        assert policy.frames_in == 5 and not (data_root / "raw").exists()
        policy.policy = 0  # allowed again once the series is finalised

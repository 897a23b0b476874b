"""DetpipeTwoDController in a measurement group: ct, ascan and timescan record h5file:// references that resolve,
through the analysis-side path prefix, to the frames the simulator sent."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - bitshuffle/LZ4 filters for reading
import numpy as np
import pytest

from tests.sardana.conftest import EIGER, POOL, SardanaBench

pytestmark = pytest.mark.integration

CHANNEL, MOTOR, MEASUREMENT_GROUP = "det2d", "mot01", "mg_det"
REFERENCE = re.compile(r"^h5file://(?P<path>/\S+)::(?P<dataset>/\S+)\[(?P<index>\d+)\]$")


def resolve(reference: str) -> np.ndarray:
    """The frame an ``h5file:///path::/dataset[index]`` reference names."""
    match = REFERENCE.match(reference)
    assert match is not None, reference
    with h5py.File(match["path"]) as f:
        return f[match["dataset"]][int(match["index"])]


@pytest.fixture(scope="module")
def analysis_root(bench: SardanaBench) -> Path:
    """The data root as an analysis machine mounts it (here: a symbolic link to it)."""
    link = bench.data_root.parent / "analysis"
    link.symlink_to(bench.data_root)
    return link


@pytest.fixture(scope="module")
def measurement_group(bench: SardanaBench, analysis_root: Path) -> Iterator[str]:
    """A dummy motor and the detector's 2D channel (value references on) in the active measurement group."""
    pool = bench.device(POOL)
    pool.CreateController(["Motor", "DummyMotorController.py", "DummyMotorController", "motctrl01"])
    pool.CreateElement(["Motor", "motctrl01", "1", MOTOR])
    pool.CreateController(["TwoDExpChannel", "DetpipeTwoDCtrl.py", "DetpipeTwoDController", "detpipectrl01",
                           "DeviceName", EIGER, "DetectorPathPrefix", str(bench.data_root),
                           "AnalysisPathPrefix", str(analysis_root)])
    pool.CreateElement(["TwoDExpChannel", "detpipectrl01", "1", CHANNEL])
    pool.CreateMeasurementGroup([MEASUREMENT_GROUP, CHANNEL])
    motor = bench.device("motor/motctrl01/1")
    motor.write_attributes([("Acceleration", 0.01), ("Deceleration", 0.01), ("Velocity", 100.0)])
    bench.macros.run("senv", "ActiveMntGrp", MEASUREMENT_GROUP)
    bench.macros.run("set_meas_conf", "ValueRefEnabled", "True", CHANNEL)
    bench.macros.run("set_data_policy", "raw")
    yield MEASUREMENT_GROUP


def scan_references(bench: SardanaBench, *scan: str) -> list[str]:
    """Run a scan macro; the references its NeXus file stored for the 2D channel, one per point."""
    scan_file = bench.scan_dir / "scans.h5"
    before = set(h5py.File(scan_file).keys()) if scan_file.exists() else set()
    bench.macros.run(*scan)
    with h5py.File(scan_file) as f:
        (entry,) = set(f.keys()) - before
        return list(f[entry]["measurement"][CHANNEL].asstr()[()])


def test_ct_counts_one_frame_and_reports_its_reference(bench: SardanaBench, measurement_group: str,
                                                        analysis_root: Path) -> None:
    output = bench.macros.run("ct", "0.01").output
    (reference,) = re.findall(r"h5file://\S+", output)
    assert reference.startswith(f"h5file://{analysis_root}/raw/")
    np.testing.assert_array_equal(resolve(reference), bench.eiger_sim.frames.pixels(0))


def test_ascan_records_one_reference_per_point_to_the_frame_of_that_point(
        bench: SardanaBench, measurement_group: str, analysis_root: Path) -> None:
    references = scan_references(bench, "ascan", MOTOR, "0", "1", "4", "0.01")
    assert len(references) == 5
    assert len({REFERENCE.match(r)["path"] for r in references}) == 5  # one series, so one master, per point
    for reference in references:
        assert reference.startswith(f"h5file://{analysis_root}/raw/") and reference.endswith("[0]")
        np.testing.assert_array_equal(resolve(reference), bench.eiger_sim.frames.pixels(0))


def test_timescan_in_software_start_acquires_one_series_of_all_points(
        bench: SardanaBench, measurement_group: str) -> None:
    bench.macros.run("set_meas_conf", "Synchronization", "Start", CHANNEL)
    try:
        references = scan_references(bench, "timescan", "5", "0.01")
    finally:
        bench.macros.run("set_meas_conf", "Synchronization", "Trigger", CHANNEL)
    assert len({REFERENCE.match(r)["path"] for r in references}) == 1
    assert [int(REFERENCE.match(r)["index"]) for r in references] == list(range(5))
    for i, reference in enumerate(references):
        np.testing.assert_array_equal(resolve(reference), bench.eiger_sim.frames.pixels(i))


def test_ct_without_value_references_reads_the_pixels_back(bench: SardanaBench, measurement_group: str) -> None:
    bench.macros.run("set_meas_conf", "ValueRefEnabled", "False", CHANNEL)
    try:
        bench.macros.run("ct", "0.01")
        value = bench.device("expchan/detpipectrl01/1").Value
    finally:
        bench.macros.run("set_meas_conf", "ValueRefEnabled", "True", CHANNEL)
    np.testing.assert_array_equal(value, bench.eiger_sim.frames.pixels(0))


def test_counting_is_refused_while_the_data_policy_keeps_no_raw_frames(bench: SardanaBench,
                                                                       measurement_group: str) -> None:
    bench.macros.run("set_data_policy", "red")
    try:
        run = bench.macros.run("ct", "0.01", expect="exception")
    finally:
        bench.macros.run("set_data_policy", "raw")
    assert "keeps RED data only (policy red)" in "\n".join(run.logs["Error"])

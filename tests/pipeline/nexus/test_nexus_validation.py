"""Every kind of master detpipe writes validates with nexusformat's validators and the NeXus definitions it
bundles (``nxinspect``'s checks: the base classes, and NXmx where the file claims it): NXmx raw, NXmx RED
(online and from ``detpipe reduce``), sparse RED, AGIPD raw and AGIPD RED (both products, online and offline),
with zero errors. One NXDL-internal conflict is tolerated by name: NXmx requires ``/entry/source`` (NXsource)
in NXentry, whose base class does not list NXsource, so the base-class check calls it "an invalid class in
NXentry" while the NXmx check requires it. AGIPD masters keep the same path, so one reader finds both.

Focused checks follow the fixes they guard: per-frame axes sized and valued by the kept frames, the 2014 NXdata
convention on AGIPD masters, ``layout = "area"``, the configured source name, time zones on every time, and a
RED master that names its raw master and the raw master's instrument."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
from nexusformat.nexus.validate import validate_application, validate_file

from detpipe.pipeline.core.saving_target import SavingParams
from detpipe.pipeline.policy.offline_reduction import reduce_series
from detpipe.pipeline.policy.reduction_params import Policy, ReductionParams
from detpipe.pipeline.writers.exdf_writer import ExdfWriter
from detpipe.pipeline.writers.nxmx_writer import NxmxWriter
from detpipe.simulators import AgipdSimulator
from tests.pipeline.red_runs import (
    AGIPD_RUN,
    FRAMES_PER_FILE,
    SERIES_ID,
    agipd_run_items,
    run_through_stage,
    series_frames,
    series_start,
)

NXDL_CONFLICTS = ("NXsource is an invalid class in NXentry",)
INSTRUMENT, SOURCE = "ESRF ID23-2", "ESRF"
AGIPD_INSTRUMENT, AGIPD_SOURCE = "European XFEL SPB/SFX", "European XFEL"
OMEGA_START, OMEGA_INCREMENT = 10.0, 0.5
RED = ReductionParams(policy=Policy.RAW_RED, hits_only=True, miss_fraction=0.1, miss_seed=1)
SPARSE = ReductionParams(policy=Policy.RED, hits_only=True, miss_fraction=0.1, miss_seed=1, sparse=True)
OFFLINE = ReductionParams(policy=Policy.RED, hits_only=True)
EIGER_KINDS = ("raw", "red", "offline_red", "sparse")
AGIPD_KINDS = ("raw", "red", "offline_red")


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno == logging.ERROR:  # headers and summaries are logged as CRITICAL
            self.messages.append(record.getMessage().strip())


def validation_errors(path: Path, application: str | None) -> list[str]:
    """Errors of the base-class check (and of ``application``'s), less the NXDL conflicts named above. Each
    check's own error total must equal the errors caught, so a message logged elsewhere cannot slip by."""
    handler = _Errors()
    logger = logging.getLogger("NXValidate")
    logger.addHandler(handler)
    try:
        totals = [validate_file(str(path))]
        if application is not None:
            totals.append(validate_application(str(path), path="/entry", application=application))
    finally:
        logger.removeHandler(handler)
    assert None not in totals, f"a validator gave up on {path.name}: {handler.messages}"
    assert sum(errors for _, errors in totals) == len(handler.messages), handler.messages
    return [m for m in handler.messages if m not in NXDL_CONFLICTS]


def _single(directory: Path, pattern: str) -> Path:
    (path,) = directory.glob(pattern)
    return path


@pytest.fixture(scope="module")
def eiger_masters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A rotation series (omega 10° + 0.5° per frame) written raw + RED and sparse, then reduced offline."""
    series = series_frames(24, seed=4, hit_fraction=0.3)
    start = series_start(series)
    assert start.config is not None
    header = {"omega_start": OMEGA_START, "omega_increment": OMEGA_INCREMENT}
    items = [dataclasses.replace(start, config=dataclasses.replace(start.config, header=header)), *series.frames]
    runs = {}
    for name, params in (("red", RED), ("sparse", SPARSE)):
        runs[name] = tmp_path_factory.mktemp(name) / "run"
        saving = SavingParams(directory=runs[name], frames_per_file=FRAMES_PER_FILE, data_roots=(runs[name].parent,),
                              instrument_name=INSTRUMENT, source_name=SOURCE)
        run_through_stage(NxmxWriter(saving), SERIES_ID, items, params)
    raw = _single(runs["red"] / "raw", "*_master.h5")
    offline = tmp_path_factory.mktemp("offline") / "out"
    reduce_series(raw, OFFLINE, offline)
    return {"raw": raw, "red": _single(runs["red"] / "red", "*_master.h5"),
            "offline_red": _single(offline / "red", "*_master.h5"),
            "sparse": _single(runs["sparse"] / "red", "*_sparse.h5")}


@pytest.fixture(scope="module", params=["raw", "corrected"])
def agipd_masters(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A triaged AGIPD run of either product written raw + RED, then reduced offline."""
    simulator = AgipdSimulator(product=request.param, cells=4, seed=5, paced=False, hit_fraction=0.5)
    try:
        items = agipd_run_items(simulator, 2)
    finally:
        simulator.stop()
    run_directory = tmp_path_factory.mktemp(f"agipd_{request.param}") / "run"
    writer = ExdfWriter(SavingParams(directory=run_directory, data_roots=(run_directory.parent,),
                                     instrument_name=AGIPD_INSTRUMENT, source_name=AGIPD_SOURCE))
    run_through_stage(writer, AGIPD_RUN, items, RED)
    raw = _single(run_directory / "raw", "r*/AGIPD-R*-master.h5")
    offline = tmp_path_factory.mktemp(f"agipd_{request.param}_offline") / "out"
    reduce_series(raw.parent, OFFLINE, offline)
    return {"raw": raw, "red": _single(run_directory / "red", "r*/AGIPD-R*-master.h5"),
            "offline_red": _single(offline / "red", "r*/AGIPD-R*-master.h5")}


@pytest.mark.parametrize("kind", EIGER_KINDS)
def test_every_eiger_master_validates_with_zero_errors(eiger_masters: dict[str, Path], kind: str) -> None:
    assert validation_errors(eiger_masters[kind], None if kind == "sparse" else "NXmx") == []


@pytest.mark.parametrize("kind", AGIPD_KINDS)
def test_every_agipd_master_validates_with_zero_errors(agipd_masters: dict[str, Path], kind: str) -> None:
    assert validation_errors(agipd_masters[kind], None) == []


def test_the_tolerated_conflict_is_one_the_nxmx_definition_itself_demands(eiger_masters: dict[str, Path]) -> None:
    """Without the tolerance the base-class check reports exactly the NXsource placement NXmx requires."""
    handler = _Errors()
    logger = logging.getLogger("NXValidate")
    logger.addHandler(handler)
    try:
        validate_file(str(eiger_masters["raw"]))
    finally:
        logger.removeHandler(handler)
    assert handler.messages == list(NXDL_CONFLICTS)


@pytest.mark.parametrize("kind", ["red", "offline_red"])
def test_a_red_masters_omega_holds_the_raw_angles_of_its_kept_frames(eiger_masters: dict[str, Path],
                                                                     kind: str) -> None:
    with h5py.File(eiger_masters["raw"]) as raw, h5py.File(eiger_masters[kind]) as red:
        kept = red["/entry/process_02/kept_frames"][()]
        frames = red["/entry/data/data"].shape[0]
        assert 0 < frames == kept.size < raw["/entry/data/data"].shape[0]
        for axis in ("omega", "omega_end"):
            raw_values = raw[f"/entry/sample/transformations/{axis}"][()]
            assert raw_values.shape == (raw["/entry/data/data"].shape[0],)
            np.testing.assert_array_equal(red[f"/entry/sample/transformations/{axis}"][()], raw_values[kept])
        np.testing.assert_array_equal(raw["/entry/sample/transformations/omega"][kept],
                                      OMEGA_START + OMEGA_INCREMENT * kept)  # the ground truth of the series


@pytest.mark.parametrize("kind", ["red", "offline_red"])
def test_every_per_frame_field_of_a_red_master_has_one_row_per_red_frame(
        eiger_masters: dict[str, Path], agipd_masters: dict[str, Path], kind: str) -> None:
    per_frame = {"/entry/sample/transformations/omega", "/entry/sample/transformations/omega_end",
                 "/entry_1/result_1/nPeaks", "/entry/data/trainId", "/entry/data/pulseId", "/entry/data/cellId"}
    for master in (eiger_masters[kind], agipd_masters[kind]):
        with h5py.File(master) as handle:
            frames = handle["/entry/data/data"].shape[0]
            found = {path: handle[path].shape[0] for path in per_frame if path in handle}
            assert len(found) >= 3 and set(found.values()) == {frames}, (master.name, frames, found)


@pytest.mark.parametrize("kind", AGIPD_KINDS)
def test_agipd_masters_plot_by_the_nexus_2014_convention(agipd_masters: dict[str, Path], kind: str) -> None:
    with h5py.File(agipd_masters[kind]) as handle:
        group = handle["/entry/data"]
        assert group.attrs["signal"] == "data" and "axes" not in group["data"].attrs
        assert list(group.attrs["axes"]) == ["."] * group["data"].ndim
        assert group["data"].attrs["interpretation"] == "image"
        assert handle["/entry"].attrs["default"] == "data"


def test_every_master_with_a_detector_calls_its_layout_area(eiger_masters: dict[str, Path],
                                                            agipd_masters: dict[str, Path]) -> None:
    masters = [eiger_masters[k] for k in ("raw", "red", "offline_red")] + list(agipd_masters.values())
    for master in masters:
        with h5py.File(master) as handle:
            assert handle["/entry/instrument/detector/layout"].asstr()[()] == "area", master


def test_every_master_names_the_configured_source(eiger_masters: dict[str, Path],
                                                  agipd_masters: dict[str, Path]) -> None:
    expected = {**{eiger_masters[k]: SOURCE for k in ("raw", "red", "offline_red")},
                **{path: AGIPD_SOURCE for path in agipd_masters.values()}}
    for master, source in expected.items():
        with h5py.File(master) as handle:
            assert handle["/entry/source/name"].asstr()[()] == source, master


def test_every_time_in_a_master_carries_its_time_zone(eiger_masters: dict[str, Path],
                                                      agipd_masters: dict[str, Path]) -> None:
    fields = ("/entry/start_time", "/entry/end_time", "/entry/end_time_estimated", "/entry/process_01/date",
              "/entry/process_02/date")
    for master in [*eiger_masters.values(), *agipd_masters.values()]:
        with h5py.File(master) as handle:
            times = {path: handle[path].asstr()[()] for path in fields if path in handle}
            assert master.name.endswith("_sparse.h5") or {"/entry/start_time", "/entry/end_time"} <= times.keys()
            for path, text in times.items():
                assert dt.datetime.fromisoformat(text).tzinfo is not None, (master.name, path, text)


def test_an_offline_red_master_names_its_raw_master_and_copies_the_raw_names(
        eiger_masters: dict[str, Path], agipd_masters: dict[str, Path]) -> None:
    for raw, red in ((eiger_masters["raw"], eiger_masters["offline_red"]),
                     (agipd_masters["raw"], agipd_masters["offline_red"])):
        with h5py.File(raw) as raw_handle, h5py.File(red) as handle:
            named = handle["/entry/process_02/raw_master"].asstr()[()]
            assert named and (red.parent / named).resolve() == raw.resolve()
            for path in ("/entry/instrument/name", "/entry/source/name"):
                assert handle[path].asstr()[()] == raw_handle[path].asstr()[()] != "detpipe", (red, path)

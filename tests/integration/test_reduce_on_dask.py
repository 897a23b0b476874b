"""``detpipe reduce`` on many series at once: Dask runs one series a task on a local cluster, every output is the
same file, byte for byte, as reducing that series alone (SOURCE_DATE_EPOCH fixing the times both record), and a
series that fails is reported with its reason while the others complete. The Dask runs are ``detpipe reduce``
processes, as a user runs them: Dask's client keeps threads of its own for the life of its process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from detpipe.devices.cli.reduce_command import run_reduce
from detpipe.devices.cli.user_error import UserError
from detpipe.pipeline.core.file_clock import SOURCE_DATE_EPOCH
from detpipe.pipeline.core.saving_target import SavingParams
from detpipe.pipeline.policy.reduction_params import Policy, ReductionParams
from detpipe.pipeline.writers.exdf_writer import ExdfWriter
from detpipe.pipeline.writers.nxmx_writer import NxmxWriter
from detpipe.simulators import AgipdSimulator
from tests.pipeline.red_runs import (
    AGIPD_RUN,
    SERIES_ID,
    agipd_run_items,
    files_below,
    reduce_twice_holding_h5py_objects,
    run_through_stage,
    series_frames,
    series_start,
)

RAW_ONLY = ReductionParams(policy=Policy.RAW)
EIGER_SERIES = ("lyso_1", "lyso_2", "lyso_3")
POLICY_YAML = "policy: red\nhits_only: true\nmiss_fraction: 0.05\nmiss_seed: 3\nmantissa_bits: 6\nmodules: [0, 3]\n"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three triaged EIGER2 4M series of 40 frames (20 % hits) and one triaged AGIPD run, raw only, as a beamline's
    archive holds them: ``<archive>/<name>/raw/…``."""
    root = tmp_path_factory.mktemp("archive")
    for seed, name in enumerate(EIGER_SERIES, start=5):
        series = series_frames(40, seed=seed, hit_fraction=0.2)
        writer = NxmxWriter(SavingParams(directory=root / name, prefix=name, frames_per_file=20, data_roots=(root,)))
        run_through_stage(writer, SERIES_ID, [series_start(series), *series.frames], RAW_ONLY)
    simulator = AgipdSimulator(product="corrected", cells=16, seed=21, paced=False, hit_fraction=0.25)
    try:
        items = agipd_run_items(simulator, 2)
    finally:
        simulator.stop()
    writer = ExdfWriter(SavingParams(directory=root / "agipd", data_roots=(root,)), compression_threads=2)
    run_through_stage(writer, AGIPD_RUN, items, RAW_ONLY)
    (root / "policy.yaml").write_text(POLICY_YAML)
    return root


def raw_paths(archive: Path) -> list[Path]:
    return [*(archive / n / "raw" / f"{n}_master.h5" for n in EIGER_SERIES), archive / "agipd" / "raw" / f"r{AGIPD_RUN:04d}"]


def detpipe_reduce(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "detpipe.devices.cli", "reduce", *map(str, args)], check=False,
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def test_each_series_reduced_on_dask_is_byte_identical_to_reducing_it_alone(
        archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    epoch = {SOURCE_DATE_EPOCH: "1764806400"}
    monkeypatch.setenv(SOURCE_DATE_EPOCH, epoch[SOURCE_DATE_EPOCH])
    policy, out = archive / "policy.yaml", tmp_path / "out"
    names = [*EIGER_SERIES, f"r{AGIPD_RUN:04d}"]
    out.mkdir()
    for name, raw in zip(names, raw_paths(archive), strict=True):
        assert run_reduce([str(raw)], policy_file=policy, config_from=None, output=out / name) == 0
    alone = files_below(out)
    shutil.rmtree(out)  # the files name their own path: the cluster writes them where reducing alone did

    pattern = archive / "lyso_*" / "raw" / "*_master.h5"  # quoted: detpipe expands it
    run = detpipe_reduce(pattern, raw_paths(archive)[-1], "--policy", policy, "-o", out, "--workers", 2, env=epoch)
    assert run.returncode == 0, run.stderr
    on_dask = files_below(out)
    assert sorted(on_dask) == sorted(alone)
    assert {p.parts[0] for p in on_dask} == set(names)
    assert len([p for p in on_dask if p.suffix == ".json"]) == 4  # a manifest per series
    assert [path for path, data in alone.items() if on_dask[path] != data] == []
    lines = run.stdout.splitlines()
    assert lines[-1] == "4 of 4 series reduced"
    assert [line.split(":")[0] for line in lines[-5:-1]] == names  # reported in the order given
    for name, line in zip(names, lines[-5:-1], strict=True):
        manifest = json.loads((out / name / f"{name}_manifest.json").read_text())
        kept, frames_in = manifest["DataPolicy_frames_kept"], manifest["DataPolicy_frames_in"]
        assert f": RED written, {kept} of {frames_in} frames kept; manifest " in line and 0 < kept < frames_in
    assert "reduce 4 series: 4/4 series (100 %)" in run.stderr  # the progress, as plain lines in a pipe


def test_an_agipd_run_reduced_twice_is_the_same_bytes_however_long_python_holds_its_h5py_objects(
        archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The AGIPD side of what a Dask worker's sampling profiler does (the EIGER side is in the policy tests):
    module files, REDU flags file and master do not depend on when h5py closes an object."""
    monkeypatch.setenv(SOURCE_DATE_EPOCH, "1764806400")
    freed, kept_alive = reduce_twice_holding_h5py_objects(
        lambda out: run_reduce([str(raw_paths(archive)[-1])], policy_file=archive / "policy.yaml", config_from=None,
                               output=out), tmp_path / "out", monkeypatch)
    assert sorted(freed) == sorted(kept_alive) and any(p.name.startswith("CORR-R") for p in freed)
    assert [p for p in freed if freed[p] != kept_alive[p]] == []


def test_a_series_that_fails_is_reported_with_its_reason_and_the_others_complete(archive: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken" / "raw" / "broken_master.h5"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not an HDF5 file")
    out = tmp_path / "out"
    run = detpipe_reduce(raw_paths(archive)[0], broken, raw_paths(archive)[1], "--policy", archive / "policy.yaml",
                         "-o", out, "--workers", 2)
    assert run.returncode == 1, run.stderr
    lines = run.stdout.splitlines()
    assert lines[-1] == "2 of 3 series reduced, 1 failed"
    assert lines[-3].startswith(f"broken: FAILED ({broken}): ") and "not an HDF5 file" in lines[-3], lines
    assert (out / "lyso_1" / "lyso_1_manifest.json").is_file() and (out / "lyso_2" / "lyso_2_manifest.json").is_file()
    assert not list(out.glob("broken/**/*.h5"))  # nothing half-written for the series that failed


def test_series_of_one_name_and_patterns_that_match_nothing_are_refused_before_any_work(
        archive: Path, tmp_path: Path) -> None:
    twin = tmp_path / "elsewhere" / "raw" / "lyso_1_master.h5"
    twin.parent.mkdir(parents=True)
    shutil.copy(raw_paths(archive)[0], twin)
    policy = archive / "policy.yaml"
    with pytest.raises(UserError, match="2 series are named 'lyso_1'"):
        run_reduce([str(raw_paths(archive)[0]), str(twin)], policy_file=policy, config_from=None, output=tmp_path / "o")
    with pytest.raises(UserError, match="no raw series matches"):
        run_reduce([str(tmp_path / "nowhere" / "*_master.h5")], policy_file=policy, config_from=None,
                   output=tmp_path / "o")
    assert not (tmp_path / "o").exists()

"""A raw + RED EIGER run made once for the report tests, by the real writer and policy stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from detpipe.pipeline.policy.reduction_params import Policy, ReductionParams
from tests.pipeline.red_runs import SeriesFrames, online_run, series_frames

FRAMES = 30
POLICY = ReductionParams(policy=Policy.RAW_RED, hits_only=True, miss_fraction=0.1, miss_seed=2)


@pytest.fixture(scope="package")
def series() -> SeriesFrames:
    return series_frames(FRAMES, seed=12, hit_fraction=0.3)


@pytest.fixture(scope="package")
def eiger_run(series: SeriesFrames, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_directory = tmp_path_factory.mktemp("eiger") / "run"
    online_run(run_directory, series, POLICY)
    return run_directory


def master_in(folder: Path) -> Path:
    (master,) = folder.glob("*_master.h5")
    return master

"""`detpipe demo`: embedded Tango database, registration from YAML, simulator and server processes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import extra_data
import h5py
import hdf5plugin  # noqa: F401 - bitshuffle/LZ4 filters for reading
import numpy as np
from extra_data.components import AGIPD1M

from detpipe.simulators import EigerSimulator
from detpipe.simulators.agipd_simulator import AgipdSimulator

FRAMES = 20


def test_demo_acquires_through_a_registered_server_and_loses_nothing(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "detpipe.devices.cli", "demo", "--output", str(tmp_path), "--frames", str(FRAMES),
         "--model", "1M"],
        capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    summary = dict(line.strip().rsplit(None, 1) for line in run.stdout.split("[demo] summary")[1].splitlines()
                   if line.strip() and not line.strip().startswith("master"))
    assert summary["frames acquired"] == summary["frames written"] == str(FRAMES)
    assert summary["frames lost"] == "0"
    assert (tmp_path / "tango_database.db").exists()
    masters = list((tmp_path / "data").glob("*_master.h5"))
    assert len(masters) == 1
    with EigerSimulator("1M", seed=1, hit_fraction=0.1) as truth, h5py.File(masters[0]) as f:  # the demo's settings
        stack = f["/entry/data/data"]
        assert stack.shape[0] == FRAMES
        for i in (0, FRAMES - 1):
            np.testing.assert_array_equal(stack[i], truth.frames.pixels(i))


def test_agipd_demo_writes_a_run_extra_data_opens(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "detpipe.devices.cli", "demo", "--detector", "agipd", "--output", str(tmp_path),
         "--trains", "3", "--cells", "8"],
        capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    summary = dict(line.strip().rsplit(None, 1) for line in run.stdout.split("[demo] summary")[1].splitlines()
                   if line.strip())
    assert (summary["trains"], summary["frames"], summary["frames lost"]) == ("3", "24", "0")
    run_dir = Path(summary["run directory"])
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)  # extra_data writes a cache file into writable run directories
    agipd = AGIPD1M(extra_data.RunDirectory(str(copy)), raw=True)
    data = agipd.get_array("image.data").values  # (module, train, cell, 2, ss, fs)
    assert data.shape[:3] == (16, 3, 8)
    truth = AgipdSimulator(cells=8, seed=1, hit_fraction=0.1, paced=False)  # the demo's simulator settings
    try:
        for k in range(3):
            np.testing.assert_array_equal(np.moveaxis(data[:, k], 0, 1), truth.train(k).data)
    finally:
        truth.stop()

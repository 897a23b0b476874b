"""`detpipe demo`: embedded Tango database, registration from YAML, simulator and server processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import extra_data
import h5py
import hdf5plugin  # noqa: F401 - bitshuffle/LZ4 filters for reading
import numpy as np
import psutil
from extra_data.components import AGIPD1M

from detpipe.pipeline.core.crystfel_geometry import read_crystfel_geometry
from detpipe.simulators import EigerSimulator
from detpipe.simulators.agipd_simulator import AgipdSimulator
from tests.listening import listening, on_wildcards

FRAMES = 20


def run_demo_watching_sockets(*args: str, timeout_s: float = 240.0,
                              env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], set]:
    """``detpipe demo`` as a user runs it, with the listening sockets of everything it starts sampled meanwhile."""
    user_env = {name: value for name, value in os.environ.items() if name != "ORBendPoint"}  # tests' own setting
    demo = subprocess.Popen([sys.executable, "-m", "detpipe.devices.cli", "demo", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**user_env, **(env or {})})
    sockets: set = set()
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            try:
                sockets.update(listening(demo.pid, include_root=False))
            except psutil.NoSuchProcess:
                return

    sampler = threading.Thread(target=sample, name="socket-sampler")
    sampler.start()
    try:
        out, err = demo.communicate(timeout=timeout_s)
    finally:
        done.set()
        sampler.join()
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    return subprocess.CompletedProcess(demo.args, demo.returncode, out, err), sockets


def last_progress_line(stdout: str, prefix: str) -> str:
    return [line for line in stdout.splitlines() if line.startswith(prefix)][-1]


def demo_summary(stdout: str) -> dict[str, str]:
    """The summary the demo prints last: label → value (the value is the line's last word)."""
    return dict(line.strip().rsplit(None, 1) for line in stdout.split("[demo] summary")[1].splitlines()
                if line.strip())


def test_demo_acquires_through_a_registered_server_and_loses_nothing(tmp_path: Path) -> None:
    run, sockets = run_demo_watching_sockets("--output", str(tmp_path), "--frames", str(FRAMES), "--model", "1M")
    assert run.returncode == 0, run.stdout + run.stderr
    commands = " | ".join(name for name, _, _ in sockets)
    for process in ("tango.databaseds", "cli sim", "cli server"):
        assert process in commands, f"no listening socket of {process} seen: {sorted(sockets)}"
    assert not on_wildcards(sockets), "the demo's database, simulator and server listen on 127.0.0.1 only"
    summary = demo_summary(run.stdout)
    assert summary["frames acquired"] == summary["frames written"] == str(FRAMES)
    assert summary["frames lost"] == "0"
    # the last progress line counts what is written, with the final size
    final = last_progress_line(run.stdout, "[demo] series: ")
    assert final.startswith(f"[demo] series: {FRAMES}/{FRAMES} frames (100 %)"), run.stdout
    assert final.endswith(f", {float(summary['MB written']):.0f} MB written"), run.stdout
    assert run.stdout.count(f"[demo] Armed series 1: {FRAMES} frames; waiting for Start") == 1, run.stdout
    assert (tmp_path / "tango_database.db").exists()
    masters = list((tmp_path / "data").glob("*_master.h5"))
    assert len(masters) == 1
    with EigerSimulator("1M", seed=1, hit_fraction=0.1) as truth, h5py.File(masters[0]) as f:  # the demo's settings
        stack = f["/entry/data/data"]
        assert stack.shape[0] == FRAMES
        for i in (0, FRAMES - 1):
            np.testing.assert_array_equal(stack[i], truth.frames.pixels(i))
        is_hit, n_peaks = (f[f"/entry/process_01/results/{name}"][()] for name in ("is_hit", "n_peaks"))
    report = json.loads((Path(summary["report"]).parent / "report.json").read_text())
    window = report["hit_rate"]["window_rows"]
    assert report["hit_rate"]["hit_rate"] == [is_hit[s:s + window].mean() for s in range(0, FRAMES, window)]
    assert sum(report["n_peaks"]["counts"]) == FRAMES
    if (is_hit == 1).any():
        assert report["strongest_hit"]["frame"] == int(np.argmax(np.where(is_hit == 1, n_peaks, -1)))
    geometry = read_crystfel_geometry(summary["CrystFEL geometry"])
    assert Path(summary["CrystFEL geometry"]) == masters[0].with_suffix(".geom")
    assert len(geometry.panels) == 2 and geometry.settings["peak_list"] == "/entry_1/result_1"  # a 1M: 2 modules


@contextmanager
def every_core_busy() -> Iterator[None]:
    """A CPU hog per core, as on a beamline computer that is also running other work."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def test_the_default_demo_works_with_default_client_timeouts_on_a_busy_machine_with_cold_caches(
        tmp_path: Path) -> None:
    """The demo's client keeps Tango's default 3 s timeout: on a loaded machine, with the EIGER2 4M and its hit
    finder whose workers compile peakfinder8 from scratch (an empty numba cache, as on a fresh machine), no
    command may wait for the detector, the files or the triage workers."""
    cold = {"NUMBA_CACHE_DIR": str(tmp_path / "empty-numba-cache")}
    with every_core_busy():
        run, _ = run_demo_watching_sockets("--output", str(tmp_path / "demo"), "--frames", "10", timeout_s=600,
                                           env=cold)
    assert run.returncode == 0, run.stdout + run.stderr
    summary = demo_summary(run.stdout)
    assert (summary["frames written"], summary["frames lost"]) == ("10", "0"), run.stdout


def test_the_two_receiver_demo_spreads_the_stream_and_loses_nothing(tmp_path: Path) -> None:
    frames = 6  # blocks of 100 frames: receiver 1 writes them all, receiver 2 listens; test_receivers.py spreads
    run, sockets = run_demo_watching_sockets("--output", str(tmp_path), "--frames", str(frames), "--model", "1M",
                                             "--receivers", "2")
    assert run.returncode == 0, run.stdout + run.stderr
    assert not on_wildcards(sockets), "the fan-out and every server listen on 127.0.0.1 only"
    summary = demo_summary(run.stdout)
    assert summary["receivers"] == "2" and summary["frames written"] == str(frames) and summary["frames lost"] == "0"
    assert "[demo] eiger/receiver/2: ON, 0 received, 0 written" in run.stdout
    (master,) = (tmp_path / "data").glob("*_master.h5")
    assert summary["master file"] == str(master)
    with EigerSimulator("1M", seed=1, hit_fraction=0.1) as truth, h5py.File(master) as f:
        np.testing.assert_array_equal(f["/entry/data/data"][frames - 1], truth.frames.pixels(frames - 1))


def test_agipd_demo_writes_a_run_extra_data_opens(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "detpipe.devices.cli", "demo", "--detector", "agipd", "--output", str(tmp_path),
         "--trains", "3", "--cells", "8"],
        capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    summary = demo_summary(run.stdout)
    assert (summary["trains"], summary["frames"], summary["frames lost"]) == ("3", "24", "0")
    final = last_progress_line(run.stdout, "[demo] run 1: ")
    assert final.startswith("[demo] run 1: 3/3 trains (100 %)") and final.endswith(
        f", {float(summary['MB written']):.0f} MB written"), run.stdout
    run_dir = Path(summary["run directory"])
    assert "[demo] run 1: 3 trains × 8 cells = 24 frames, 0.1 GB of raw pixels to write" in run.stdout
    assert json.loads((Path(summary["report"]).parent / "report.json").read_text())["frames"] == 24
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


def test_the_two_group_agipd_demo_writes_one_run_extra_data_reads_whole(tmp_path: Path) -> None:
    """Modules 0-7 and 8-15 on their own bridges, received and written by two servers into one run directory:
    extra-data opens it as one run of 16 modules, every pixel the simulator's, and the run's master covers both."""
    run, sockets = run_demo_watching_sockets("--detector", "agipd", "--receivers", "2", "--output", str(tmp_path),
                                             "--trains", "3", "--cells", "8")
    assert run.returncode == 0, run.stdout + run.stderr
    assert not on_wildcards(sockets), "both bridges and both servers listen on 127.0.0.1 only"
    summary = demo_summary(run.stdout)
    assert (summary["trains"], summary["frames"], summary["frames lost"]) == ("3", "24", "0")
    assert "[demo] spb/agipd1m/2: ON, 3 trains_received, 24 received, 0 dropped, 0 trains_missing" in run.stdout
    assert "2 module groups, 16 module files, 24 frames in AGIPD-R0001-master.h5" in run.stdout
    run_dir = Path(summary["run directory"])
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)  # extra_data writes a cache file into writable run directories
    data = AGIPD1M(extra_data.RunDirectory(str(copy)), raw=True, min_modules=16).get_array("image.data").values
    assert data.shape[:3] == (16, 3, 8)
    truth = AgipdSimulator(cells=8, seed=1, hit_fraction=0.1, paced=False)  # the demo's simulator settings
    try:
        for k in range(3):
            np.testing.assert_array_equal(np.moveaxis(data[:, k], 0, 1), truth.train(k).data)
        with h5py.File(run_dir / "AGIPD-R0001-master.h5") as master:
            assert master["/entry/data/modules_present"][()].all() and master["/entry/data/written"][()].all()
            np.testing.assert_array_equal(master["/entry/data/data"][23], truth.train(2).data[7])
    finally:
        truth.stop()

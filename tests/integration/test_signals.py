"""SIGTERM or SIGINT to a running `detpipe server` mid-series: the series is ended like an Abort (files
closed, master with its VDS and end time) and the server exits 0 within seconds."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import h5py
import numpy as np
import pytest
import tango

from detpipe.devices.cli.demo import DETECTOR, WRITER, config_file
from detpipe.devices.cli.embedded_database import EmbeddedTangoDatabase, free_tcp_port
from detpipe.devices.cli.managed_process import ManagedProcess
from detpipe.devices.state_wait import prepare
from detpipe.devices.tangodb.config_model import load_database_config
from detpipe.devices.tangodb.server_config import register
from tests.waiting import wait_until

DETPIPE = [sys.executable, "-m", "detpipe.devices.cli"]


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(TANGO_HOST, data root): an embedded database with the demo's devices and an EIGER simulator."""
    root = tmp_path_factory.mktemp("signals")
    data = root / "data"
    data.mkdir()
    ports = {"EIGER_REST_PORT": free_tcp_port(), "EIGER_STREAM_PORT": free_tcp_port(), "AGIPD_BRIDGE_PORT": 0}
    with ExitStack() as stack:
        db = stack.enter_context(EmbeddedTangoDatabase(root / "tango.db"))
        register(db.client(), load_database_config(config_file("demo-eiger.yaml"), {
            **{name: str(port) for name, port in ports.items()}, "DATA_ROOT": str(data)}))
        stack.enter_context(ManagedProcess(
            [*DETPIPE, "sim", "eiger", "--model", "1M", "--rest-port", str(ports["EIGER_REST_PORT"]),
             "--stream-port", str(ports["EIGER_STREAM_PORT"])], ready_marker="EIGER simulator ready"))
        yield db.tango_host, data


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_series_ends_it_with_valid_files_and_the_server_exits(registered: tuple[str, Path],
                                                                           monkeypatch: pytest.MonkeyPatch,
                                                                           signum: int) -> None:
    tango_host, data = registered
    monkeypatch.setenv("TANGO_HOST", tango_host)
    prefix = f"signal_{signum}_$id"
    with ManagedProcess([*DETPIPE, "server", "demo", "--host", "127.0.0.1"], ready_marker="Ready to accept request",
                        env={"TANGO_HOST": tango_host}) as server:
        detector, writer = tango.DeviceProxy(DETECTOR), tango.DeviceProxy(WRITER)
        writer.saving_directory, writer.saving_prefix = str(data), prefix
        detector.acq_nb_frames, detector.acq_expo_time = 5000, 0.01
        prepare(detector, 300)
        detector.Start()
        wait_until(lambda: writer.frames_written, lambda n: n >= 20, 60, "frames written")
        os.kill(server.pid, signum)
        assert server.wait(20) == 0
    (master,) = data.glob(f"signal_{signum}_*_master.h5")
    with h5py.File(master) as handle:
        stack = handle["/entry/data/data"]
        assert stack.shape[0] >= 20 and "end_time" in handle["/entry"]
        fill = np.iinfo(stack.dtype).max  # what a frame lost before the signal would read as
        assert all((stack[i] != fill).any() for i in range(stack.shape[0]))  # every frame reads through the VDS

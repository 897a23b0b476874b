"""AgipdDetector against karabo-bridge's own SimServer, with missing modules, and with the correction stage."""

from __future__ import annotations

import shutil
from pathlib import Path

import extra_data
import h5py
import hdf5plugin  # noqa: F401 - bitshuffle/LZ4 filters for reading
import numpy as np
import pytest
import tango
from karabo_bridge import simulation
from karabo_bridge.server import SimServerInThread

from detpipe.devices.state_wait import prepare
from detpipe.simulators.agipd_simulator import AgipdSimulator
from tests.integration.test_agipd_slice import agipd_server, readable_copy, run
from tests.waiting import wait_until


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.mark.parametrize("data_like", ["online", "file"])
def test_device_reads_karabo_bridges_own_simulator_in_both_layouts(monkeypatch, data_like: str, data_root: Path,
                                                                    tmp_path: Path) -> None:
    monkeypatch.setattr(simulation.AGIPD, "pulses", 8)  # its fixed 64 random pulses are slow to make
    sent: dict[int, np.ndarray] = {}
    server = SimServerInThread("tcp://127.0.0.1:*", debug=False, raw=False, data_like=data_like)
    trains = server.data

    def recording():
        for data, meta in trains:
            source = next(iter(data))
            sent[meta[source]["timestamp.tid"]] = np.array(data[source]["image.data"])
            yield data, meta

    server.data = recording()
    with server, agipd_server(server, data_root) as (detector, writer):
        assert run(detector, 3) == "Ready", detector.Status()
        assert detector.trains_received == 3 and writer.frames_written == 3 * 8
        run_dir = Path(writer.master_file).parent
    files = extra_data.RunDirectory(str(readable_copy(run_dir, tmp_path)))
    agipd = extra_data.components.AGIPD1M(files, raw=False)
    for k, train_id in enumerate(agipd.train_ids):
        got = agipd.select_trains(extra_data.by_index[k]).get_array("image.data").values[:, 0]  # (module, pulse, ss, fs)
        wire = sent[train_id]
        file_order = wire if data_like == "file" else np.transpose(wire, (3, 0, 2, 1))
        np.testing.assert_array_equal(np.moveaxis(got, 0, 1), file_order)


def test_a_module_missing_for_a_train_is_counted_and_flagged_in_the_run(data_root: Path, tmp_path: Path) -> None:
    with AgipdSimulator(cells=4, paced=False, seed=3, missing_modules={2: {5}}) as sim:
        with agipd_server(sim, data_root) as (detector, writer):
            assert run(detector, 4) == "Ready", detector.Status()
            assert list(detector.modules_missing) == [0] * 5 + [1] + [0] * 10
            assert writer.frames_written == 4 * 4
            run_dir = Path(writer.master_file).parent
            missing_train = sim.train(2).train_id
    files = extra_data.RunDirectory(str(readable_copy(run_dir, tmp_path)))
    counts = files["SPB_DET_AGIPD1M-1/DET/5CH0:xtdf", "image.data"].data_counts(labelled=True)
    assert counts[missing_train] == 0 and counts.sum() == 3 * 4
    complete = extra_data.components.AGIPD1M(files, raw=True, min_modules=16)
    assert missing_train not in list(complete.train_ids)
    with h5py.File(run_dir / "AGIPD-R0001-master.h5") as master:
        present = master["/entry/data/modules_present"][:]
        assert not present[2 * 4, 5] and present[2 * 4].sum() == 15


def test_raw_trains_are_corrected_with_the_constants_file(data_root: Path, tmp_path: Path) -> None:
    with AgipdSimulator(cells=8, paced=False, seed=4) as sim:
        constants = sim.write_constants(tmp_path / "constants.h5")
        with agipd_server(sim, data_root, ConstantsFile=str(constants)) as (detector, writer):
            assert run(detector, 2) == "Ready", detector.Status()
            assert detector.correction_time_mean > 0
            run_dir = Path(writer.master_file).parent
        assert sorted(p.name[:4] for p in run_dir.glob("*-AGIPD*.h5")) == ["CORR"] * 16
        with h5py.File(run_dir / "AGIPD-R0001-master.h5") as master:
            for k in range(2):
                photons = sim.truth.photons(k)
                corrected = np.stack([master["/entry/data/data"][8 * k + f] for f in range(8)])
                assert np.abs(corrected - photons).mean() < 0.05
                np.testing.assert_allclose(corrected, photons, atol=9.0)
    shutil.rmtree(run_dir)


def test_an_unusable_constants_file_faults_this_device_alone_and_init_recovers(data_root: Path,
                                                                              tmp_path: Path) -> None:
    """It used to exit the whole server at start-up (every device down)."""
    not_constants = tmp_path / "constants.h5"
    not_constants.write_text("this is not HDF5")
    with AgipdSimulator(cells=4, paced=False, seed=5) as sim:
        with agipd_server(sim, data_root, ConstantsFile=str(not_constants)) as (detector, writer):
            assert detector.State() == tango.DevState.FAULT
            assert "ConstantsFile" in detector.Status() and "\n" not in detector.Status()
            assert writer.State() == tango.DevState.ON
            with pytest.raises(tango.DevFailed, match="FAULT"):
                detector.Prepare()
            sim.write_constants(not_constants)
            detector.Init()
            assert run(detector, 1) == "Ready", detector.Status()
            assert detector.correction_time_mean > 0


def test_a_bridge_slower_than_the_stream_timeout_loses_no_train_and_says_it_waits(data_root: Path,
                                                                                  tmp_path: Path) -> None:
    """Issue 15: REQ against a bridge answering 2 s after each request (StreamTimeout 0.5 s) used to give
    requests up, lose their trains and end in FAULT. Every train must land, pixel-exact, and Status must say
    the device is waiting for the bridge rather than look stuck."""
    with AgipdSimulator(cells=4, paced=False, seed=6, reply_delay_s=2.0) as sim:
        with agipd_server(sim, data_root, StreamTimeout=0.5, RequestTimeout=20.0) as (detector, writer):
            detector.acq_nb_trains = 3
            prepare(detector, 60)
            detector.Start()
            waiting = wait_until(detector.Status, lambda s: "for the bridge's next train" in s or
                                 detector.acq_status != "Running", 30, "Status")
            assert "waiting" in waiting and "RequestTimeout 20s" in waiting, waiting
            assert wait_until(lambda: detector.acq_status, lambda s: s != "Running", 60) == "Ready"
            assert detector.State() == tango.DevState.ON, detector.Status()
            assert (detector.trains_received, detector.trains_missing, detector.trains_unanswered) == (3, 0, 0)
            run_dir = Path(writer.master_file).parent
        sent = [sim.train(k) for k in range(3)]
    files = extra_data.RunDirectory(str(readable_copy(run_dir, tmp_path)))
    agipd = extra_data.components.AGIPD1M(files, raw=True)
    assert list(agipd.train_ids) == [train.train_id for train in sent]
    for k, train in enumerate(sent):
        got = agipd.select_trains(extra_data.by_index[k]).get_array("image.data").values[:, 0]
        np.testing.assert_array_equal(np.moveaxis(got, 0, 1), train.data)

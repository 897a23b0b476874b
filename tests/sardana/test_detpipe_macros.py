"""detpipe's Sardana macros run through a real Door against real detpipe devices and the simulators."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - bitshuffle/LZ4 filters for reading
import numpy as np
import pytest
import tango

from tests.listening import listening, on_wildcards
from tests.sardana.conftest import AGIPD, AGIPD_CELLS, AGIPD_WRITER, EIGER, EIGER_WRITER, POLICY, SardanaBench
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def test_sfx_acquire_writes_every_frame_and_reports_the_true_hits(bench: SardanaBench) -> None:
    frames = 50
    run = bench.macros.run("sfx_acquire", str(frames), "0.01", "raw+red")
    acquired, written, hits, master = run.result
    truth = [bench.eiger_sim.frames.truth(i) for i in range(frames)]
    assert (int(acquired), int(written)) == (frames, frames)
    assert int(hits) == sum(t.is_hit for t in truth)
    assert f"hits {hits} of {frames} frames triaged" in run.output
    assert Path(master).parent == bench.data_root / "raw"
    with h5py.File(master) as f:
        stack = f["/entry/data/data"]
        assert stack.shape[0] == frames
        for i in (0, 17, frames - 1):
            np.testing.assert_array_equal(stack[i], bench.eiger_sim.frames.pixels(i))
    assert (bench.data_root / "red" / Path(master).name).exists()


def test_stopping_sfx_acquire_disarms_the_detector_and_keeps_valid_files(bench: SardanaBench) -> None:
    detector, writer = bench.device(EIGER), bench.device(EIGER_WRITER)
    previous_series = detector.series_id
    macro_id = bench.macros.start("sfx_acquire", "2000", "0.01", "raw")
    wait_until(lambda: (detector.series_id, detector.frames_received),
               lambda seen: seen[0] != previous_series and seen[1] >= 20, 30, "(series_id, frames_received)")
    bench.macros.stop()
    run = bench.macros.wait(macro_id)
    assert run.state == "stop"
    assert detector.acq_status == "Ready" and detector.State() == tango.DevState.ON, detector.Status()
    assert bench.eiger_sim.state.value == "idle"
    received = detector.frames_received
    assert 20 <= received < 2000
    assert writer.frames_written == received
    with h5py.File(writer.master_file) as f:
        assert f["/entry/data/data"].shape[0] == received
        np.testing.assert_array_equal(f["/entry/data/data"][received - 1], bench.eiger_sim.frames.pixels(received - 1))


def test_set_data_policy_applies_policy_and_settings_together(bench: SardanaBench) -> None:
    policy = bench.device(POLICY)
    bench.macros.run("set_data_policy", "raw+red", '{"hits_only": true, "miss_fraction": 0.25}')
    assert (policy.policy, policy.hits_only, policy.miss_fraction) == (2, True, 0.25)
    with pytest.raises(AssertionError, match="policy must be one of raw, red, raw\\+red"):
        bench.macros.run("set_data_policy", "keep-everything")
    bench.macros.run("set_data_policy", "raw", '{"hits_only": false, "miss_fraction": 0.0}')
    assert policy.policy == 0


def test_det_status_lists_every_detector_and_the_devices_it_feeds(bench: SardanaBench) -> None:
    output = bench.macros.run("det_status").output
    for name in (EIGER, EIGER_WRITER, "test/hitfinder/1", POLICY, AGIPD, "test/agipdwriter/1"):
        assert name in output
    assert "frames_written=" in output and "hits=" in output


def test_agipd_run_records_a_run_and_moves_to_the_next_run_number(bench: SardanaBench) -> None:
    detector, writer = bench.device(AGIPD), bench.device(AGIPD_WRITER)
    run = bench.macros.run("agipd_run", "3", "7")
    assert run.result == (str(bench.data_root / "r0007"),)
    assert writer.frames_written == 3 * AGIPD_CELLS
    assert detector.run_number == 8
    assert sorted(p.name for p in (bench.data_root / "r0007").glob("RAW-R0007-AGIPD00-S*.h5"))


def test_the_database_detpipe_and_sardana_servers_of_the_tests_listen_on_loopback_only(bench: SardanaBench) -> None:
    sockets = listening(os.getpid(), include_root=False)
    commands = " | ".join(name for name, _, _ in sockets)
    for process in ("tango.databaseds", "cli server", "Sardana"):
        assert process in commands, f"no listening socket of {process} seen: {sorted(sockets)}"
    assert not on_wildcards(sockets)

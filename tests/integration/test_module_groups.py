"""One AGIPD run over two module groups (config/demo-agipd-groups.yaml, registered in a real embedded Tango
database, two real server processes): the simulator serves modules 0-7 and 8-15 on their own bridges, each group's
server writes its modules into the same run directory, and the first group's device runs the second with its run.
Properties that cannot work are refused by name; a group that cannot take the run is named and Reset brings both
back; a group killed mid-run leaves its modules missing from the trains it lacks, the master valid over what is on
disk, and the run in ALARM naming it (that test is last: it kills a server the module's other tests use)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import ExitStack

import h5py
import numpy as np
import pytest
import tango

from detpipe.devices.cli.demo import AGIPD, AGIPD_GROUP_WRITER, AGIPD_WRITER, config_file
from detpipe.devices.cli.embedded_database import EmbeddedTangoDatabase
from detpipe.devices.state_wait import prepare, wait_until_saved
from detpipe.devices.tangodb.config_model import load_database_config
from detpipe.devices.tangodb.server_config import register
from detpipe.simulators.agipd_simulator import FIRST_TRAIN_ID, AgipdSimulator
from tests.integration.test_receivers import Topology, start_server
from tests.waiting import wait_until

GROUP_2 = "spb/agipd1m/2"
CELLS = 8
Groups = Topology[AgipdSimulator]


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Groups]:
    root = tmp_path_factory.mktemp("module-groups")
    data = root / "data"
    data.mkdir()
    with ExitStack() as stack:
        simulator = stack.enter_context(AgipdSimulator(group_ports=[0, 0], sources="modules", cells=CELLS, seed=2))
        db = stack.enter_context(EmbeddedTangoDatabase(root / "tango.db"))
        ports = [endpoint.rsplit(":", 1)[1] for endpoint in simulator.endpoints]
        register(db.client(), load_database_config(config_file("demo-agipd-groups.yaml"), {
            "AGIPD_BRIDGE_PORT": ports[0], "AGIPD_BRIDGE_PORT_2": ports[1], "DATA_ROOT": str(data)}))
        found = Groups(db.tango_host, data, simulator)
        for instance in ("receiver-2", "demo"):
            found.servers[instance] = stack.enter_context(start_server(instance, db.tango_host))
        for writer in (AGIPD_WRITER, AGIPD_GROUP_WRITER):
            found.proxy(writer).saving_directory = str(data)
        yield found


def set_up(topology: Groups, run: int, trains: int) -> tango.DeviceProxy:
    detector = topology.proxy(AGIPD)
    detector.run_number, detector.acq_nb_trains = run, trains
    return detector


def truth_frame(topology: Groups, master: h5py.File, frame: int) -> np.ndarray:
    """What the simulator sent as ``frame`` of the master's run, found by its train id (the bridges' trains go on
    from run to run)."""
    train = int(master["/entry/data/trainId"][frame]) - FIRST_TRAIN_ID
    return topology.simulator.train(train).data[frame % CELLS]


def test_a_group_that_cannot_take_the_run_is_named_and_reset_brings_both_back(topology: Groups) -> None:
    (topology.data / "r0004").mkdir()
    (topology.data / "r0004" / "RAW-R0004-AGIPD09-S00000.h5").write_bytes(b"")  # group 2's file of run 4
    detector = set_up(topology, 4, 2)
    detector.Prepare()
    wait_until(detector.State, lambda state: state == tango.DevState.FAULT, 60, "Prepare refused")
    assert f"receiver {GROUP_2} could not prepare" in detector.Status() and "AGIPD09" in detector.Status()
    detector.Reset()
    group = topology.proxy(GROUP_2)
    group.Reset()
    for proxy in (detector, group):
        wait_until(proxy.State, lambda state: state == tango.DevState.ON, 60, f"{proxy.name()} back")
    assert not (topology.data / "r0004" / "AGIPD-R0004-master.h5").exists()


@pytest.mark.parametrize(("device", "wrong", "reason"), [
    (GROUP_2, {"Modules": ["8", "16"]}, "Modules: modules must be a non-empty subset of 0...15, got [8, 16]"),
    (AGIPD, {"HitFinderDevice": ["spb/hitfinder/1"]}, "a module group (Modules) has no HitFinderDevice"),
], ids=["module-16", "hit-finder"])
def test_module_group_properties_that_cannot_work_are_refused_by_name(
        topology: Groups, device: str, wrong: dict[str, list[str]], reason: str) -> None:
    """As Jive sets them: in the database, then Init; FAULT with the reason (Status is Latin-1: "..." for "…"), and
    the right value brings it back."""
    db, proxy = topology.database(), topology.proxy(device)
    (name,) = wrong
    kept = db.get_device_property(device, name)[name]
    db.put_device_property(device, wrong)
    try:
        proxy.Init()
        assert proxy.State() == tango.DevState.FAULT and reason in proxy.Status(), proxy.Status()
    finally:
        if kept:
            db.put_device_property(device, {name: list(kept)})
        else:
            db.delete_device_property(device, name)
        proxy.Init()
    wait_until(proxy.State, lambda state: state == tango.DevState.ON, 60, f"{device} back")


def test_a_prepare_again_from_standby_re_arms_every_group_and_the_run_is_whole(topology: Groups) -> None:
    """Prepare twice: the first armed run ends on every group before the second is configured; the run written
    after Start holds every module of every frame, equal to the simulator's."""
    detector = set_up(topology, 5, 2)
    prepare(detector, 120)
    prepare(detector, 120)
    assert topology.proxy(GROUP_2).State() == tango.DevState.STANDBY
    detector.Start()
    assert wait_until_saved(detector, 60) == "Ready", detector.Status()
    assert detector.State() == tango.DevState.ON, detector.Status()
    with h5py.File(topology.data / "r0005" / "AGIPD-R0005-master.h5") as master:
        assert master["/entry/data/modules_present"][()].all()
        np.testing.assert_array_equal(master["/entry/data/data"][CELLS], truth_frame(topology, master, CELLS))

def test_a_group_killed_mid_run_is_named_in_alarm_and_the_master_holds_what_is_on_disk(topology: Groups) -> None:
    trains = 30  # 3 s at 10 Hz: the kill lands mid-run
    detector = set_up(topology, 6, trains)
    prepare(detector, 120)
    detector.Start()
    group = topology.proxy(GROUP_2)
    wait_until(lambda: group.trains_received, lambda n: n >= 3, 60, "group 2 receiving")
    os.kill(topology.servers["receiver-2"].pid, signal.SIGKILL)
    assert wait_until_saved(detector, 120) == "Ready", detector.Status()
    status = detector.Status()
    assert detector.State() == tango.DevState.ALARM, status
    assert f"{GROUP_2} (" in status and "did not finish the run" in status and "module-frames missing" in status
    assert detector.trains_received == trains  # its own group went on
    run_dir = topology.data / "r0006"
    with h5py.File(run_dir / "AGIPD-R0006-master.h5") as master:
        present = master["/entry/data/modules_present"][()].astype(bool)
        assert present.shape == (trains * CELLS, 16) and present[:, :8].all() and not present[-CELLS:, 8:].any()
        frame = trains * CELLS - 1
        data = master["/entry/data/data"][frame]
        np.testing.assert_array_equal(data[:8], truth_frame(topology, master, frame)[:8])
        assert not data[8:].any()  # the fill value where group 2's modules are missing
        assert master["/entry/data/written"][()].all()
    assert sorted(p.name for p in run_dir.glob("RAW-R0006-AGIPD0[0-7]-S*.h5")) == [
        f"RAW-R0006-AGIPD{m:02d}-S00000.h5" for m in range(8)]
    # The next run needs every group: its Prepare fails naming the dead one.
    set_up(topology, 7, trains)
    detector.Prepare()
    wait_until(detector.State, lambda state: state == tango.DevState.FAULT, 60, "Prepare refused")
    assert f"receiver {GROUP_2} refused Prepare" in detector.Status()


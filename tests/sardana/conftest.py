"""One Sardana bench for this package: an embedded Tango database, simulated EIGER and AGIPD, the detpipe server
registered from detpipe-sardana.yaml, and a Sardana server (Pool + MacroServer + Door) whose MacroPath and
PoolPath are detpipe's sardana/macros and sardana/controllers. Sardana takes 8-16 s to start,
so every test here shares one; every process is stopped by PID after the package's last test, before any
later test forks a device server from this process."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import tango
from sardana.tango.core.util import register_sardana

from detpipe.devices.cli.embedded_database import EmbeddedTangoDatabase
from detpipe.devices.cli.managed_process import ManagedProcess
from detpipe.devices.server import orb_endpoint
from detpipe.devices.tangodb.server_config import load_server_config, register
from detpipe.simulators import AgipdSimulator, EigerSimulator
from tests.sardana.macro_runner import MacroRunner
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
SERVER_CONFIG = Path(__file__).with_name("detpipe-sardana.yaml")
DETPIPE_INSTANCE, SARDANA_INSTANCE = "sardana-test", "detpipe_test"
EIGER, EIGER_WRITER, HIT_FINDER, POLICY = "test/eiger/1", "test/eigerwriter/1", "test/hitfinder/1", "test/datapolicy/1"
AGIPD, AGIPD_WRITER = "test/agipd/1", "test/agipdwriter/1"
POOL, DOOR = f"pool/{SARDANA_INSTANCE}/1", f"Door/{SARDANA_INSTANCE}/1"
SEED, HIT_FRACTION, AGIPD_CELLS = 11, 0.2, 8
SERVER_START_S = 120.0  # Sardana alone takes 8-16 s; a loaded 2-core CI box is slower
WORKERS_START_S = 240.0  # the first start on a fresh checkout compiles peakfinder8 in every worker


@dataclass(frozen=True, slots=True)
class SardanaBench:
    """What tests use: device proxies on the bench's database, the simulators' ground truth, the Door."""

    tango_host: str
    data_root: Path
    scan_dir: Path
    eiger_sim: EigerSimulator
    agipd_sim: AgipdSimulator
    macros: MacroRunner

    def device(self, name: str) -> tango.DeviceProxy:
        """A proxy by full name, so no TANGO_HOST of this test process (or an earlier test's) gets in the way."""
        return tango.DeviceProxy(f"tango://{self.tango_host}/{name}")


@pytest.fixture(scope="package")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SardanaBench]:
    root = tmp_path_factory.mktemp("sardana")
    data_root, scan_dir = root / "data", root / "scans"
    data_root.mkdir()
    scan_dir.mkdir()
    with ExitStack() as stack:
        db = stack.enter_context(EmbeddedTangoDatabase(root / "tango_database.db"))
        eiger = stack.enter_context(EigerSimulator("1M", seed=SEED, hit_fraction=HIT_FRACTION, paced=True))
        agipd = stack.enter_context(AgipdSimulator(cells=AGIPD_CELLS, seed=SEED, hit_fraction=0.1))
        client = db.client()
        register(client, load_server_config(SERVER_CONFIG, {
            "EIGER_REST_URL": eiger.rest_url, "EIGER_STREAM_ENDPOINT": eiger.stream_endpoint,
            "AGIPD_BRIDGE_ENDPOINT": agipd.endpoint, "DATA_ROOT": str(data_root)}))
        register_sardana(client, "Sardana", SARDANA_INSTANCE)
        client.put_device_property(f"MacroServer/{SARDANA_INSTANCE}/1", {
            "MacroPath": [str(REPO / "sardana" / "macros")], "EnvironmentDb": [str(root / "macroserver_env")]})
        client.put_device_property(POOL, {"PoolPath": [str(REPO / "sardana" / "controllers")]})
        env = {"TANGO_HOST": db.tango_host, "PYTHONUNBUFFERED": "1"}
        stack.enter_context(ManagedProcess([sys.executable, "-m", "detpipe.devices.cli", "server", DETPIPE_INSTANCE,
                                            "--host", "127.0.0.1"],
                                           ready_marker="Ready to accept request", env=env).start(SERVER_START_S))
        # Sardana prints its ready line at info level only.
        sardana = ManagedProcess(
            [str(Path(sys.executable).with_name("Sardana")), SARDANA_INSTANCE, "--log-level=info",
             "--without-log-file=True", "-ORBendPoint", orb_endpoint("127.0.0.1")], ready_marker="Ready to accept request", env=env, cwd=str(root))
        stack.enter_context(sardana.start(SERVER_START_S))
        macros = MacroRunner(tango.DeviceProxy(f"tango://{db.tango_host}/{DOOR}"))
        stack.callback(macros.close)
        bench = SardanaBench(db.tango_host, data_root, scan_dir, eiger, agipd, macros)
        for name, value in (("DetpipeDetector", EIGER), ("DetpipeAgipd", AGIPD), ("DetpipeDataDir", data_root),
                            ("ScanDir", scan_dir), ("ScanFile", "scans.h5")):
            macros.run("senv", name, str(value))
        finder = bench.device(HIT_FINDER)
        wait_until(finder.State, lambda s: s != tango.DevState.INIT, WORKERS_START_S, "HitFinder State")
        yield bench

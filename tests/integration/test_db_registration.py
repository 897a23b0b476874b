"""`detpipe db start`, `register` and `export` against a real embedded Tango database, and real `detpipe server`
processes reading what was registered (docs/tango_database.md)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import pytest
import tango

from detpipe.devices.cli.demo import config_file
from detpipe.devices.cli.embedded_database import EmbeddedTangoDatabase, free_tcp_port
from detpipe.devices.cli.managed_process import ManagedProcess
from detpipe.devices.state_wait import prepare, wait_until_saved
from detpipe.devices.tangodb.config_model import load_database_config
from detpipe.devices.tangodb.server_config import register
from detpipe.simulators import EigerSimulator
from tests.waiting import wait_until

DETPIPE = [sys.executable, "-m", "detpipe.devices.cli"]
DETECTOR, WRITER, HIT_FINDER = "eiger/detector/1", "eiger/writer/1", "eiger/hitfinder/1"
EIGER_VARIABLES = {"EIGER_REST_PORT": "8000", "EIGER_STREAM_PORT": "9999", "DATA_ROOT": "/data/demo"}
AGIPD_VARIABLES = {"AGIPD_BRIDGE_PORT": "4545", "DATA_ROOT": "/data/spb"}
# A writer-only server (starts in about a second) with memorized values, one of them a DevEnum given by its label;
# placeholders in names as well as values.
WRITER_CONFIG = """
servers:
  detpipe/${INSTANCE}:
    NexusWriter:
      test/${INSTANCE}/writer:
        properties:
          DataRoots: ["${DATA_ROOT}"]
        attribute_properties:
          saving_frame_per_file: {__value: ["50"]}
          saving_overwrite_policy: {__value: [Overwrite]}
"""
# A server detpipe does not run, with a class property for the export: its names pass through unchecked.
POOL_CONFIG = """
servers:
  Pool/roundtrip:
    Pool:
      pool/roundtrip/1:
        properties: {PoolPath: [/ctrl], DataRoot: [not a detpipe name]}
classes:
  Pool:
    properties: {Maintainer: ["detpipe tests"]}
"""
# The file: a misspelt class, property, memorized attribute and DevEnum label, so the writer's mandatory
# DataRoots is missing too; around them a valid device and a Pool server, which must not be written either.
TYPOS_CONFIG = """
servers:
  detpipe/typos:
    EigerDetecter:
      test/typos/detector:
        properties: {DetectorUrl: "http://dcu", StreamEndpoint: "tcp://dcu:9999", WriterDevice: test/typos/writer}
    NexusWriter:
      test/typos/writer:
        properties: {DataRoot: [/data], BuferFrames: 8}
        attribute_properties:
          saving_directry: {__value: [/data/x]}
          saving_overwrite_policy: {__value: [overwite]}
    HitFinder:
      test/typos/hitfinder:
        properties: {Workers: 0}
  Pool/typos:
    Pool:
      pool/typos/1:
        properties: {PoolPath: [/ctrl]}
"""


def detpipe(*args: str, tango_host: str) -> subprocess.CompletedProcess[str]:
    """The `detpipe` command line, as a user runs it with TANGO_HOST set."""
    return subprocess.run([*DETPIPE, *args], env={**os.environ, "TANGO_HOST": tango_host}, capture_output=True,
                          text=True, timeout=60, check=False)


def variables_args(variables: dict[str, str]) -> list[str]:
    return [arg for name, value in variables.items() for arg in ("--var", f"{name}={value}")]


class WriteRecordingDatabase:
    """A ``tango.Database`` that records every method it hands out that could write (put_, delete_, add_)."""

    def __init__(self, db: tango.Database) -> None:
        self._db = db
        self.writes: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith(("put_", "delete_", "add_")):
            self.writes.append(name)
        return getattr(self._db, name)


def accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedTangoDatabase]:
    with EmbeddedTangoDatabase(tmp_path_factory.mktemp("db") / "tango_database.db") as db:
        yield db


@pytest.fixture(scope="module")
def registered_demo(database: EmbeddedTangoDatabase) -> subprocess.CompletedProcess[str]:
    """`detpipe register config/demo-eiger.yaml` into the module's empty database."""
    run = detpipe("register", str(config_file("demo-eiger.yaml")), *variables_args(EIGER_VARIABLES),
                  tango_host=database.tango_host)
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def register_writer(database: EmbeddedTangoDatabase, instance: str, data_root: Path) -> str:
    """WRITER_CONFIG as server detpipe/<instance>; returns the writer's full name for a DeviceProxy."""
    config = data_root.parent / f"{instance}.yaml"
    config.write_text(WRITER_CONFIG)
    register(database.client(), load_database_config(config, {"INSTANCE": instance, "DATA_ROOT": str(data_root)}))
    return f"tango://{database.tango_host}/test/{instance}/writer"


def detpipe_server(database: EmbeddedTangoDatabase, instance: str) -> ManagedProcess:
    """`detpipe server <instance>` as a child process, ready once Tango says so; stopped by PID on exit."""
    return ManagedProcess([*DETPIPE, "server", instance, "--host", "127.0.0.1"], ready_marker="Ready to accept request",
                          env={"TANGO_HOST": database.tango_host})


@pytest.fixture
def root_a(tmp_path: Path) -> Path:
    (tmp_path / "root_a").mkdir()
    return tmp_path / "root_a"


def test_db_start_serves_a_database_until_interrupted(tmp_path: Path) -> None:
    port = free_tcp_port()
    command = ManagedProcess([*DETPIPE, "db", "start", "--port", str(port), "--sqlite", str(tmp_path / "lab.db")],
                             ready_marker="TANGO_HOST=")
    with command:
        assert f"TANGO_HOST=127.0.0.1:{port}\n" in command.output
        assert "DataBaseds/2" in tango.Database("127.0.0.1", port).get_server_list("*").value_string
        os.kill(command.pid, signal.SIGINT)  # what Ctrl-C sends
        assert command.wait() == 0
    wait_until(lambda: accepts_connections(port), lambda accepting: not accepting, what="database port")
    assert (tmp_path / "lab.db").exists()


def test_register_writes_devices_properties_and_memorized_values_from_the_yaml(
        database: EmbeddedTangoDatabase, registered_demo: subprocess.CompletedProcess[str]) -> None:
    db = database.client()
    assert "+ device eiger/detector/1 (EigerDetector) in detpipe/demo" in registered_demo.stdout
    listing = db.get_device_class_list("detpipe/demo").value_string  # device, class, device, class...
    assert dict(zip(listing[::2], listing[1::2])) == {
        DETECTOR: "EigerDetector", HIT_FINDER: "HitFinder", WRITER: "NexusWriter", "dserver/detpipe/demo": "DServer"}
    assert db.get_device_property(WRITER, ["DataRoots", "InstrumentName"]) == {
        "DataRoots": ["/data/demo"], "InstrumentName": ["detpipe demo beamline"]}
    assert db.get_device_property(DETECTOR, ["DetectorUrl", "StreamTimeout"]) == {
        "DetectorUrl": ["http://127.0.0.1:8000"], "StreamTimeout": ["10.0"]}
    assert db.get_device_attribute_property(DETECTOR, ["acq_expo_time"]) == {"acq_expo_time": {"__value": ["0.01"]}}
    # the file's DevEnum label, stored as Tango keeps a memorized DevEnum: its index
    assert db.get_device_attribute_property(DETECTOR, ["compression_type"]) == {"compression_type": {"__value": ["0"]}}


def test_a_second_register_of_the_same_file_changes_nothing_and_writes_nothing(
        database: EmbeddedTangoDatabase, registered_demo: subprocess.CompletedProcess[str]) -> None:
    db = WriteRecordingDatabase(database.client())
    config = load_database_config(config_file("demo-eiger.yaml"), EIGER_VARIABLES)
    assert register(db, config) == []  # type: ignore[arg-type]
    assert db.writes == []
    again = detpipe("register", str(config_file("demo-eiger.yaml")), *variables_args(EIGER_VARIABLES),
                    tango_host=database.tango_host)
    assert again.returncode == 0
    assert again.stdout.startswith("no changes")


def test_dry_run_prints_the_diff_and_writes_nothing(
        database: EmbeddedTangoDatabase, registered_demo: subprocess.CompletedProcess[str]) -> None:
    db = database.client()
    db.put_device_property(WRITER, {"InstrumentName": ["renamed in Jive"]})
    db.delete_device_attribute_property(DETECTOR, {"acq_expo_time": ["__value"]})
    args = ("register", str(config_file("demo-eiger.yaml")), *variables_args(EIGER_VARIABLES))
    dry = detpipe(*args, "--dry-run", tango_host=database.tango_host)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        '+ eiger/detector/1 attribute acq_expo_time __value = ["0.01"]',
        '~ eiger/writer/1 property InstrumentName: ["renamed in Jive"] -> ["detpipe demo beamline"]',
        "2 changes; dry run, nothing written",
    ]
    assert db.get_device_property(WRITER, ["InstrumentName"])["InstrumentName"] == ["renamed in Jive"]
    written = detpipe(*args, tango_host=database.tango_host)
    assert written.stdout.splitlines()[:2] == dry.stdout.splitlines()[:2]
    assert db.get_device_property(WRITER, ["InstrumentName"])["InstrumentName"] == ["detpipe demo beamline"]


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["write", "dry-run"])
def test_a_file_with_misspelt_names_exits_2_listing_each_with_its_correction_and_writes_nothing(
        database: EmbeddedTangoDatabase, tmp_path: Path, dry_run: list[str]) -> None:
    config = tmp_path / "typos.yaml"
    config.write_text(TYPOS_CONFIG)
    run = detpipe("register", str(config), *dry_run, tango_host=database.tango_host)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stdout == ""
    assert run.stderr.splitlines() == [
        "detpipe register: unknown class 'EigerDetecter' (device test/typos/detector) in server detpipe/typos: "
        "did you mean 'EigerDetector'?",
        "detpipe register: unknown property 'DataRoot' of NexusWriter (device test/typos/writer): "
        "did you mean 'DataRoots'?",
        "detpipe register: unknown property 'BuferFrames' of NexusWriter (device test/typos/writer): "
        "did you mean 'BufferFrames'?",
        "detpipe register: mandatory property 'DataRoots' of NexusWriter (device test/typos/writer) is missing",
        "detpipe register: unknown attribute 'saving_directry' of NexusWriter (device test/typos/writer): "
        "did you mean 'saving_directory'?",
        "detpipe register: test/typos/writer attribute saving_overwrite_policy: __value 'overwite' is none of its "
        "values: did you mean 'Overwrite'?",
        f"detpipe register: 6 problems in {config}; nothing written",
    ]
    db = database.client()
    assert list(db.get_server_list("*typos*").value_string) == []
    for device in ("test/typos/detector", "test/typos/writer", "test/typos/hitfinder", "pool/typos/1"):
        with pytest.raises(tango.DevFailed, match="DB_DeviceNotDefined|not defined"):
            db.get_device_info(device)


def test_register_leaves_alone_what_the_file_does_not_name(
        database: EmbeddedTangoDatabase, registered_demo: subprocess.CompletedProcess[str]) -> None:
    db = database.client()
    db.put_device_property(HIT_FINDER, {"MaskFile": ["/masks/jive.npy"]})
    db.put_device_attribute_property(WRITER, {"saving_prefix": {"__value": ["scan_$id"]}})
    config = load_database_config(config_file("demo-eiger.yaml"), EIGER_VARIABLES)
    assert register(db, config) == []
    assert db.get_device_property(HIT_FINDER, ["MaskFile"])["MaskFile"] == ["/masks/jive.npy"]
    assert db.get_device_attribute_property(WRITER, ["saving_prefix"])["saving_prefix"] == {"__value": ["scan_$id"]}


def test_export_round_trips_through_a_fresh_database(
        database: EmbeddedTangoDatabase, registered_demo: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    register(database.client(), load_database_config(config_file("demo-agipd.yaml"), AGIPD_VARIABLES))
    register_writer(database, "roundtrip", tmp_path / "data")
    (tmp_path / "pool.yaml").write_text(POOL_CONFIG)
    register(database.client(), load_database_config(tmp_path / "pool.yaml", {}))
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    exported = detpipe("export", "--server", "detpipe/*", "--server", "Pool/*", "-o", str(first),
                       tango_host=database.tango_host)
    assert exported.returncode == 0, exported.stderr
    demo = json.loads(first.read_text())["servers"]["detpipe/demo"]
    assert demo["EigerDetector"][DETECTOR]["attribute_properties"]["acq_expo_time"] == {"__value": ["0.01"]}
    assert demo["EigerDetector"][DETECTOR]["attribute_properties"]["compression_type"] == {"__value": ["bslz4"]}
    assert demo["AgipdDetector"]["spb/agipd1m/1"]["properties"]["BridgeEndpoint"] == ["tcp://127.0.0.1:4545"]
    assert json.loads(first.read_text())["classes"]["Pool"]["properties"] == {"Maintainer": ["detpipe tests"]}
    with EmbeddedTangoDatabase(tmp_path / "fresh.db") as fresh:
        registered = detpipe("register", str(first), tango_host=fresh.tango_host)
        assert registered.returncode == 0, registered.stderr
        assert detpipe("export", "--server", "detpipe/*", "--server", "Pool/*", "-o", str(second),
                       tango_host=fresh.tango_host).returncode == 0
    assert second.read_text() == first.read_text()


def test_a_property_changed_in_the_database_takes_effect_on_init(
        database: EmbeddedTangoDatabase, root_a: Path, tmp_path: Path) -> None:
    name = register_writer(database, "init", root_a)
    root_b = tmp_path / "root_b"
    root_b.mkdir()
    with detpipe_server(database, "init"):
        writer = tango.DeviceProxy(name)
        assert writer.saving_directory == str(root_a)
        with pytest.raises(tango.DevFailed, match="not below any DataRoots"):
            writer.saving_directory = str(root_b)
        database.client().put_device_property("test/init/writer", {"DataRoots": [str(root_b)]})  # as Jive does
        writer.Init()
        assert writer.saving_directory == str(root_b)
        writer.saving_directory = str(root_b)  # now inside DataRoots: accepted


def test_a_memorized_attribute_comes_back_after_a_server_restart(database: EmbeddedTangoDatabase, root_a: Path) -> None:
    name = register_writer(database, "restart", root_a)
    with detpipe_server(database, "restart"):
        writer = tango.DeviceProxy(name)
        assert writer.saving_frame_per_file == 50  # the values registered from the file
        assert writer.saving_overwrite_policy.name == "Overwrite"
        writer.saving_frame_per_file = 17
        writer.saving_overwrite_policy = "Abort"  # a DevEnum written by its label, as Taurus' drop-down does
    stored = database.client().get_device_attribute_property(
        "test/restart/writer", ["saving_frame_per_file", "saving_overwrite_policy"])
    assert stored == {"saving_frame_per_file": {"__value": ["17"]}, "saving_overwrite_policy": {"__value": ["0"]}}
    with detpipe_server(database, "restart"):
        writer = tango.DeviceProxy(name)
        assert (writer.saving_frame_per_file, writer.saving_overwrite_policy.name) == (17, "Abort")


# Blank values as each source writes them: YAML "" and " ", a blank list entry; Jive's " " (the C++ database
# stores an empty string as a space) is written below with put_device_property.
BLANKS_CONFIG = """
servers:
  detpipe/blanks:
    EigerDetector:
      test/blanks/detector:
        properties:
          DetectorUrl: "${REST_URL}"
          StreamEndpoint: "${STREAM_ENDPOINT}"
          WriterDevice: test/blanks/writer
          HitFinderDevice: ""
          DataPolicyDevice: " "
    NexusWriter:
      test/blanks/writer:
        properties:
          DataRoots: ["${DATA_ROOT}", ""]
"""


def test_blank_properties_registered_from_yaml_or_set_in_jive_mean_not_set(
        database: EmbeddedTangoDatabase, root_a: Path) -> None:
    config = root_a.parent / "blanks.yaml"
    config.write_text(BLANKS_CONFIG)
    with EigerSimulator("1M", seed=3, paced=False) as sim:
        variables = {"REST_URL": sim.rest_url, "STREAM_ENDPOINT": sim.stream_endpoint, "DATA_ROOT": str(root_a)}
        run = detpipe("register", str(config), *variables_args(variables), tango_host=database.tango_host)
        assert run.returncode == 0, run.stdout + run.stderr
        database.client().put_device_property("test/blanks/writer", {"InstrumentName": [" "]})  # as Jive stores ""
        with detpipe_server(database, "blanks"):
            detector = tango.DeviceProxy(f"tango://{database.tango_host}/test/blanks/detector")
            writer = tango.DeviceProxy(f"tango://{database.tango_host}/test/blanks/writer")
            writer.saving_directory = str(root_a)
            detector.acq_nb_frames = 3
            prepare(detector)
            detector.Start()
            assert wait_until_saved(detector, 60) == "Ready", detector.Status()
            assert writer.frames_written == 3
            with h5py.File(writer.master_file) as f:
                assert f["/entry/instrument/name"][()] == b"detpipe"  # the property's default, not " "

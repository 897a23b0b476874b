"""``detpipe server`` and ``DetpipeServer``: where it listens is the user's choice, given the way Tango users give
it; Starter can run it under the name it looks for."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest
import tango

from detpipe.devices.cli.embedded_database import EmbeddedTangoDatabase
from detpipe.devices.cli.main import parse_command_line
from detpipe.devices.cli.managed_process import ManagedProcess
from detpipe.devices.server import orb_endpoint

DETPIPE_SERVER = str(Path(sys.executable).with_name("DetpipeServer"))  # the console script of this venv


def test_the_interface_may_be_given_before_or_after_the_instance_and_tango_options_pass_through() -> None:
    for argv in (["server", "bl01", "--host", "127.0.0.1", "-v4"], ["server", "--host", "127.0.0.1", "bl01", "-v4"]):
        args = parse_command_line(argv)
        assert (args.instance, args.host, args.port, args.tango_args) == ("bl01", "127.0.0.1", 0, ["-v4"])


def test_a_host_that_is_not_an_ip_address_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        parse_command_line(["server", "bl01", "--host", "beamline-pc"])
    assert refused.value.code == 2
    assert "needs an IP address such as 127.0.0.1, got 'beamline-pc'" in capsys.readouterr().err


def test_options_other_commands_do_not_know_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_command_line(["demo", "--host", "127.0.0.1"])
    assert "unrecognized arguments: --host 127.0.0.1" in capsys.readouterr().err


@pytest.mark.parametrize(("host", "port", "endpoint"), [
    ("127.0.0.1", 0, "giop:tcp:127.0.0.1:"), ("10.0.3.7", 10100, "giop:tcp:10.0.3.7:10100"),
    ("::1", 0, "giop:tcp:[::1]:"), (None, 10100, "giop:tcp::10100"),
])
def test_the_omniorb_endpoint_names_one_interface_or_every_one(host: str | None, port: int, endpoint: str) -> None:
    assert orb_endpoint(host, port) == endpoint


def test_detpipe_server_help_names_the_instance_starter_passes() -> None:
    run = subprocess.run([DETPIPE_SERVER, "--help"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("usage: DetpipeServer") and "INSTANCE" in run.stdout


def test_detpipe_server_runs_the_instance_registered_under_its_own_name_as_starter_expects(tmp_path: Path) -> None:
    """Starter runs ``<server name> <instance>`` and then asks the database for ``dserver/<server name>/<instance>``:
    DetpipeServer must export exactly that admin device, with the devices registered under it."""
    with EmbeddedTangoDatabase(tmp_path / "tango_database.db") as database:
        db = database.client()
        writer = tango.DbDevInfo()
        writer.name, writer._class, writer.server = "lab/writer/1", "NexusWriter", "DetpipeServer/lab"
        db.add_device(writer)
        db.put_device_property(writer.name, {"DataRoots": [str(tmp_path)]})
        server = ManagedProcess([DETPIPE_SERVER, "lab", "--host", "127.0.0.1"], ready_marker="Ready to accept request",
                                env={"TANGO_HOST": database.tango_host})
        with server:
            admin = tango.DeviceProxy(f"tango://{database.tango_host}/dserver/DetpipeServer/lab")
            assert writer.name in admin.QueryDevice()[0]
            assert db.get_device_info("dserver/DetpipeServer/lab").pid == server.pid
            if platform.libc_ver()[0] == "glibc":  # restarted once with huge-page receive buffers, same PID
                environ = Path(f"/proc/{server.pid}/environ").read_bytes().split(b"\0")
                assert any(b.startswith(b"GLIBC_TUNABLES=") and b"glibc.malloc.hugetlb=1" in b for b in environ)

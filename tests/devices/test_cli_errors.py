"""Every user mistake in the `detpipe` command ends with one line on stderr saying what is wrong and what to do,
exit code 2, no traceback, and nothing it started left running; Ctrl-C stops everything too. Each mistake is
found before anything expensive starts, so each case takes about a second (the interpreter's start)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from detpipe.devices.cli.embedded_database import EmbeddedTangoDatabase, free_tcp_port

DETPIPE = [sys.executable, "-m", "detpipe.devices.cli"]
DETPIPE_SERVER = str(Path(sys.executable).with_name("DetpipeServer"))  # the console script of this venv
RUN_MARK = "DETPIPE_TEST_RUN"  # inherited by every process a run starts: how leftovers are found


def processes_of_run(mark: str) -> list[psutil.Process]:
    """Live processes whose environment carries ``mark``: whatever a run started and left behind."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(RUN_MARK) == mark and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def user_env(tango_host: str | None) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in ("TANGO_HOST", RUN_MARK)}
    return env if tango_host is None else {**env, "TANGO_HOST": tango_host}


def run_detpipe(argv: list[str], *, tango_host: str | None = None) -> subprocess.CompletedProcess[str]:
    """``detpipe ARGV`` (or ``DetpipeServer ...`` when argv starts with it) as a user runs it; fails the test if
    anything it started is still running once it has returned."""
    mark = uuid.uuid4().hex
    command = argv if argv[0] == DETPIPE_SERVER else [*DETPIPE, *argv]
    run = subprocess.run(command, capture_output=True, text=True, timeout=60,
                         env={**user_env(tango_host), RUN_MARK: mark})
    assert not processes_of_run(mark), f"left running: {[p.cmdline() for p in processes_of_run(mark)]}"
    return run


def assert_one_line_error(run: subprocess.CompletedProcess[str], *expected: str) -> str:
    lines = run.stderr.splitlines()
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert len(lines) == 1 and lines[0].strip(), run.stderr
    for text in expected:
        assert text in lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def tango_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedTangoDatabase]:
    """A database that answers and knows none of the instances the cases ask for."""
    with EmbeddedTangoDatabase(tmp_path_factory.mktemp("db") / "tango_database.db") as db:
        yield db


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """What the cases refer to as {tmp}: a policy with a YAML syntax error, a valid one, a valid database
    configuration, an earlier demo run."""
    (tmp_path / "broken.yaml").write_text("data_policy:\n  hits_only: [true\n")
    (tmp_path / "lab.yaml").write_text(
        "servers:\n  detpipe/lab:\n    NexusWriter:\n      lab/writer/1:\n        properties: {DataRoots: [/data]}\n")
    (tmp_path / "red.yaml").write_text("data_policy:\n  policy: red\n")
    (tmp_path / "earlier" / "data").mkdir(parents=True)
    return tmp_path


# (argv with {tmp}; TANGO_HOST: unset (None) or a port nobody serves ("down"); text the line must hold)
CASES = {
    "demo into an unwritable folder": (["demo", "--output", "/proc/nope"], None, "--output /proc/nope"),
    "demo of zero frames": (["demo", "--frames", "0", "--output", "{tmp}/run"], None, "--frames must be at least 1"),
    "demo of zero AGIPD trains": (["demo", "--detector", "agipd", "--trains", "0", "--output", "{tmp}/run"], None,
                                  "--trains must be at least 1"),
    "demo of three receivers": (["demo", "--receivers", "3", "--output", "{tmp}/run"], None,
                                "--receivers 3: the demo runs 1 or 2 receivers"),
    "AGIPD demo of four module groups": (["demo", "--detector", "agipd", "--receivers", "4", "--output", "{tmp}/run"],
                                         None, "config/demo-agipd-groups.yaml is the two-receiver topology"),
    "demo into a folder holding an earlier run": (["demo", "--output", "{tmp}/earlier"], None,
                                                  "already holds a demo run"),
    "reduce with a policy that is not YAML": (["reduce", "{tmp}/x_master.h5", "--policy", "{tmp}/broken.yaml", "-o",
                                               "{tmp}/out"], None, "broken.yaml is not valid YAML/JSON"),
    "reduce with a missing policy file": (["reduce", "{tmp}/x_master.h5", "--policy", "{tmp}/none.yaml", "-o",
                                           "{tmp}/out"], None, "none.yaml"),
    "reduce of a series that does not exist": (["reduce", "{tmp}/x_master.h5", "--policy", "{tmp}/red.yaml", "-o",
                                                "{tmp}/out"], None, "x_master.h5 does not exist"),
    "reduce of a pattern that matches nothing": (["reduce", "{tmp}/none/*_master.h5", "--policy", "{tmp}/red.yaml",
                                                 "-o", "{tmp}/out"], None, "no raw series matches"),
    "reduce on a Dask scheduler nobody runs": (["reduce", "{tmp}/red.yaml", "--policy", "{tmp}/red.yaml", "-o",
                                                "{tmp}/out", "--scheduler", "tcp://127.0.0.1:9"], None,
                                               "cannot reach the Dask scheduler at tcp://127.0.0.1:9"),
    "geom of a file that is no master": (["geom", "{tmp}/red.yaml"], None, "red.yaml is not a readable HDF5 file"),
    "geom of a folder without a run": (["geom", "{tmp}/earlier"], None, "is a folder without one AGIPD run master"),
    "recover of something that is no series": (["recover", "{tmp}/red.yaml"], None, "is neither a <stem>_master.h5"),
    "db start with its sqlite file in /proc": (["db", "start", "--port", "0", "--sqlite", "/proc/nope/t.db"], None,
                                               "--sqlite /proc/nope"),
    "server without TANGO_HOST": (["server", "bl01"], None, "TANGO_HOST is not set"),
    "register without TANGO_HOST": (["register", "{tmp}/lab.yaml"], None, "TANGO_HOST is not set"),
    "export without TANGO_HOST": (["export"], None, "TANGO_HOST is not set"),
    "server whose database is down": (["server", "bl01"], "down", "Tango database at TANGO_HOST=127.0.0.1:"),
}


@pytest.mark.parametrize(("argv", "where", "expected"), CASES.values(), ids=CASES.keys())
def test_a_user_mistake_ends_in_one_line_and_exit_2_with_nothing_left_running(
        files: Path, argv: list[str], where: str | None, expected: str) -> None:
    tango_host = f"127.0.0.1:{free_tcp_port()}" if where == "down" else None
    run = run_detpipe([arg.replace("{tmp}", str(files)) for arg in argv], tango_host=tango_host)
    assert_one_line_error(run, expected)


@pytest.mark.parametrize(("argv", "server"), [(["server", "nosuch"], "detpipe/nosuch"),
                                              ([DETPIPE_SERVER, "nosuch"], "DetpipeServer/nosuch")],
                         ids=["detpipe server", "DetpipeServer"])
def test_a_server_instance_nobody_registered_is_refused_in_one_line(
        tango_db: EmbeddedTangoDatabase, argv: list[str], server: str) -> None:
    run = run_detpipe(argv, tango_host=tango_db.tango_host)
    assert_one_line_error(run, f"server {server} is not registered", tango_db.tango_host, "detpipe register")


def test_the_traceback_is_shown_only_with_debug(files: Path) -> None:
    run = run_detpipe(["--debug", "demo", "--output", str(files / "earlier")])
    assert run.returncode == 1 and "Traceback" in run.stderr
    assert "UserError: --output" in run.stderr.splitlines()[-1]


@pytest.mark.parametrize(("argv", "error"), [
    (["demo", "--model", "4m"], "detpipe demo: error: argument --model: invalid choice: '4m'"),
    (["geom", "x_master.h5", "--clen=-1"], "detpipe geom: error: argument --clen: needs a positive number, got '-1'"),
    (["reduce", "x_master.h5", "--policy", "p.yaml", "-o", "out", "--workers", "0"],
     "detpipe reduce: error: argument --workers: needs a whole number of at least 1, got '0'"),
    (["db", "start", "--port", "-1"], "detpipe db start: error: argument --port: port -1 is not within 0 … 65535"),
    (["server", "bl01", "--port", "70000"],
     "detpipe server: error: argument --port: port 70000 is not within 0 … 65535"),
], ids=["demo model", "geom distance", "reduce workers", "db port", "server port"])
def test_an_invalid_value_is_argparse_usage_and_one_error_line(argv: list[str], error: str) -> None:
    run = run_detpipe(argv)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.startswith(f"usage: detpipe {argv[0]}")
    assert run.stderr.splitlines()[-1].startswith(error)


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("argv", [["db", "start", "--port", "{port}"], ["server", "bl01", "--port", "{port}"]],
                         ids=["db start", "server"])
def test_a_busy_port_is_refused_before_anything_claims_it_naming_the_port_and_its_holder(
        held_port: int, argv: list[str]) -> None:
    run = run_detpipe([arg.replace("{port}", str(held_port)) for arg in argv])
    line = assert_one_line_error(run, f"port {held_port} on ", "already in use")
    assert f"by PID {os.getpid()} " in line  # this test process holds it


@pytest.mark.parametrize(("argv", "up_line", "exit_code", "said"), [
    (["demo", "--frames", "5", "--model", "500K", "--output", "{tmp}/demo"], "starting device server", 130,
     "detpipe demo: interrupted; everything it started is stopped"),
    (["db", "start", "--port", "0", "--sqlite", "{tmp}/lab.db"], "TANGO_HOST=", 0,
     "detpipe db start: stopped; the database on 127.0.0.1:"),
], ids=["demo", "db start"])
def test_ctrl_c_stops_everything_the_command_started_and_says_so_in_one_line(
        tmp_path: Path, argv: list[str], up_line: str, exit_code: int, said: str) -> None:
    """The demo is interrupted once its database and simulator run and its device server is starting; for
    `db start`, Ctrl-C is the normal way to stop it (exit 0)."""
    mark = uuid.uuid4().hex
    command = subprocess.Popen([*DETPIPE, *(arg.replace("{tmp}", str(tmp_path)) for arg in argv)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**user_env(None), RUN_MARK: mark})
    try:
        assert command.stdout is not None
        for line in command.stdout:
            if up_line in line:
                break
        started = psutil.Process(command.pid).children(recursive=True)
        assert started, "nothing started yet: the test would prove nothing"
        command.send_signal(signal.SIGINT)  # what Ctrl-C sends
        _, err = command.communicate(timeout=60)
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()
    assert command.returncode == exit_code, err
    assert len(err.splitlines()) == 1 and err.startswith(said), err
    assert not processes_of_run(mark), f"left running: {[p.cmdline() for p in processes_of_run(mark)]}"


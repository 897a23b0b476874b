"""``detpipe sim eiger`` as a process: one ready line, serves, exits 0 on SIGTERM."""

from __future__ import annotations

import json
import re
import selectors
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest

from detpipe.simulators import EigerSimulator
from tests.simulators.eiger_sim_client import SimplonClient


def read_line(stream: IO[str], timeout_s: float) -> str:
    """One line from a child's pipe, or "" if none came within ``timeout_s`` (no test hangs on a mute child)."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        return stream.readline() if selector.select(timeout_s) else ""


@contextmanager
def simulator_process(command: list[str]) -> Iterator[subprocess.Popen[str]]:
    """A simulator CLI as a child with piped output; killed if the test leaves it running, its pipes closed."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()  # type: ignore[union-attr]
        process.stderr.close()  # type: ignore[union-attr]


READY = re.compile(r"^EIGER simulator ready rest=(http://127\.0\.0\.1:\d+) stream=(tcp://127\.0\.0\.1:\d+)$")


def test_cli_prints_one_ready_line_serves_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    truth = tmp_path / "truth.json"
    command = [
        sys.executable, "-m", "detpipe.simulators.eiger_cli", "--model", "500K", "--rest-port", "0",
        "--stream-port", "0", "--seed", "3", "--hit-fraction", "0.5", "--truth", str(truth), "--truth-frames", "5",
        "--api-version", "1.6.0", "--unpaced", "--distinct-frames", "2", "--difficulty", "realistic",
    ]
    with simulator_process(command) as process:
        line = read_line(process.stdout, timeout_s=30).strip()  # type: ignore[arg-type]
        match = READY.match(line)
        assert match, (line, process.stderr.read() if process.poll() is not None else "")  # type: ignore[union-attr]
        client = SimplonClient(match.group(1), version="1.6.0")
        assert client.request("GET", f"{match.group(1)}/detector/api/version/")["value"] == "1.6.0"
        assert client.value("detector", "config/description") == "Dectris EIGER2 Si 500K"
        document = json.loads(truth.read_text())
        assert document["seed"] == 3 and len(document["frames"]) == 5 and document["difficulty"] == "realistic"
        truth_peaks = [peak for frame in document["frames"] for peak in frame["peaks"]]
        assert truth_peaks and all(3.0 <= peak["snr"] <= 300.0 for peak in truth_peaks)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stdout.read() == ""  # type: ignore[union-attr]


def test_cli_exits_2_with_a_reason_when_its_port_is_taken(make_sim: Callable[..., EigerSimulator]) -> None:
    taken = make_sim().stream_endpoint.rsplit(":", 1)[1]
    command = [sys.executable, "-m", "detpipe.simulators.eiger_cli", "--rest-port", "0", "--stream-port", taken]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert finished.returncode == 2 and finished.stdout == ""
    assert "cannot start the EIGER simulator" in finished.stderr and taken in finished.stderr


@pytest.mark.parametrize(("options", "said"), [
    (["--rest-port", "-5"], "argument --rest-port: port -5 is not within 0 … 65535"),
    (["--rest-port", "0", "--stream-port", "0", "--model", "500K", "--truth", "/proc/nope.json"],
     "cannot write the truth file"),
], ids=["bad port", "unwritable truth file"])
def test_a_mistake_on_the_simulator_command_line_is_one_error_line_and_exit_2(options: list[str], said: str) -> None:
    finished = subprocess.run([sys.executable, "-m", "detpipe.devices.cli", "sim", "eiger", *options],
                              capture_output=True, text=True, timeout=60)
    assert finished.returncode == 2 and "Traceback" not in finished.stderr
    assert [line for line in finished.stderr.splitlines() if said in line and "error" in line.lower()]

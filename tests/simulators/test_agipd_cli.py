"""``detpipe sim agipd`` as a process: one ready line, serves trains, exits 0 on SIGTERM."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from detpipe.simulators import AgipdSimulator
from tests.simulators.agipd_bridge_helpers import COMBINED_CORRECTED, bridge_client, module_source
from tests.simulators.test_eiger_cli import read_line, simulator_process

READY = re.compile(r"^AGIPD simulator ready endpoint=(tcp://127\.0\.0\.1:\d+)$")
MODULE = "detpipe.simulators.agipd_cli"


def test_cli_prints_one_ready_line_serves_trains_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    constants = tmp_path / "constants.h5"
    command = [
        sys.executable, "-m", MODULE, "--port", "0", "--socket", "PUSH", "--product", "corrected", "--layout",
        "online", "--cells", "2", "--unpaced", "--first-train-id", "500", "--trains", "2", "--seed", "4",
        "--hit-fraction", "1", "--difficulty", "realistic", "--write-constants", str(constants),
    ]
    with simulator_process(command) as process:
        line = read_line(process.stdout, timeout_s=30).strip()  # type: ignore[arg-type]
        match = READY.match(line)
        assert match, (line, process.stderr.read() if process.poll() is not None else "")  # type: ignore[union-attr]
        with bridge_client(match.group(1), "PUSH") as client:
            trains = [client.next() for _ in range(2)]
        assert [meta[COMBINED_CORRECTED]["timestamp.tid"] for _, meta in trains] == [500, 501]
        assert trains[0][0][COMBINED_CORRECTED]["image.data"].shape == (16, 128, 512, 2)
        with AgipdSimulator(product="corrected", layout="online", cells=2, seed=4, hit_fraction=1.0,
                            difficulty="realistic") as same:
            np.testing.assert_array_equal(trains[1][0][COMBINED_CORRECTED]["image.gain"].transpose(3, 0, 2, 1),
                                          same.train(1).gain)
        with h5py.File(constants, "r") as f:
            assert f["relgain"].shape == (16, 3, 512, 128)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stdout.read() == ""  # type: ignore[union-attr]


def test_cli_exits_2_with_a_reason_when_its_port_is_taken() -> None:
    with AgipdSimulator(cells=1) as sim:
        taken = sim.endpoint.rsplit(":", 1)[1]
        finished = subprocess.run(
            [sys.executable, "-m", MODULE, "--port", taken], capture_output=True, text=True, timeout=60
        )
    assert finished.returncode == 2 and finished.stdout == ""
    assert "cannot start the AGIPD simulator" in finished.stderr and taken in finished.stderr


def test_cli_reply_delay_makes_a_slow_bridge_and_refuses_a_negative_one() -> None:
    """``--reply-delay`` is the slow-bridge deviation: each REP reply comes no sooner than that after its request."""
    command = [sys.executable, "-m", MODULE, "--port", "0", "--cells", "1", "--unpaced", "--reply-delay", "0.6"]
    with simulator_process(command) as process:
        match = READY.match(read_line(process.stdout, timeout_s=30).strip())  # type: ignore[arg-type]
        assert match
        with bridge_client(match.group(1), "REP") as client:
            for _ in range(2):
                asked = time.monotonic()
                client.next()
                assert time.monotonic() - asked >= 0.6
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    refused = subprocess.run([sys.executable, "-m", MODULE, "--port", "0", "--reply-delay", "-1"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "reply_delay_s must be >= 0, got -1.0" in refused.stderr


def test_cli_help_names_the_difficulty_presets_and_a_wrong_one_is_one_error_line_and_exit_2() -> None:
    helped = subprocess.run([sys.executable, "-m", MODULE, "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0
    assert all(f"{name}:" in " ".join(helped.stdout.split()) for name in ("easy", "realistic", "hard"))
    refused = subprocess.run([sys.executable, "-m", MODULE, "--port", "0", "--difficulty", "extreme"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and refused.stdout == "" and "Traceback" not in refused.stderr
    errors = [line for line in refused.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "argument --difficulty: invalid choice: 'extreme'" in errors[0], refused.stderr


def test_cli_group_ports_serve_each_module_group_on_its_own_bridge() -> None:
    """``--group-ports``: one bridge per module group, each sending train i with its own modules' per-module
    sources only (modules 0-7, then 8-15), the same train ids and pixels as the whole detector's train i."""
    command = [sys.executable, "-m", MODULE, "--group-ports", "0", "0", "--cells", "2", "--unpaced", "--seed", "5"]
    with simulator_process(command) as process:
        line = read_line(process.stdout, timeout_s=30).strip()  # type: ignore[arg-type]
        match = re.fullmatch(r"AGIPD simulator ready endpoint=(tcp://\S+) (tcp://\S+)", line)
        assert match, line
        received = []
        for endpoint in match.groups():
            with bridge_client(endpoint) as client:
                received.append([client.next() for _ in range(2)])
        with AgipdSimulator(cells=2, seed=5, sources="modules") as same:
            for group, modules in zip(received, (range(8), range(8, 16))):
                for k, (data, meta) in enumerate(group):
                    assert sorted(data) == sorted(module_source(m) for m in modules)
                    assert {m["timestamp.tid"] for m in meta.values()} == {same.train(k).train_id}
                    for m in modules:
                        np.testing.assert_array_equal(data[module_source(m)]["image.data"], same.train(k).data[:, m])
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def test_module_groups_need_per_module_sources_and_an_even_split() -> None:
    with pytest.raises(ValueError, match="3 module groups.*per-module sources"):
        AgipdSimulator(group_ports=[0, 0, 0], sources="combined")

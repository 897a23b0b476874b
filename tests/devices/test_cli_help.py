"""Every ``detpipe`` command answers ``--help`` (what a newcomer tries first) and ``detpipe --version`` names the
installed version, each in its own process as a user runs it."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

COMMANDS = [["demo"], ["sim", "eiger"], ["sim", "agipd"], ["reduce"], ["report"], ["geom"], ["recover"], ["server"],
            ["db", "start"], ["register"], ["export"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_explains_itself(command: list[str]) -> None:
    run = subprocess.run([sys.executable, "-m", "detpipe.devices.cli", *command, "--help"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert run.stdout.startswith(f"usage: detpipe {' '.join(command)}") and "options:" in run.stdout


def test_version_is_the_installed_one() -> None:
    run = subprocess.run([sys.executable, "-m", "detpipe.devices.cli", "--version"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == f"detpipe {importlib.metadata.version('detpipe')}"

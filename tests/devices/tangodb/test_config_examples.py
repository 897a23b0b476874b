"""The example files users copy (config/examples/) stay valid: every class, property and attribute name they
give detpipe's classes exists, and the policy file reads as the DataPolicy device and `detpipe reduce` read it."""

from __future__ import annotations

from pathlib import Path

import pytest

from detpipe.devices.cli.reduce_command import load_policy_file
from detpipe.devices.tangodb.config_model import load_database_config
from detpipe.pipeline.policy.reduction_params import Policy

EXAMPLES = Path(__file__).resolve().parents[3] / "config" / "examples"


@pytest.mark.parametrize(("name", "variables", "devices"), [
    ("eiger-production.yaml", {"DCU": "10.0.1.20"}, 4),
    ("agipd-production.yaml", {"BRIDGE": "10.253.0.51"}, 4),
    ("eiger-receivers-production.yaml", {"DCU": "10.0.1.20", "CONTROL": "10.0.1.30"}, 8),
    ("agipd-groups-production.yaml", {"BRIDGE_1": "10.253.0.51", "BRIDGE_2": "10.253.0.52"}, 4),
])
def test_a_production_example_registers_as_it_stands(name: str, variables: dict[str, str], devices: int) -> None:
    config = load_database_config(EXAMPLES / name, variables)  # raises on any unknown name or missing property
    assert len(config.devices) == devices
    assert {entry.server.split("/")[0] for entry in config.devices} == {"DetpipeServer"}


def test_the_example_policy_is_a_valid_raw_and_red_policy() -> None:
    params = load_policy_file(EXAMPLES / "policy.yaml")
    assert params.policy is Policy.RAW_RED and params.hits_only and params.mantissa_bits == 12

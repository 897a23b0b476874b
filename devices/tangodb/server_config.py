"""The two calls the demo and the tests use: read a server config file, write it to a Tango database.

The file format is described in ``config_model`` and docs/tango_database.md; what ``register`` changes (and
never changes) in ``sync``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .config_model import DatabaseConfig, DeviceEntry, load_database_config
from .sync import register

__all__ = ["DatabaseConfig", "DeviceEntry", "load_server_config", "register"]


def load_server_config(path: Path, variables: Mapping[str, str]) -> list[DeviceEntry]:
    """The devices of a config file (class properties, if any, come with ``load_database_config``)."""
    return list(load_database_config(path, variables).devices)

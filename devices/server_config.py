"""Server configuration files (config/*.yaml): which devices a server runs, with which properties.

Layout (dsconfig's shape, in YAML)::

    servers:
      detpipe/demo:                 # <executable>/<instance>
        NexusWriter:                # device class
          eiger/writer/1:           # device name
            properties: {DataRoots: ["${DATA_ROOT}"]}

``${NAME}`` placeholders are filled from a mapping (ports and paths known only at run time);
an unfilled placeholder is an error, never silently left in the database.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tango
import yaml

from detpipe.pipeline.errors import ConfigError


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    server: str
    device_class: str
    name: str
    properties: Mapping[str, list[str]]


def load_server_config(path: Path, variables: Mapping[str, str]) -> list[DeviceEntry]:
    """Read and validate a config file; every problem is reported at once."""
    try:
        text = string.Template(path.read_text()).substitute(variables)
    except KeyError as err:
        raise ConfigError([f"{path}: placeholder ${{{err.args[0]}}} has no value"]) from err
    raw = yaml.safe_load(text) or {}
    problems: list[str] = []
    entries: list[DeviceEntry] = []
    servers = raw.get("servers")
    if not isinstance(servers, dict) or not servers:
        raise ConfigError([f"{path}: needs a non-empty 'servers' mapping"])
    for server, classes in servers.items():
        if server.count("/") != 1:
            problems.append(f"server {server!r} must be <executable>/<instance>")
        for device_class, devices in (classes or {}).items():
            for name, spec in (devices or {}).items():
                if name.count("/") != 2:
                    problems.append(f"device {name!r} must be domain/family/member")
                props = (spec or {}).get("properties", {})
                entries.append(DeviceEntry(server, device_class, name, {k: _as_strings(v) for k, v in props.items()}))
    if problems:
        raise ConfigError(problems)
    return entries


def register(db: tango.Database, entries: list[DeviceEntry]) -> None:
    """Add servers, devices and properties to the database; re-running writes the same values."""
    for entry in entries:
        info = tango.DbDevInfo()
        info.name, info._class, info.server = entry.name, entry.device_class, entry.server
        db.add_device(info)
        if entry.properties:
            db.put_device_property(entry.name, dict(entry.properties))


def _as_strings(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]

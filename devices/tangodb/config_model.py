"""What a config file says should be in the Tango database: dsconfig's JSON shape, read from YAML or JSON.

Layout (as dsconfig's; JSON is YAML, so ``detpipe export`` output reads back unchanged)::

    servers:
      detpipe/demo:                           # <executable>/<instance>; or nested: detpipe: {demo: ...}
        NexusWriter:                          # device class
          eiger/writer/1:                     # device name, domain/family/member
            properties: {DataRoots: ["${DATA_ROOT}"], InstrumentName: "beamline"}
            attribute_properties:
              saving_frame_per_file: {__value: ["100"]}    # __value: the memorized value
    classes:                                  # optional class properties (dsconfig's "classes")
      Pool: {properties: {...}}

A scalar stands for a one-element list, and every value is kept as the string Tango stores (quote YAML
scalars whose exact spelling matters: ``0.010`` would become ``0.01``). A property set to ``null`` (or
``[]``) is one to delete. ``${NAME}`` placeholders in names and values are filled from a mapping (ports and
paths known only at run time); an unfilled one is an error, never silently left in the database. Only the
braced form is a placeholder, so ``saving_prefix`` values such as ``scan_$id`` pass through.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from detpipe.pipeline.core.errors import ConfigError

from .class_schema import schema_problems
from .enum_values import enum_value_problems, with_stored_enum_values

PropertyValues = Mapping[str, list[str] | None]
"""Property name -> the strings Tango stores; None = delete the property."""

DEVICE_KEYS = ("properties", "attribute_properties")
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# One part of a Tango device name (domain, family or member): no blanks, no wildcard, no control character.
_NAME_PART = re.compile(r"[A-Za-z0-9_.+\-]+")


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    """One device of one server; only the properties named here are ever compared or written."""

    server: str
    device_class: str
    name: str
    properties: PropertyValues
    attribute_properties: Mapping[str, PropertyValues] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """The devices and class properties of a config file, validated as a whole."""

    devices: tuple[DeviceEntry, ...]
    classes: Mapping[str, PropertyValues] = field(default_factory=dict)
    """Class name -> class properties. pytango reads only those a class declares with ``class_property``, and
    detpipe's classes declare none: this is for dsconfig files that describe other servers too."""

    @property
    def servers(self) -> list[str]:
        return sorted({entry.server for entry in self.devices})

    @classmethod
    def from_mapping(cls, raw: object, *, source: str = "config") -> DatabaseConfig:
        """Every problem of the document's shape at once (``ConfigError``); the names it
        gives detpipe's classes are checked by ``load_database_config``."""
        config, problems = cls.parsed(raw, source=source)
        if problems:
            raise ConfigError(problems)
        return config

    @classmethod
    def parsed(cls, raw: object, *, source: str = "config") -> tuple[DatabaseConfig, list[str]]:
        """What could be read, and every problem of the document's shape; what is read of a document with
        problems still carries its names, so that their problems are reported in the same run."""
        if not isinstance(raw, Mapping):
            raise ConfigError([f"{source}: needs a mapping with a 'servers' key"])
        problems = [f"{source}: unknown key {key!r} (servers, classes)" for key in raw.keys() - {"servers", "classes"}]
        servers = raw.get("servers")
        if not isinstance(servers, Mapping) or not servers:
            raise ConfigError([*problems, f"{source}: needs a non-empty 'servers' mapping"])
        devices = [entry for server, classes in _server_instances(servers, problems)
                   for entry in _devices(server, classes, problems)]
        classes = {str(name): _values(_section(spec, "properties", name, problems), name, problems)
                   for name, spec in _mapping(raw.get("classes") or {}, "classes", problems).items()}
        return cls(tuple(devices), classes), problems

    def to_dsconfig(self) -> dict[str, Any]:
        """The dsconfig JSON document (``json2tango`` reads it; all values lists of strings)."""
        servers: dict[str, Any] = {}
        for entry in self.devices:
            device: dict[str, Any] = {"properties": dict(entry.properties)}
            if entry.attribute_properties:
                device["attribute_properties"] = {attribute: dict(props)
                                                  for attribute, props in entry.attribute_properties.items()}
            servers.setdefault(entry.server, {}).setdefault(entry.device_class, {})[entry.name] = device
        document: dict[str, Any] = {"servers": servers}
        if self.classes:
            document["classes"] = {name: {"properties": dict(props)} for name, props in self.classes.items()}
        return document


def load_database_config(path: Path, variables: Mapping[str, str]) -> DatabaseConfig:
    """Read a YAML or JSON config file, fill its ``${NAME}`` placeholders and validate it: its shape, the
    class, property and attribute names it gives detpipe's classes (``class_schema``) and their memorized
    DevEnum values; every problem at once. Those values come back as the indices Tango stores (``enum_values``)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError([f"{path}: not UTF-8 text (byte {err.start}: {err.object[err.start:err.start + 1]!r})"]) from None
    except yaml.YAMLError as err:
        raise ConfigError([f"{path}: not YAML/JSON: {err}"]) from err
    missing: set[str] = set()
    filled = _fill(raw, variables, missing)
    if missing:
        raise ConfigError([f"{path}: placeholder ${{{name}}} has no value" for name in sorted(missing)])
    config, problems = DatabaseConfig.parsed(filled, source=str(path))
    problems += schema_problems(config) + enum_value_problems(config)
    if problems:
        raise ConfigError(problems)
    return with_stored_enum_values(config)


def _fill(node: Any, variables: Mapping[str, str], missing: set[str]) -> Any:
    """``node`` with placeholders replaced in every string, keys included; unknown names go to ``missing``."""
    if isinstance(node, str):
        def value_of(match: re.Match[str]) -> str:
            if match[1] not in variables:
                missing.add(match[1])
                return match[0]
            return str(variables[match[1]])
        return _PLACEHOLDER.sub(value_of, node)
    if isinstance(node, Mapping):
        return {_fill(key, variables, missing): _fill(value, variables, missing) for key, value in node.items()}
    if isinstance(node, list):
        return [_fill(item, variables, missing) for item in node]
    return node


def _server_instances(servers: Mapping[str, Any], problems: list[str]) -> Iterator[tuple[str, Any]]:
    """(``executable/instance``, its classes) for both dsconfig spellings of a server."""
    for key, body in servers.items():
        if "/" in str(key):
            if str(key).count("/") != 1:
                problems.append(f"server {key!r} must be <executable>/<instance>")
            yield str(key), body
        else:
            for instance, classes in _mapping(body, f"server {key}", problems).items():
                yield f"{key}/{instance}", classes


def _devices(server: str, classes: Any, problems: list[str]) -> Iterator[DeviceEntry]:
    for device_class, devices in _mapping(classes, f"server {server}", problems).items():
        for name, spec in _mapping(devices, f"class {device_class} of {server}", problems).items():
            parts = str(name).split("/")
            if len(parts) != 3 or not all(_NAME_PART.fullmatch(part) for part in parts):
                problems.append(f"device {name!r} must be domain/family/member of letters, digits and _ . + -")
            spec = _mapping(spec or {}, f"device {name}", problems)
            problems.extend(f"device {name}: unknown key {key!r} ({', '.join(DEVICE_KEYS)})"
                            for key in spec.keys() - set(DEVICE_KEYS))
            attributes = _mapping(spec.get("attribute_properties") or {}, f"{name} attribute_properties", problems)
            yield DeviceEntry(
                server, str(device_class), str(name),
                _values(_section(spec, "properties", name, problems), name, problems),
                {str(attr): _values(props, f"{name} attribute {attr}", problems) for attr, props in attributes.items()},
            )


def _section(spec: Any, key: str, owner: str, problems: list[str]) -> Any:
    return _mapping(spec or {}, owner, problems).get(key) or {}


def _values(props: Any, owner: str, problems: list[str]) -> dict[str, list[str] | None]:
    return {str(name): _as_strings(value, f"{owner} property {name}", problems)
            for name, value in _mapping(props, f"{owner} properties", problems).items()}


def _mapping(node: Any, what: str, problems: list[str]) -> Mapping[Any, Any]:
    if isinstance(node, Mapping):
        return node
    problems.append(f"{what} must be a mapping, got {node!r}")
    return {}


def _as_strings(value: Any, what: str, problems: list[str]) -> list[str] | None:
    """A property value as Tango stores it, one string per line. Only scalars and lists of scalars are
    values: a mapping or a nested list would be written as its Python spelling and break the server."""
    if value is None or value == []:
        return None
    items = value if isinstance(value, list) else [value]
    if bad := [item for item in items if not isinstance(item, (str, int, float, bool))]:
        problems.append(f"{what}: {bad[0]!r} is not a string, number or boolean (a list of them is fine)")
        return None
    strings = [str(item) for item in items]
    if bad_text := [text for text in strings if not text.isprintable()]:
        problems.append(f"{what}: {bad_text[0][:40]!r} contains control characters (NUL, newline…); "
                        "write one list item per line")
        return None
    return strings

"""SIMPLON parameters: typed, validated values with the GET/PUT reply shapes of the DECTRIS SIMPLON API documentation.

A ``ParameterTable`` is one ``config`` task (detector, stream, filewriter). Both API versions read and
write the same values; a parameter may exist in only one version (``incident_energy`` is 1.8 only) or
differ between them (``compression`` allows ``none`` only in 1.8), so definitions are per version.
A PUT replies with the sorted list of every key whose value it changed, the PUT key included, as the
DCU does; subclasses add the side effects in ``_derive``.
"""

from __future__ import annotations

import enum
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .simplon_errors import RequestRejected, UnknownResource

API_1_6 = "1.6.0"
API_1_8 = "1.8.0"
API_VERSIONS = (API_1_6, API_1_8)
BOTH_VERSIONS = frozenset(API_VERSIONS)
ONLY_1_8 = frozenset({API_1_8})
ONLY_1_6 = frozenset({API_1_6})


class ValueType(enum.Enum):
    BOOL = "bool"
    INT = "int"
    FLOAT = "float"
    STRING = "string"
    LIST = "list"
    DATE = "date"
    STRING_LIST = "string[]"


class AccessMode(enum.Enum):
    READ = "r"
    READ_WRITE = "rw"


@dataclass(frozen=True, slots=True)
class Parameter:
    """One key of a ``config`` or ``status`` task; ``min``/``max``/``allowed_values`` are enforced on PUT."""

    name: str
    value_type: ValueType
    access_mode: AccessMode = AccessMode.READ_WRITE
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    allowed_values: tuple[str, ...] | None = None
    versions: frozenset[str] = BOTH_VERSIONS

    def coerce(self, value: Any) -> Any:
        """The value as stored, or ``RequestRejected`` naming what is wrong and what would be accepted."""
        kind = self.value_type
        if kind is ValueType.BOOL:
            if not isinstance(value, bool):
                raise RequestRejected(f"{self.name} takes true or false, not {value!r}")
            return value
        if kind in (ValueType.INT, ValueType.FLOAT):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise RequestRejected(f"{self.name} takes a finite number, not {value!r}")
            if kind is ValueType.INT:
                if value != int(value):
                    raise RequestRejected(f"{self.name} takes an integer, not {value!r}")
                value = int(value)
            else:
                value = float(value)
            unit = f" {self.unit}" if self.unit else ""
            if self.min is not None and value < self.min:
                raise RequestRejected(f"{self.name} = {value} is below the minimum {self.min}{unit}")
            if self.max is not None and value > self.max:
                raise RequestRejected(f"{self.name} = {value} is above the maximum {self.max}{unit}")
            return value
        if kind in (ValueType.STRING, ValueType.DATE):
            if not isinstance(value, str):
                raise RequestRejected(f"{self.name} takes a string, not {value!r}")
            if self.allowed_values is not None and value not in self.allowed_values:
                raise RequestRejected(f"{self.name} = {value!r} is not one of {list(self.allowed_values)}")
            return value
        if not isinstance(value, list):
            raise RequestRejected(f"{self.name} takes a list, not {value!r}")
        return value

    def describe(self, value: Any) -> dict[str, Any]:
        """The GET reply body: value, value_type, access_mode, and min/max/unit/allowed_values where set."""
        reply: dict[str, Any] = {
            "value": value,
            "value_type": self.value_type.value,
            "access_mode": self.access_mode.value,
        }
        if self.min is not None:
            reply["min"] = self.min
        if self.max is not None:
            reply["max"] = self.max
        if self.unit is not None:
            reply["unit"] = self.unit
        if self.allowed_values is not None:
            reply["allowed_values"] = list(self.allowed_values)
        return reply


class ParameterTable:
    """The values of one ``config`` task, thread-safe; HTTP handler threads read and write concurrently."""

    def __init__(self, parameters: Iterable[Parameter], values: Mapping[str, Any]) -> None:
        self._by_version: dict[str, dict[str, Parameter]] = {v: {} for v in API_VERSIONS}
        for parameter in parameters:
            for version in parameter.versions:
                self._by_version[version][parameter.name] = parameter
        known = {name for table in self._by_version.values() for name in table}
        missing = known - values.keys()
        if missing:
            raise ValueError(f"no initial value for {sorted(missing)}")
        self._values = {name: values[name] for name in known}
        self._lock = threading.RLock()

    def keys(self, version: str) -> list[str]:
        return sorted(self._parameters(version))

    def __getitem__(self, name: str) -> Any:
        with self._lock:
            return self._values[name]

    def snapshot(self) -> dict[str, Any]:
        """Every value under every name, as one consistent copy (used when a series is armed)."""
        with self._lock:
            return dict(self._values)

    def get(self, name: str, version: str) -> dict[str, Any]:
        parameter = self._lookup(name, version)
        with self._lock:
            return parameter.describe(self._values[name])

    def put(self, name: str, value: Any, version: str) -> list[str]:
        parameter = self._lookup(name, version)
        if parameter.access_mode is AccessMode.READ:
            raise RequestRejected(f"{name} is read-only")
        stored = parameter.coerce(value)
        with self._lock:
            before = dict(self._values)
            self._values[name] = stored
            try:
                self._derive(name)
            except RequestRejected:
                self._values = before
                raise
            visible = self._parameters(version)
            return sorted({k for k in visible if self._values[k] != before[k]} | {name})

    def set_internal(self, name: str, value: Any) -> None:
        """Change a value the detector itself owns (``data_collection_date`` at arm), bypassing access rules."""
        with self._lock:
            self._values[name] = value

    def _derive(self, changed: str) -> None:
        """Recompute values that follow ``changed``; runs under the lock, may raise ``RequestRejected``."""

    def _parameters(self, version: str) -> dict[str, Parameter]:
        try:
            return self._by_version[version]
        except KeyError:
            raise UnknownResource(f"API version {version}", f"this detector serves {list(API_VERSIONS)}") from None

    def _lookup(self, name: str, version: str) -> Parameter:
        parameter = self._parameters(version).get(name)
        if parameter is None:
            raise UnknownResource(name, f"API {version} has no such key; GET …/keys lists them")
        return parameter


@dataclass(frozen=True, slots=True)
class StatusEntry:
    """A read-only ``status`` value computed on each GET (state, dropped, temperature …)."""

    name: str
    value_type: ValueType
    read: Callable[[], Any]
    unit: str | None = None
    versions: frozenset[str] = BOTH_VERSIONS


class StatusTable:
    def __init__(self, entries: Iterable[StatusEntry]) -> None:
        self._entries = {e.name: e for e in entries}

    def keys(self, version: str) -> list[str]:
        return sorted(n for n, e in self._entries.items() if version in e.versions)

    def get(self, name: str, version: str) -> dict[str, Any]:
        entry = self._entries.get(name)
        if entry is None or version not in entry.versions:
            raise UnknownResource(name, f"API {version} has no such status key; GET …/status/keys lists them")
        reply: dict[str, Any] = {
            "value": entry.read(),
            "value_type": entry.value_type.value,
            "access_mode": AccessMode.READ.value,
            "time": utc_timestamp(),
            "state": "normal",
        }
        if entry.unit is not None:
            reply["unit"] = entry.unit
        return reply


def utc_timestamp(moment: datetime | None = None) -> str:
    """RFC 3339 UTC with microseconds and a ``Z``, the form SIMPLON dates and V2 ``arm_date`` take."""
    moment = moment or datetime.now(timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

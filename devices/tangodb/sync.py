"""Registration as a diff: what a config file changes in a Tango database, shown before (or instead of) writing it.

Only what the file names is read and compared: each device's server and class, and the device, attribute and
class properties the file lists. Everything else in the database (other servers, devices of the same server
missing from the file, properties the file does not name, aliases) is never touched. So a second ``register``
of the same file plans no change and issues no write call, and a value an operator changed in Jive survives
unless the file names that property; then the file wins, and the diff says so before anything is written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import tango

from .config_model import DatabaseConfig, DeviceEntry, PropertyValues
from .property_scopes import AttributeProperties, OwnedProperties, PropertyScope


@dataclass(frozen=True, slots=True)
class AddDevice:
    """A device new to the database, or moved to another server or class (``was``: its old (server, class))."""

    device: str
    device_class: str
    server: str
    was: tuple[str, str] | None

    def line(self) -> str:
        if self.was is None:
            return f"+ device {self.device} ({self.device_class}) in {self.server}"
        return (f"~ device {self.device}: ({self.was[1]}) in {self.was[0]} -> "
                f"({self.device_class}) in {self.server}")

    def apply(self, db: tango.Database) -> None:
        info = tango.DbDevInfo()
        info.name, info._class, info.server = self.device, self.device_class, self.server
        db.add_device(info)


@dataclass(frozen=True, slots=True)
class PutProperty:
    scope: PropertyScope
    name: str
    old: tuple[str, ...] | None
    new: tuple[str, ...]

    def line(self) -> str:
        if self.old is None:
            return f"+ {self.scope} {self.name} = {_shown(self.new)}"
        return f"~ {self.scope} {self.name}: {_shown(self.old)} -> {_shown(self.new)}"

    def apply(self, db: tango.Database) -> None:
        self.scope.put(db, self.name, self.new)


@dataclass(frozen=True, slots=True)
class DeleteProperty:
    scope: PropertyScope
    name: str
    old: tuple[str, ...]

    def line(self) -> str:
        return f"- {self.scope} {self.name} (was {_shown(self.old)})"

    def apply(self, db: tango.Database) -> None:
        self.scope.delete(db, self.name)


Change = AddDevice | PutProperty | DeleteProperty


def plan_changes(db: tango.Database, config: DatabaseConfig) -> list[Change]:
    """The changes that make the database say what ``config`` says, in the order they must be applied
    (a device is added before its properties are written). Reads only; empty when nothing differs."""
    changes: list[Change] = []
    for entry in config.devices:
        changes += _device_changes(db, entry)
    for device_class, props in config.classes.items():
        changes += _property_changes(db, OwnedProperties(device_class, of_class=True), props)
    return changes


def apply_changes(db: tango.Database, changes: Iterable[Change]) -> None:
    """One database call per change; nothing at all for an empty plan."""
    for change in changes:
        change.apply(db)


def register(db: tango.Database, entries: Iterable[DeviceEntry] | DatabaseConfig) -> list[Change]:
    """Write ``entries`` (or a whole config, class properties included) to the database; returns what changed.

    Running it again with the same entries changes nothing and writes nothing.
    """
    config = entries if isinstance(entries, DatabaseConfig) else DatabaseConfig(tuple(entries))
    changes = plan_changes(db, config)
    apply_changes(db, changes)
    return changes


def _property_changes(db: tango.Database, scope: PropertyScope, wanted: PropertyValues) -> list[Change]:
    """Puts and deletes for the properties named in ``wanted``; values compare as exact lists of strings."""
    stored = scope.read(db, list(wanted)) if wanted else {}
    changes: list[Change] = []
    for name, values in wanted.items():
        old = tuple(stored.get(name) or ()) or None  # the database answers [] for a property it lacks
        if values is None:
            if old is not None:
                changes.append(DeleteProperty(scope, name, old))
        elif old != tuple(values):
            changes.append(PutProperty(scope, name, old, tuple(values)))
    return changes


def _device_changes(db: tango.Database, entry: DeviceEntry) -> list[Change]:
    registered = _registration(db, entry.name)
    changes: list[Change] = []
    if registered is None or _casefolded(registered) != _casefolded((entry.server, entry.device_class)):
        changes.append(AddDevice(entry.name, entry.device_class, entry.server, registered))
    changes += _property_changes(db, OwnedProperties(entry.name), entry.properties)
    for attribute, props in entry.attribute_properties.items():
        changes += _property_changes(db, AttributeProperties(entry.name, attribute), props)
    return changes


def _registration(db: tango.Database, device: str) -> tuple[str, str] | None:
    """(server, class) the database has for ``device``, None if it has none."""
    try:
        info = db.get_device_info(device)
    except tango.DevFailed as err:
        if err.args[0].reason == "DB_DeviceNotDefined":
            return None
        raise
    return info.ds_full_name, info.class_name


def _casefolded(names: tuple[str, str]) -> tuple[str, str]:
    """Tango compares server and class names without case; so does the diff."""
    return names[0].casefold(), names[1].casefold()


def _shown(values: Sequence[str]) -> str:
    return json.dumps(list(values), ensure_ascii=False)

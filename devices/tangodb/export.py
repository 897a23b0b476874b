"""``detpipe export``: what the database holds for detpipe servers, as dsconfig JSON that ``register`` reads back.

Everything stored is exported (not only what a config file named): every device property, every attribute
property including the memorized ``__value`` the servers wrote (a DevEnum's as its label, as a config file
gives it), and the properties of the classes these devices use. The servers' admin devices (``dserver/...``)
are Tango's own and left out, as dsconfig does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import tango

from .config_model import DatabaseConfig, DeviceEntry, PropertyValues
from .enum_values import with_enum_labels
from .property_scopes import AttributeProperties, OwnedProperties, PropertyScope

DETPIPE_SERVERS = "detpipe/*"


def export_servers(db: tango.Database, patterns: Sequence[str] = (DETPIPE_SERVERS,)) -> DatabaseConfig:
    """The devices of every server matching one of ``patterns`` (``detpipe/demo``, ``detpipe/*``)."""
    servers = sorted({server for pattern in patterns for server in db.get_server_list(pattern).value_string})
    devices = [device for server in servers for device in _server_devices(db, server)]
    device_classes = sorted({device.device_class for device in devices})
    classes = {name: props for name in device_classes if (props := _stored(db, OwnedProperties(name, of_class=True)))}
    return with_enum_labels(DatabaseConfig(tuple(devices), classes))


def dsconfig_json(config: DatabaseConfig) -> str:
    """Stable text (sorted keys) so that two exports of the same database compare equal as files."""
    return json.dumps(config.to_dsconfig(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _server_devices(db: tango.Database, server: str) -> list[DeviceEntry]:
    listing = db.get_device_class_list(server).value_string  # device, class, device, class…
    return [
        DeviceEntry(server, device_class, name, _stored(db, OwnedProperties(name)), _attribute_properties(db, name))
        for name, device_class in zip(listing[::2], listing[1::2])
        if device_class != "DServer"
    ]


def _attribute_properties(db: tango.Database, device: str) -> dict[str, PropertyValues]:
    attributes = tango.StdStringVector()
    db.get_device_attribute_list(device, attributes)
    stored = {name: _stored(db, AttributeProperties(device, name)) for name in attributes}
    return {name: props for name, props in stored.items() if props}


def _stored(db: tango.Database, scope: PropertyScope) -> PropertyValues:
    names = scope.names(db)
    return scope.read(db, names) if names else {}

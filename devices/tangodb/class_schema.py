"""What a config file may say about devices of detpipe's classes, read from the classes themselves.

A typo in a Tango database is silent: the server ignores a property or attribute name it does not declare, so
``DataRoot`` leaves ``DataRoots`` unset and the device refuses to start, and a misspelt class registers a device
no server runs. So every name a file gives for a detpipe class (the class itself, device properties, attributes
with attribute properties, class properties) is checked against the pytango declarations, with the closest
valid name suggested, and the mandatory device properties must be in the file. Classes of other servers
(Sardana's Pool, for instance) pass through unchecked: only their own server knows them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from difflib import get_close_matches
from typing import TYPE_CHECKING

from tango import CmdArgType
from tango.server import attribute, class_property, device_property

from ..server import DEVICE_CLASSES
from ..server_names import SERVER_NAME, STARTER_SERVER_NAME

if TYPE_CHECKING:  # config_model calls this module; the import the other way is for type hints only
    from .config_model import DatabaseConfig, DeviceEntry

# Every Tango device has these two, declared by Tango rather than by the class.
BUILTIN_ATTRIBUTES = ("State", "Status")
MEMORIZED_VALUE = "__value"
"""The attribute property in which Tango keeps a memorized attribute's last written value."""


@dataclass(frozen=True, slots=True)
class ClassSchema:
    """The names one device class declares (Tango spelling, case as declared)."""

    name: str
    properties: frozenset[str]
    mandatory: frozenset[str]
    attributes: frozenset[str]
    memorized: frozenset[str]
    class_properties: frozenset[str]
    enum_labels: Mapping[str, tuple[str, ...]]
    """Memorized DevEnum attribute -> its labels, in index order."""

    @classmethod
    def of(cls, device_class: type) -> ClassSchema:
        """Walks the ``__mro__`` as attribute lookup does: a name a subclass redefines is the subclass's."""
        seen: set[str] = set()
        props: dict[str, device_property] = {}
        attrs: dict[str, attribute] = {}
        class_props: set[str] = set()
        for klass in device_class.__mro__:
            for key, value in vars(klass).items():
                if key in seen:
                    continue
                seen.add(key)
                if isinstance(value, device_property):
                    props[key] = value
                elif isinstance(value, attribute):
                    attrs[value.attr_name or key] = value
                elif isinstance(value, class_property):
                    class_props.add(key)
        return cls(
            name=device_class.__name__,
            properties=frozenset(props),
            mandatory=frozenset(name for name, prop in props.items() if prop.mandatory),
            attributes=frozenset(attrs) | frozenset(BUILTIN_ATTRIBUTES),
            memorized=frozenset(name for name, attr in attrs.items() if attr.memorized),
            class_properties=frozenset(class_props),
            enum_labels={name: tuple(attr.att_prop.enum_labels.split(",")) for name, attr in attrs.items()
                         if attr.memorized and attr.attr_type is CmdArgType.DevEnum},
        )


def detpipe_schemas() -> dict[str, ClassSchema]:
    """The classes ``detpipe server`` runs, by name."""
    return {device_class.__name__: ClassSchema.of(device_class) for device_class in DEVICE_CLASSES}


def schema_problems(config: DatabaseConfig, schemas: Mapping[str, ClassSchema] | None = None) -> list[str]:
    """One line per name the file gets wrong, in file order; empty when every detpipe name is valid."""
    schemas = detpipe_schemas() if schemas is None else schemas
    problems: list[str] = []
    for entry in config.devices:
        schema = schemas.get(entry.device_class)
        if schema is not None:
            problems += _device_problems(entry, schema)
        elif _is_detpipe_server(entry.server):
            problems.append(f"unknown class {entry.device_class!r} (device {entry.name}) in server {entry.server}: "
                            f"{suggestion(entry.device_class, schemas, 'detpipe classes')}")
    for class_name, props in config.classes.items():
        if (schema := schemas.get(class_name)) is not None:
            problems += [f"unknown class property {name!r} of {class_name}: "
                         f"{suggestion(name, schema.class_properties, 'class properties')}"
                         for name in props if name not in schema.class_properties]
    return problems


def _device_problems(entry: DeviceEntry, schema: ClassSchema) -> list[str]:
    where = f"of {schema.name} (device {entry.name})"
    problems = [f"unknown property {name!r} {where}: {suggestion(name, schema.properties, 'properties')}"
                for name in entry.properties if name not in schema.properties]
    for name in sorted(schema.mandatory):
        if name not in entry.properties:
            problems.append(f"mandatory property {name!r} {where} is missing")
        elif not any(value.strip() for value in entry.properties[name] or ()):
            problems.append(f"mandatory property {name!r} {where} needs a value, not null or blank")
    for attr, props in entry.attribute_properties.items():
        if attr not in schema.attributes:
            # every attribute is a candidate (unit, format… may be set on any); the list shows the memorized ones
            problems.append(f"unknown attribute {attr!r} {where}: "
                            f"{suggestion(attr, schema.attributes, 'memorized attributes', listed=schema.memorized)}")
        elif MEMORIZED_VALUE in props and attr not in schema.memorized:
            problems.append(f"attribute {attr!r} {where} is not memorized, so its {MEMORIZED_VALUE} would never be "
                            f"read; memorized attributes: {', '.join(sorted(schema.memorized))}")
    return problems


def suggestion(name: str, valid: Collection[str], what: str, *, listed: Collection[str] | None = None) -> str:
    """"did you mean 'X'?" for the closest valid name (spelling or case), else the names in ``listed``
    (default: all of ``valid``), so that the line always says what to write instead."""
    by_folded = {candidate.casefold(): candidate for candidate in valid}
    if close := get_close_matches(name.casefold(), by_folded, n=1):
        return f"did you mean {by_folded[close[0]]!r}?"
    names = sorted(valid if listed is None else listed)
    return f"{what}: {', '.join(names)}" if names else f"it declares no {what}"


def _is_detpipe_server(server: str) -> bool:
    """A server whose executable is detpipe (or DetpipeServer) runs only detpipe's classes (Tango names ignore
    case)."""
    return server.split("/", 1)[0].casefold() in (SERVER_NAME.casefold(), STARTER_SERVER_NAME.casefold())

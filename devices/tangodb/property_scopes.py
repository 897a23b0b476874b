"""Where a Tango database keeps properties: a device, one attribute of a device, or a class.

One interface for the three, so that the registration diff (``sync``) and the export (``export``)
treat them alike; ``str(scope)`` is how a diff line names the place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import tango


class PropertyScope(Protocol):
    def read(self, db: tango.Database, names: Sequence[str]) -> dict[str, list[str]]:
        """The stored values of ``names``; a name the database lacks maps to [] or is left out."""
        ...

    def names(self, db: tango.Database) -> list[str]: ...

    def put(self, db: tango.Database, name: str, values: Sequence[str]) -> None: ...

    def delete(self, db: tango.Database, name: str) -> None: ...


@dataclass(frozen=True, slots=True)
class OwnedProperties:
    """Properties of one device, or of one class (``of_class``): the Database calls differ only in their names."""

    owner: str
    of_class: bool = False

    def __str__(self) -> str:
        return f"class {self.owner} property" if self.of_class else f"{self.owner} property"

    def read(self, db: tango.Database, names: Sequence[str]) -> dict[str, list[str]]:
        get = db.get_class_property if self.of_class else db.get_device_property
        return {name: list(values) for name, values in get(self.owner, list(names)).items()}

    def names(self, db: tango.Database) -> list[str]:
        listing = db.get_class_property_list(self.owner) if self.of_class else db.get_device_property_list(
            self.owner, "*")
        return list(listing.value_string)

    def put(self, db: tango.Database, name: str, values: Sequence[str]) -> None:
        put = db.put_class_property if self.of_class else db.put_device_property
        put(self.owner, {name: list(values)})

    def delete(self, db: tango.Database, name: str) -> None:
        delete = db.delete_class_property if self.of_class else db.delete_device_property
        delete(self.owner, [name])


@dataclass(frozen=True, slots=True)
class AttributeProperties:
    """unit, format, min_value… of one attribute as the database overrides them, and ``__value``: the last value
    written to a memorized attribute, which the server writes back to it at start-up."""

    device: str
    attribute: str

    def __str__(self) -> str:
        return f"{self.device} attribute {self.attribute}"

    def read(self, db: tango.Database, names: Sequence[str]) -> dict[str, list[str]]:
        stored = self._stored(db)
        return {name: list(stored[name]) for name in names if name in stored}

    def names(self, db: tango.Database) -> list[str]:
        return list(self._stored(db))

    def put(self, db: tango.Database, name: str, values: Sequence[str]) -> None:
        db.put_device_attribute_property(self.device, {self.attribute: {name: list(values)}})

    def delete(self, db: tango.Database, name: str) -> None:
        db.delete_device_attribute_property(self.device, {self.attribute: [name]})

    def _stored(self, db: tango.Database) -> dict[str, list[str]]:
        return dict(db.get_device_attribute_property(self.device, [self.attribute])[self.attribute])

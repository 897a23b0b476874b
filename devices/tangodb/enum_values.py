"""Memorized DevEnum values: labels in config files, indices in the Tango database.

Tango keeps a memorized DevEnum attribute's value as the index of its label (``compression_type`` ``bslz4`` is
stored as ``"0"``), and a server refuses to start the attribute from anything else (``API_AttrWrongMemValue``).
A file that says ``compression_type: {__value: [bslz4]}`` is what a person writes and reads, so ``register``
turns labels into indices before comparing with the database, and ``export`` turns them back. An index is
accepted too (older exports); anything else is an error naming the labels, caught with the other name checks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from .class_schema import MEMORIZED_VALUE, ClassSchema, detpipe_schemas, suggestion

if TYPE_CHECKING:  # config_model calls this module; the import the other way is for type hints only
    from .config_model import DatabaseConfig, DeviceEntry, PropertyValues


def enum_value_problems(config: DatabaseConfig, schemas: Mapping[str, ClassSchema] | None = None) -> list[str]:
    """One line per memorized value that is neither a label nor an index of its DevEnum attribute."""
    schemas = detpipe_schemas() if schemas is None else schemas
    problems = []
    for entry, attr, labels, value in _memorized_enum_values(config, schemas):
        if _index(value, labels) is None:
            problems.append(f"{entry.name} attribute {attr}: {MEMORIZED_VALUE} {value!r} is none of its "
                            f"values: {suggestion(value, labels, 'values')}")
    return problems


def with_stored_enum_values(config: DatabaseConfig, schemas: Mapping[str, ClassSchema] | None = None) -> DatabaseConfig:
    """``config`` with every memorized DevEnum label replaced by the index Tango stores (validate first)."""
    return _mapped(config, detpipe_schemas() if schemas is None else schemas,
                   lambda value, labels: str(_index(value, labels)))


def with_enum_labels(config: DatabaseConfig, schemas: Mapping[str, ClassSchema] | None = None) -> DatabaseConfig:
    """``config`` (as read from a database) with every stored DevEnum index shown as its label."""
    def label(value: str, labels: tuple[str, ...]) -> str:
        index = _index(value, labels)
        return labels[index] if index is not None else value  # a value the server would refuse stays visible
    return _mapped(config, detpipe_schemas() if schemas is None else schemas, label)


def _index(value: str, labels: tuple[str, ...]) -> int | None:
    """The label's index (case ignored, as people type), or the index itself; None for anything else."""
    folded = [label.casefold() for label in labels]
    if value.strip().casefold() in folded:
        return folded.index(value.strip().casefold())
    if value.strip().isdigit() and int(value) < len(labels):
        return int(value)
    return None


def _memorized_enum_values(config: DatabaseConfig, schemas: Mapping[str, ClassSchema]
                           ) -> Iterator[tuple[DeviceEntry, str, tuple[str, ...], str]]:
    for entry in config.devices:
        enums = schemas[entry.device_class].enum_labels if entry.device_class in schemas else {}
        for attr, props in entry.attribute_properties.items():
            if attr in enums:
                for value in props.get(MEMORIZED_VALUE) or ():
                    yield entry, attr, enums[attr], value


def _mapped(config: DatabaseConfig, schemas: Mapping[str, ClassSchema],
            convert: Callable[[str, tuple[str, ...]], str]) -> DatabaseConfig:
    def entry_converted(entry: DeviceEntry) -> DeviceEntry:
        enums = schemas[entry.device_class].enum_labels if entry.device_class in schemas else {}
        attributes: dict[str, PropertyValues] = {}
        for attr, props in entry.attribute_properties.items():
            values = props.get(MEMORIZED_VALUE)
            if attr in enums and values:
                props = {**props, MEMORIZED_VALUE: [convert(value, enums[attr]) for value in values]}
            attributes[attr] = props
        return dataclasses.replace(entry, attribute_properties=attributes)
    return dataclasses.replace(config, devices=tuple(entry_converted(entry) for entry in config.devices))

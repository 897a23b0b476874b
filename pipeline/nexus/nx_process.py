"""The pieces of detpipe's provenance convention (NeXus NXprocess) shared by every processing step's NXprocess:
the header (program, version, date, sequence_index), an NXparameters group with units, and a JSON NXnote
with its sha256, so each step's settings can be fed back and checked the same way."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

from ..core.errors import ConfigError
from ..core.software_version import detpipe_version

NOTE_TYPE = "application/json"


def json_text(document: Mapping[str, Any]) -> str:
    """One line in key order: no line ends to convert (NXnote text wants CRLF), and equal settings give
    equal bytes, hence equal checksums."""
    return json.dumps(document)


def create_process(parent: h5py.Group, name: str, *, sequence_index: int, date: str) -> h5py.Group:
    """``parent/name`` as an NXprocess with program ``detpipe`` (and its version), ``date`` (ISO 8601) and
    ``sequence_index`` (1-based order of the processing steps)."""
    process = parent.create_group(name)
    process.attrs["NX_class"] = "NXprocess"
    version = detpipe_version()
    process.create_dataset("program", data="detpipe").attrs["version"] = version
    process["version"] = version
    process["date"] = date
    process["sequence_index"] = np.int32(sequence_index)
    return process


def write_parameters(process: h5py.Group, values: Mapping[str, Any], units: Mapping[str, str]) -> None:
    """``parameters`` (NXparameters): one field per setting, with its unit where it has one."""
    parameters = process.create_group("parameters")
    parameters.attrs["NX_class"] = "NXparameters"
    for name, value in values.items():
        if isinstance(value, list) and not value:
            value = np.zeros(0, np.int64)  # an empty list has no HDF5 type
        field = parameters.create_dataset(name, data=value)
        if units.get(name):
            field.attrs["units"] = units[name]


def write_json_note(process: h5py.Group, name: str, document: Mapping[str, Any], *, description: str) -> str:
    """An NXnote holding ``document`` as JSON plus its sha256; returns the text written."""
    note = process.create_group(name)
    note.attrs["NX_class"] = "NXnote"
    text = json_text(document)
    note["type"] = NOTE_TYPE
    note["data"] = text
    note["description"] = description
    note["checksum"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    note["algorithm"] = "sha256"
    return text


def read_json_note(handle: h5py.File, path: str) -> Any:
    """The JSON document of the NXnote at ``path``; ``ConfigError`` when it does not match its checksum
    (the stored settings were edited after writing)."""
    note = handle[path]
    text = note["data"].asstr()[()]
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != note["checksum"].asstr()[()]:
        raise ConfigError([f"{handle.filename}: {path}/data does not match its sha256 checksum; "
                           "the stored settings were changed after writing"])
    return json.loads(text)

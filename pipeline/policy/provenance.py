"""The reduction step's record in every RED file: ``/entry/process_02`` (NeXus NXprocess).

It holds what is needed to trust and to redo the RED data: the program and version, the full data policy
and triage configuration as a JSON NXnote (``detpipe reduce RAW --config-from RED_FILE`` reads it back),
the original id of every kept frame with the reason it was kept, the retention metadata, the run's
metrics, and, once the raw files are closed, their names, sizes and sha256 checksums (``raw_data``).
Triage is step 1 (``process_01``) when it ran, so reduction is ``sequence_index`` 2, else 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray

from ..core.triage_params import TriageParams
from ..nexus.nx_process import create_process, read_json_note, write_json_note, write_parameters
from .event_selection import KEEP_REASON_LEGEND
from .reduction_params import UNITS, ReductionParams

PROCESS_PATH = "/entry/process_02"
NOTE_PATH = f"{PROCESS_PATH}/notes_01"
RETENTION_GROUP = "data_policy"  # the same NXcollection in the RED file's process and in the raw master
NOTE_DESCRIPTION = (
    "detpipe data policy and triage configuration: {'data_policy': ReductionParams.to_mapping(), 'triage': "
    "TriageParams.to_mapping() or null}. Reproduce the RED data from the raw files with "
    "'detpipe reduce RAW_MASTER --config-from THIS_FILE -o OUT'; the sha256 below guards the text."
)


@dataclass(frozen=True, slots=True)
class RawFile:
    """One raw file of the run as the catalogue sees it; ``name`` is relative to the run directory."""

    name: str
    size: int
    sha256: str


def reduction_document(params: ReductionParams, triage: TriageParams | None) -> dict[str, Any]:
    return {"data_policy": params.to_mapping(), "triage": None if triage is None else triage.to_mapping()}


def read_reduction_config(path: Path) -> tuple[ReductionParams, TriageParams | None]:
    """The policy and triage settings a RED file was made with; ``ConfigError`` if they were edited."""
    with h5py.File(path, "r") as handle:
        document = read_json_note(handle, NOTE_PATH)
    triage = document.get("triage")
    return (ReductionParams.from_mapping(document["data_policy"]),
            None if triage is None else TriageParams.from_mapping(triage))


def write_retention(parent: h5py.Group, params: ReductionParams) -> None:
    """Retention metadata (NXcollection ``data_policy``): how long raw stays, whether RED is archived, and
    the embargo date, as a catalogue or a data-management plan reads them."""
    group = parent.create_group(RETENTION_GROUP)
    group.attrs["NX_class"] = "NXcollection"
    group["policy"] = params.policy.value
    group.create_dataset("raw_retention_days", data=np.int32(params.raw_retention_days)).attrs["units"] = "day"
    group["red_archive"] = np.int8(params.red_archive)
    group["embargo_date"] = params.embargo_date


def write_reduction_process(handle: h5py.File, *, params: ReductionParams, triage: TriageParams | None, date: str,
                            kept_frames: NDArray[np.int64], keep_reasons: NDArray[np.int8],
                            metrics: Mapping[str, float], raw_master: str) -> None:
    """Creates ``/entry/process_02``; ``kept_frames[k]`` is the original id of RED frame k (Eiger: series index;
    AGIPD: ``(train_id << 16) | cell_id``), ``raw_master`` the raw master's name relative to the run directory."""
    process = create_process(handle.require_group("entry"), "process_02",
                             sequence_index=2 if triage is not None else 1, date=date)
    write_parameters(process, params.to_mapping() | {"rois": _rois_array(params)}, UNITS)
    write_json_note(process, "notes_01", reduction_document(params, triage), description=NOTE_DESCRIPTION)
    process.create_dataset("kept_frames", data=kept_frames.astype(np.int64)).attrs["long_name"] = (
        "original frame id of each RED frame, in RED order")
    reasons = process.create_dataset("keep_reason", data=keep_reasons.astype(np.int8))
    reasons.attrs["legend"] = KEEP_REASON_LEGEND
    write_retention(process, params)
    results = process.create_group("metrics")
    results.attrs["NX_class"] = "NXcollection"
    for name, value in metrics.items():
        results[name] = value
    process["raw_master"] = raw_master


def write_raw_checksums(handle: h5py.File, files: Sequence[RawFile]) -> None:
    """``raw_data`` (NXnote): the raw files this RED data was made from, with sizes and sha256 checksums."""
    note = handle[PROCESS_PATH].create_group("raw_data")
    note.attrs["NX_class"] = "NXnote"
    note["file_name"] = np.array([f.name for f in files], dtype=h5py.string_dtype())
    note["size"] = np.array([f.size for f in files], dtype=np.int64)
    note["checksum"] = np.array([f.sha256 for f in files], dtype=h5py.string_dtype())
    note["algorithm"] = "sha256"


def _rois_array(params: ReductionParams) -> NDArray[np.int64]:
    return np.array([roi.to_list() for roi in params.rois], dtype=np.int64).reshape(-1, 4)

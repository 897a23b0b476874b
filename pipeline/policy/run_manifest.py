"""The per-run JSON manifest a data catalogue ingests (ICAT-style flattened keys, ``<Entity>_<field>``).

Written last, after every file of the run is closed, from the files on disk: sizes and sha256 checksums
are measured, not carried over from counters, so a catalogue can check the manifest against the disk.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core.errors import TargetFileExists
from .provenance import RawFile
from .reduction_params import ReductionParams

_READ_BYTES = 8 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(_READ_BYTES):
            digest.update(block)
    return digest.hexdigest()


def describe_files(paths: Sequence[Path], relative_to: Path) -> list[RawFile]:
    """Name (relative to the run directory), size and sha256 of each file, measured now."""
    return [RawFile(_relative(p, relative_to), p.stat().st_size, sha256_of(p)) for p in paths]


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())


def manifest_document(*, dataset: str, start_date: str, end_date: str, detector: str, params: ReductionParams,
                      metrics: Mapping[str, float], raw_files: Sequence[RawFile],
                      red_files: Sequence[RawFile]) -> dict[str, Any]:
    """The manifest of one run: dataset, detector, policy, retention and metrics under flattened keys, plus the
    file list with roles."""
    document: dict[str, Any] = {
        "Dataset_name": dataset,
        "Dataset_startDate": start_date,
        "Dataset_endDate": end_date,
        "Dataset_size": sum(f.size for f in (*raw_files, *red_files)),
        "Dataset_fileCount": len(raw_files) + len(red_files),
        "InstrumentDetector_name": detector,
        "InstrumentDetector_frames": metrics["frames_in"],
        "DataPolicy_policy": params.policy.value,
        "DataPolicy_raw_retention_days": params.raw_retention_days,
        "DataPolicy_red_archive": params.red_archive,
        "DataPolicy_embargo_date": params.embargo_date,
    }
    document.update({f"DataPolicy_{name}": value for name, value in metrics.items()})
    document["files"] = (
        [{"path": f.name, "role": "raw", "size": f.size, "sha256": f.sha256} for f in raw_files]
        + [{"path": f.name, "role": "red", "size": f.size, "sha256": f.sha256} for f in red_files])
    return document


def write_manifest(path: Path, document: Mapping[str, Any]) -> None:
    """Creates ``path``; an existing manifest is never replaced (it describes files already catalogued)."""
    try:
        with path.open("x", encoding="utf-8") as sink:
            json.dump(document, sink, indent=1)
            sink.write("\n")
    except FileExistsError as err:
        raise TargetFileExists(path) from err


def frames_kept_of(manifest: Path) -> tuple[int, int]:
    """(frames kept, frames in) as a written manifest states them: what a reduction's one-line summary says."""
    document = json.loads(manifest.read_text(encoding="utf-8"))
    return int(document["DataPolicy_frames_kept"]), int(document["DataPolicy_frames_in"])

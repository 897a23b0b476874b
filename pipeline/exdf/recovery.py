"""Rebuild the master of an AGIPD run whose writer died (kill -9, power loss, a full disk).

The run master is written when the run ends (a triaged run's is created at the start, holding only the
triage groups until then); the module sequence files carry everything it is made of. Each is complete
EXDF up to its last flush (``ExdfModuleFile``): INDEX lists its trains with ``first``/``count``, the
per-frame ids follow the pixels. ``recover_run`` reads them back into the writer's own ``RunIndex`` and
writes the master ``AgipdNexusMaster.write`` would have, plus ``/entry/data/written`` (1 per frame with at
least one module on disk). A module whose file holds fewer trains than its siblings (flushed earlier, or
unreadable) reads as missing for the rest: ``modules_present`` says so per frame.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field, fields
from pathlib import Path

import h5py
import numpy as np

from ..core.saving_target import SavingParams, rewrite_h5
from ..core.train import AGIPD_MODULES, Product
from ..nexus.triage_process import PROCESS_PATH, TriageProcess, read_triage_params
from .index import RunIndex, TrainRecord
from .module_file import PRODUCT_PREFIX, RunMetadata
from .nexus_master import AgipdNexusMaster, ModuleFileExtent, master_file_name

_MODULE_FILE = re.compile(r"(?P<prefix>RAW|CORR)-R(?P<run>\d{4})-AGIPD(?P<module>\d{2})-S(?P<sequence>\d{5})\.h5")
_PRODUCTS = {prefix: product for product, prefix in PRODUCT_PREFIX.items()}
_DETECTOR_OF_SOURCE = re.compile(r"(?P<detector>.+)/(DET|CORR)/\d+CH")


@dataclass(frozen=True, slots=True)
class RecoveredRun:
    master: Path
    module_files: int
    trains: int
    frames: int
    frames_written: int  # frames with at least one module on disk
    unreadable: tuple[str, ...]
    module_frames_missing: int = 0  # (frame, module) pairs not on disk: the fill value in the VDS


@dataclass
class _ModuleFile:
    """What one sequence file holds, read back: its INDEX entries and the per-frame ids of its rows."""

    module: int
    sequence: int
    name: str
    source: str
    rows: int
    train_ids: np.ndarray
    timestamps: np.ndarray
    first: np.ndarray
    count: np.ndarray
    pulse_ids: np.ndarray
    cell_ids: np.ndarray


@dataclass
class _Sequence:
    files: dict[int, _ModuleFile] = field(default_factory=dict)  # by module


def is_agipd_run(directory: Path) -> bool:
    return directory.is_dir() and any(_MODULE_FILE.fullmatch(p.name) for p in directory.iterdir())


def recover_run(directory: Path, *, instrument_name: str | None = None, source_name: str | None = None) -> RecoveredRun:
    """Rebuild the run master in ``directory`` from its module sequence files; the instrument and source names
    are the writer's defaults unless given (they were configured in the writer that died)."""
    sequences: dict[int, _Sequence] = defaultdict(_Sequence)
    unreadable: list[str] = []
    product, run, metadata = None, None, None
    for path in sorted(directory.iterdir()):
        match = _MODULE_FILE.fullmatch(path.name)
        if match is None:
            continue
        product, run = _PRODUCTS[match["prefix"]], int(match["run"])
        try:
            with h5py.File(path, "r") as handle:
                module_file = _read_module_file(handle, int(match["module"]), int(match["sequence"]), path.name)
                metadata = metadata or _metadata(handle, run)
        except (OSError, KeyError, ValueError) as err:
            unreadable.append(f"{path.name}: {err}")
            continue
        sequences[module_file.sequence].files[module_file.module] = module_file
    if product is None or run is None:
        raise FileNotFoundError(f"no AGIPD module sequence files (RAW-/CORR-R<run>-AGIPD<mm>-S<seq>.h5) in {directory}")
    index = RunIndex(trains_per_sequence=max((_train_count(s) for s in sequences.values()), default=1) or 1)
    extents = [ModuleFileExtent(f.module, f.sequence, f.name, f.source, f.rows)
               for s in sequences.values() for f in s.files.values()]
    for number in sorted(sequences):
        _index_sequence(index, number, sequences[number])
    master = directory / master_file_name(run)
    defaults = {f.name: f.default for f in fields(SavingParams)}
    names = (instrument_name or str(defaults["instrument_name"]), source_name or str(defaults["source_name"]))
    _write_master(master, index, product, extents, metadata or RunMetadata(proposal=0, run=run), names)
    present = index.modules_present_per_frame()
    with rewrite_h5(master) as handle:
        data = handle["/entry/data"]
        written = data.create_dataset("written", data=present.any(axis=1).astype(np.uint8))
        written.attrs["long_name"] = "1 = at least one module of the frame on disk, 0 = lost"
    return RecoveredRun(master, len(extents), len(index.trains), index.frames, int(present.any(axis=1).sum()),
                        tuple(unreadable), int(present.size - np.count_nonzero(present)))


def _read_module_file(handle: h5py.File, module: int, sequence: int, name: str) -> _ModuleFile:
    sources = _sources(handle)
    if len(sources) != 1:
        raise ValueError(f"{len(sources)} image sources, expected one")
    (source,) = sources
    image = handle[f"INSTRUMENT/{source}/image"]
    count = handle[f"INDEX/{source}/image/count"][()]
    first = handle[f"INDEX/{source}/image/first"][()]
    trains = min(len(count), len(first), len(handle["INDEX/trainId"]), len(handle["INDEX/timestamp"]))
    rows = min(int(image["data"].shape[0]), len(image["trainId"]), len(image["cellId"]), len(image["pulseId"]))
    # A train counts only if its rows are all on disk (the pixels of the train being written may not be).
    complete = [t for t in range(trains) if first[t] + count[t] <= rows]
    trains = complete[-1] + 1 if complete else 0
    return _ModuleFile(module, sequence, name, source, rows,
                       train_ids=handle["INDEX/trainId"][:trains], timestamps=handle["INDEX/timestamp"][:trains],
                       first=first[:trains], count=count[:trains],
                       pulse_ids=np.ravel(image["pulseId"][:rows]), cell_ids=np.ravel(image["cellId"][:rows]))


def _sources(handle: h5py.File) -> list[str]:
    """``<detector>/DET/<m>CH0:xtdf`` (or the CORR name): the one INSTRUMENT source that has an ``image`` group."""
    found: list[str] = []
    handle["INSTRUMENT"].visit(lambda p: found.append(p[: -len("/image")]) if p.endswith("/image") else None)
    return found


def _metadata(handle: h5py.File, run: int) -> RunMetadata:
    group = handle["METADATA"]

    def text(name: str) -> str:
        return group[name][0].decode() if name in group else ""

    proposal = int(group["proposalNumber"][0]) if "proposalNumber" in group else 0
    return RunMetadata(proposal=proposal, run=run, run_type=text("runType"), sample=text("sample"))


def _train_count(sequence: _Sequence) -> int:
    return max((len(f.train_ids) for f in sequence.files.values()), default=0)


def _index_sequence(index: RunIndex, number: int, sequence: _Sequence) -> None:
    """Commit the sequence's trains in order; a module is present in a train where its file lists the train
    with rows. The longest file gives the train list (every module file lists every train of its sequence)."""
    files = sorted(sequence.files.values(), key=lambda f: -len(f.train_ids))
    if not files:
        return
    reference = files[0]
    for t, train_id in enumerate(reference.train_ids):
        present = [False] * AGIPD_MODULES
        frames, ids = 0, None
        for f in files:
            if t < len(f.train_ids) and f.train_ids[t] == train_id and f.count[t] > 0:
                present[f.module] = True
                frames = int(f.count[t])
                first = int(f.first[t])
                if ids is None:
                    ids = (f.pulse_ids[first:first + frames], f.cell_ids[first:first + frames])
        if ids is None:
            continue  # no module of this train reached the disk
        record = TrainRecord(train_id=int(train_id), timestamp_ns=int(reference.timestamps[t]), sequence=number,
                             first_frame=index.frames, frames=frames, modules_present=tuple(present))
        index.commit_ids(record, *ids)


def _write_master(master: Path, index: RunIndex, product: Product, extents: list[ModuleFileExtent],
                  metadata: RunMetadata, names: tuple[str, str]) -> None:
    """A triaged run's master exists (created at the start): it is completed, keeping its triage rows;
    otherwise it is written anew."""
    triage = None
    if master.exists():
        with h5py.File(master, "r") as handle:
            if "/entry/data/data" in handle:
                raise FileExistsError(f"{master.name} is complete already (it has /entry/data/data)")
            if PROCESS_PATH in handle:
                triage = TriageProcess(read_triage_params(handle), master)
    detector = next((m["detector"] for e in extents if (m := _DETECTOR_OF_SOURCE.match(e.source))), "")
    AgipdNexusMaster(master, triage=triage).write(
        index, product, extents, metadata=metadata, detector=detector, overwrite=True,
        instrument_name=names[0], source_name=names[1])

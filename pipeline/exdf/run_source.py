"""An archived AGIPD run read back as the items a stream receiver emits, so ``detpipe reduce`` runs the online
stages over a run offline: ``SeriesStart``, then every ``Train`` in run order, then ``EndOfSeries``. The AGIPD
counterpart of nxmx_frame_source.py, for the run directories ExdfWriter writes (EuXFEL data format, exdf_writer.py).

A ``Train`` carries pixels, not chunks, so trains are decompressed here. A rewrite through ``ExdfWriter`` in the
run's compression still stores byte-identical chunks: ``PixelCompression.chunk`` is a pure function of the pixels. Give
the writer ``trains_per_sequence``, ``detector`` and ``proposal`` from here and the run number, and the files
split and name the same way. Memory is one train (4 MiB per raw frame of 16 modules: ~1.4 GB at 352 cells), the
run's INDEX tables (a few bytes per train and module) and ``triage_block_rows`` triage rows (stored_triage.py).

What a train carries, and what does NOT round-trip:
- A module absent from a train (``count`` 0 in its file's INDEX, or no file of that module in the sequence)
  reads as the master VDS's fill values (0 in data and gain, every bit in mask), so a train equals the master's
  frames; ``modules_present`` says which. The writer stores nothing for an absent module either way.
- Cell and pulse ids are the first present module's (the writer stores the same ids in every module). A train
  no module holds keeps its frames and ids only when the master lists them (``/entry/data``), else it has
  0 frames; later trains' triage rows still line up, since run frames are counted as the master counts them.
- ``timestamp_s`` = INDEX/timestamp / 1e9 (0.0 without one); ``received_s`` 0.0; ``FrameTriage.time_ms`` 0.0.
- ``SeriesStart``: ``config`` None (EXDF stores no detector config); ``received_s`` = ``/entry/start_time``
  (the first train's time, to the ms); METADATA's ``runType``/``sample`` and the file dates are not carried.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers filter 32008, for runs written with bslz4 pixels
import numpy as np

from ..core.series import EndOfSeries, EndReason, SeriesStart
from ..core.stage import Item
from ..core.train import AGIPD_MODULES, Product, Train
from ..nexus.stored_triage import StoredTriage
from ..nexus.triage_process import PROCESS_PATH, read_triage_params
from .module_file import PIXEL_KEYS
from .nexus_master import VDS_FILL, master_file_name

_MODULE_FILE = re.compile(r"(?P<prefix>RAW|CORR)-R(?P<run>\d{4})-AGIPD(?P<module>\d{2})-S(?P<sequence>\d{5})\.h5")
_MASTER_FILE = re.compile(r"AGIPD-R(?P<run>\d{4})-master\.h5")
_PRODUCT_OF_PREFIX = {"RAW": Product.RAW, "CORR": Product.CORRECTED}
# METADATA/dataSources/dataSourceId of a module's pixels; older corrected files reuse the raw name (EuXFEL data format).
_SOURCE_ID = re.compile(r"INSTRUMENT/(?P<source>[^/]+/(?:DET|CORR)/\d+CH\d+:\w+)/image")
_MASTER_IDS = "/entry/data"  # trainId/cellId/pulseId per run frame (nexus_master.py)


class NotAnExdfRun(ValueError):
    def __init__(self, directory: Path, reason: str) -> None:
        super().__init__(f"{directory} is not one AGIPD EXDF run ({reason}); pass a run directory as ExdfWriter "
                         "writes it: {RAW|CORR}-R<run>-AGIPD<mm>-S<sequence>.h5 files of one run and one product")
        self.directory, self.reason = directory, reason


class InconsistentTrain(ValueError):
    def __init__(self, path: Path, train_id: int, reason: str) -> None:
        super().__init__(f"train {train_id} in {path}: {reason}; a Train has one frame count for all modules, "
                         "as ExdfWriter writes them: select the modules that agree (extra-data) and write those")
        self.path, self.train_id, self.reason = path, train_id, reason


@dataclass(frozen=True, slots=True)
class _ModuleIndex:
    """INDEX of one module file, trailing zero train ids (padding, EuXFEL data format docs) cut off."""

    source: str
    train_ids: np.ndarray  # uint64 (trains,)
    timestamps_ns: np.ndarray  # uint64 (trains,), 0 without INDEX/timestamp
    first: np.ndarray  # int64 (trains,): first row of the module's frames of each train
    count: np.ndarray  # int64 (trains,): 0 = the module is absent from that train

    @property
    def detector(self) -> str:
        """The Karabo device domain, e.g. ``SPB_DET_AGIPD1M-1`` of ``SPB_DET_AGIPD1M-1/DET/0CH0:xtdf``."""
        return self.source.partition("/")[0]


@dataclass(frozen=True, slots=True)
class _SequenceIndex:
    """What the module files of one sequence list: the union of their trains (increasing, as EXDF lists them)."""

    files: Mapping[int, tuple[Path, str]]  # module -> (file, source)
    train_ids: np.ndarray  # uint64 (trains,)
    timestamps_ns: np.ndarray  # uint64 (trains,)
    first: np.ndarray  # int64 (16, trains)
    count: np.ndarray  # int64 (16, trains)
    frames: np.ndarray  # int64 (trains,): the present modules' count, or the master's for a train none holds


class ExdfRunSource:
    """The trains of one EXDF run directory, sequence by sequence, for the offline pipeline.

    The constructor checks the names (one run, one product, at least one module file) and reads the first
    module file's INDEX and source; the other files' INDEX is read once, when first needed (totals or
    ``trains()``); pixels, ids and triage rows are read a train at a time while iterating.
    """

    def __init__(self, run_directory: Path, *, triage_block_rows: int = 1024) -> None:
        self.run_directory = directory = Path(run_directory)
        self.triage_block_rows = triage_block_rows
        if not directory.exists():
            raise FileNotFoundError(f"{directory} does not exist; pass a run directory (r<run> as ExdfWriter names it)")
        if not directory.is_dir():
            raise NotAnExdfRun(directory, "a file, not a directory")
        names = sorted(path.name for path in directory.iterdir())
        modules = [found for name in names if (found := _MODULE_FILE.fullmatch(name))]
        if not modules:
            raise NotAnExdfRun(directory, "no AGIPD module files")
        if len(prefixes := sorted({found["prefix"] for found in modules})) > 1:
            raise NotAnExdfRun(directory, f"it mixes products {prefixes}")
        masters = [found for name in names if (found := _MASTER_FILE.fullmatch(name))]
        if len(runs := sorted({int(found["run"]) for found in modules + masters})) > 1:
            raise NotAnExdfRun(directory, f"it holds several runs {runs}")
        self.run_number: int = runs[0]  # the series id of every item
        self.product: Product = _PRODUCT_OF_PREFIX[prefixes[0]]  # RAW- or CORR- files
        self._module_files = {(int(f["sequence"]), int(f["module"])): directory / f.string for f in modules}
        master = directory / master_file_name(self.run_number)
        self.master: Path | None = master if master.is_file() else None
        first_file = self._module_files[min(self._module_files)]
        first = _read_module_index(first_file, directory)
        # What a rewrite must give ExdfWriter (with the run number) to write the same file names and splits.
        self.detector: str = first.detector
        self.trains_per_sequence: int = len(first.train_ids)  # a one-sequence run's own length does as well
        with h5py.File(first_file, "r") as handle:
            proposal = handle.get("METADATA/proposalNumber")
            self.proposal: int = int(proposal[0]) if isinstance(proposal, h5py.Dataset) and proposal.size else 0
        self._sequences: list[_SequenceIndex] | None = None
        self._master_train_ids: np.ndarray | None = None

    @property
    def files(self) -> list[Path]:
        """Master first (when present), then the module files by (sequence, module): every file of the run."""
        return [*([self.master] if self.master else []), *(self._module_files[k] for k in sorted(self._module_files))]

    @property
    def trains_total(self) -> int:
        """Trains the run lists, for a progress bar."""
        return sum(len(sequence.train_ids) for sequence in self._index())

    @property
    def frames_total(self) -> int:
        """Frames ``trains()`` yields, for a progress bar."""
        return sum(int(sequence.frames.sum()) for sequence in self._index())

    def series_start(self) -> SeriesStart:
        """The run's start as the master records it: its time and, for a triaged run, the triage parameters."""
        if self.master is None:
            return SeriesStart(self.run_number, config=None)
        with h5py.File(self.master, "r") as handle:
            start = handle.get("/entry/start_time")
            start_time = start.asstr()[()] if isinstance(start, h5py.Dataset) and start.shape == () \
                and h5py.check_string_dtype(start.dtype) is not None else None  # a triaged master before its end
            triage = read_triage_params(handle) if PROCESS_PATH in handle else None
        received_s = dt.datetime.fromisoformat(start_time.replace("Z", "+00:00")).timestamp() if start_time else 0.0
        return SeriesStart(self.run_number, config=None, received_s=received_s, triage=triage)

    def trains(self) -> Iterator[Train]:
        """Every train in file order (sequence by sequence); the files of one sequence stay open while it is
        read. Triage rows are taken from the master at the running count of frames yielded (its frame order)."""
        with ExitStack() as run:
            master = run.enter_context(h5py.File(self.master, "r")) if self.master is not None else None
            triage = StoredTriage(master, self.triage_block_rows) if master is not None and PROCESS_PATH in master \
                else None
            position = first_frame = 0
            for sequence in self._index():
                with ExitStack() as opened:
                    images = {module: opened.enter_context(h5py.File(path, "r"))[f"INSTRUMENT/{source}/image"]
                              for module, (path, source) in sequence.files.items()}
                    for t in range(len(sequence.train_ids)):
                        train = self._train(position, sequence, t, images, master)
                        if triage is not None:
                            train = replace(train, triage=triage.range(first_frame, train.frames))
                        yield train
                        position, first_frame = position + 1, first_frame + train.frames

    def items(self) -> Iterator[Item]:
        """What a stream receiver emits: the start, the trains, then an end that counts their frames."""
        yield self.series_start()
        sent = 0
        for train in self.trains():
            sent += train.frames
            yield train
        yield EndOfSeries(self.run_number, EndReason.END_MESSAGE, frames_sent=sent)

    def _train(self, position: int, sequence: _SequenceIndex, t: int, images: Mapping[int, h5py.Group],
               master: h5py.File | None) -> Train:
        """Train ``t`` of ``sequence``, read module by module straight into the train's arrays."""
        frames, train_id = int(sequence.frames[t]), int(sequence.train_ids[t])
        present = tuple(bool(sequence.count[m, t]) for m in range(AGIPD_MODULES))
        keys = PIXEL_KEYS[self.product]
        arrays = {key.name: np.zeros((frames, AGIPD_MODULES, *key.shape), key.dtype) for key in keys}
        for module in (m for m in range(AGIPD_MODULES) if present[m]):
            start = int(sequence.first[module, t])
            rows = np.s_[start : start + frames]
            for key in keys:  # read, then copy: read_direct into the strided slice is ~30x slower (13 vs 0.4 ms/frame)
                arrays[key.name][:, module] = images[module][key.name][rows]
        absent = [m for m in range(AGIPD_MODULES) if not present[m]]
        for key in keys:
            if absent and VDS_FILL[key.name]:
                arrays[key.name][:, absent] = VDS_FILL[key.name]
        cell_ids, pulse_ids = self._ids(sequence, t, images, master)
        return Train(self.run_number, position, train_id, self.product, arrays.pop("data"), cell_ids, pulse_ids,
                     present, int(sequence.timestamps_ns[t]) / 1e9, 0.0, arrays.get("gain"), arrays.get("mask"))

    def _ids(self, sequence: _SequenceIndex, t: int, images: Mapping[int, h5py.Group],
             master: h5py.File | None) -> tuple[np.ndarray, np.ndarray]:
        """(cell ids u2, pulse ids u8) of train ``t``: the first present module's (raw stores them (N, 1)),
        else the master's, else none."""
        frames = int(sequence.frames[t])
        present = np.flatnonzero(sequence.count[:, t])
        if present.size:
            group, start = images[int(present[0])], int(sequence.first[present[0], t])
        elif frames and master is not None:  # a train no module holds: only the master lists its frames
            group, start = master[_MASTER_IDS], int(np.searchsorted(self._master_ids(), sequence.train_ids[t]))
        else:
            return np.zeros(0, np.uint16), np.zeros(0, np.uint64)
        return (group["cellId"][start : start + frames].reshape(-1).astype(np.uint16),
                group["pulseId"][start : start + frames].reshape(-1).astype(np.uint64))

    def _index(self) -> list[_SequenceIndex]:
        """Every sequence's INDEX, read once: one pass over the files, none of them kept open."""
        if self._sequences is None:
            by_sequence: dict[int, dict[int, Path]] = {}
            for (sequence, module), path in self._module_files.items():
                by_sequence.setdefault(sequence, {})[module] = path
            self._sequences = [self._sequence_index(by_sequence[s]) for s in sorted(by_sequence)]
        return self._sequences

    def _sequence_index(self, paths: Mapping[int, Path]) -> _SequenceIndex:
        tables = {module: _read_module_index(path, self.run_directory) for module, path in sorted(paths.items())}
        for module, table in tables.items():
            if table.detector != self.detector:
                raise NotAnExdfRun(self.run_directory, f"{paths[module].name} holds {table.source}, not "
                                   f"{self.detector}: it mixes detectors")
        train_ids = np.unique(np.concatenate([table.train_ids for table in tables.values()]))
        timestamps = np.zeros(len(train_ids), np.uint64)
        first, count = np.zeros((2, AGIPD_MODULES, len(train_ids)), np.int64)
        for module, table in tables.items():
            at = np.searchsorted(train_ids, table.train_ids)
            timestamps[at], first[module, at], count[module, at] = table.timestamps_ns, table.first, table.count
        frames = count.max(axis=0, initial=0)
        if (disagree := np.flatnonzero(((count != 0) & (count != frames)).any(axis=0))).size:
            t = int(disagree[0])
            raise InconsistentTrain(self.run_directory, int(train_ids[t]),
                                    f"modules hold {dict(enumerate(count[:, t].tolist()))} frames")
        if (empty := np.flatnonzero(frames == 0)).size and (master_ids := self._master_ids()).size:
            frames[empty] = (np.searchsorted(master_ids, train_ids[empty], "right")
                             - np.searchsorted(master_ids, train_ids[empty], "left"))
        files = {module: (paths[module], table.source) for module, table in tables.items()}
        return _SequenceIndex(files, train_ids, timestamps, first, count, frames)

    def _master_ids(self) -> np.ndarray:
        """The master's train id per run frame (8 bytes a frame), read only for a train no module holds."""
        if self._master_train_ids is None:
            self._master_train_ids = np.zeros(0, np.uint64)
            if self.master is not None:
                with h5py.File(self.master, "r") as handle:
                    found = handle.get(f"{_MASTER_IDS}/trainId")
                    if isinstance(found, h5py.Dataset):
                        self._master_train_ids = found[()].astype(np.uint64)
        return self._master_train_ids


def _read_module_index(path: Path, directory: Path) -> _ModuleIndex:
    """The module file's source and INDEX; a file without INDEX was never closed by its writer."""
    with h5py.File(path, "r") as handle:
        metadata = handle.get("METADATA/dataSources/dataSourceId", handle.get("METADATA/dataSourceId"))
        ids = [s.decode() if isinstance(s, bytes) else str(s) for s in (metadata[()] if metadata is not None else [])]
        sources = [found["source"] for s in ids if (found := _SOURCE_ID.fullmatch(s))]
        if len(sources) != 1:
            raise NotAnExdfRun(directory, f"{path.name} lists {len(sources)} AGIPD module sources, not 1")
        group = f"INDEX/{sources[0]}/image"
        if not all(name in handle for name in ("INDEX/trainId", f"{group}/first", f"{group}/count")):
            raise NotAnExdfRun(directory, f"{path.name} has no INDEX for {sources[0]}; its writer never closed it")
        train_ids = handle["INDEX/trainId"][()].astype(np.uint64)
        n = int(np.flatnonzero(train_ids)[-1]) + 1 if train_ids.any() else 0
        stamps = handle["INDEX/timestamp"][:n] if "INDEX/timestamp" in handle else np.zeros(n)
        first, count = (handle[f"{group}/{name}"][:n].astype(np.int64) for name in ("first", "count"))
        return _ModuleIndex(sources[0], train_ids[:n], np.asarray(stamps, np.uint64), first, count)

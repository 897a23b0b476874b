"""One EXDF sequence file of one AGIPD module (EuXFEL data format docs): METADATA, INDEX and INSTRUMENT/<source>/image.

Pixels go to disk as they arrive, one frame per chunk, encoded by ``module_chunks`` in the run's
``PixelCompression`` (uncompressed by default, as the EuXFEL DAQ writes raw data; pixel_compression.py) and
written with ``write_direct_chunk``, the code path of the Eiger writer.
The pixel datasets grow by one train at a time (``maxshape`` None along frames): one resize costs ~25 us,
against ~13 ms to compress and write one module's 64 raw frames, and the file's extent always equals the
trains it holds, so nothing is trimmed or padded except after a failure mid-train. The small per-frame ids and
the per-train INDEX grow with the pixels, a train at a time (~11 small appends per train and module, ~0.3 ms
against ~13 ms of pixels), so a file is complete EXDF at every flush, also one whose writer was killed.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..core.errors import FrameRejected
from ..core.file_clock import file_time_utc
from ..core.saving_target import FLUSH_PERIOD_S, create_h5
from ..core.software_version import detpipe_version
from ..core.train import AGIPD_MODULES, MODULE_SHAPE, Product, Train
from .index import TrainRecord
from .pixel_compression import PixelCompression

log = logging.getLogger(__name__)

DATA_FORMAT_VERSION = "1.2"  # INDEX/flag 1 = good (as 1.0), plus INDEX/origin (EuXFEL data format documentation)
ORIGIN_TIME_SERVER = -1  # INDEX/origin as EuXFEL's own test files write it: train id from the timing system
FLAG_GOOD = 1
PRODUCT_PREFIX = {Product.RAW: "RAW", Product.CORRECTED: "CORR"}


@dataclass(frozen=True, slots=True)
class PixelKey:
    """A per-frame image key of ``image``: ``shape`` is one frame of one module."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]


# EuXFEL data format documentation: raw keeps the analog/digital axis; corrected drops it and adds gain stage and mask.
PIXEL_KEYS: dict[Product, tuple[PixelKey, ...]] = {
    Product.RAW: (PixelKey("data", np.dtype("u2"), (2, *MODULE_SHAPE)),),
    Product.CORRECTED: (PixelKey("data", np.dtype("f4"), MODULE_SHAPE),
                        PixelKey("gain", np.dtype("u1"), MODULE_SHAPE),
                        PixelKey("mask", np.dtype("u4"), MODULE_SHAPE)),
}
# Per-frame scalars: raw stores them as (N, 1) with length/status as the DAQ does, corrected as (N,).
_ID_KEYS: dict[Product, tuple[tuple[str, str], ...]] = {
    Product.RAW: (("trainId", "u8"), ("pulseId", "u8"), ("cellId", "u2"), ("length", "u4"), ("status", "u2")),
    Product.CORRECTED: (("trainId", "u8"), ("pulseId", "u8"), ("cellId", "u2")),
}


ModuleChunks = dict[str, list[bytes | np.ndarray]]  # pixel key -> one chunk per frame


@dataclass(frozen=True, slots=True)
class RunMetadata:
    """The METADATA values shared by every file of a run; strings the run did not supply stay empty."""

    proposal: int
    run: int
    run_type: str = ""
    sample: str = ""

    @property
    def daq_library(self) -> str:
        return f"detpipe {detpipe_version()}"


def module_source(detector: str, product: Product, module: int) -> str:
    """``<detector>/DET/<m>CH0:xtdf`` (raw) or ``<detector>/CORR/<m>CH0:output`` (corrected), the names
    extra-data's ``AGIPD1M`` recognises (``/DET/(\\d+)CH`` and ``/CORR/(\\d+)CH``)."""
    if product is Product.RAW:
        return f"{detector}/DET/{module}CH0:xtdf"
    return f"{detector}/CORR/{module}CH0:output"


def module_file_name(product: Product, run: int, module: int, sequence: int) -> str:
    return f"{PRODUCT_PREFIX[product]}-R{run:04d}-AGIPD{module:02d}-S{sequence:05d}.h5"


def module_chunks(train: Train, module: int, compression: PixelCompression) -> ModuleChunks:
    """Every pixel key of ``module``'s frames as chunks, frame by frame. A pure function of the train, so
    it runs in the writer's compression threads while the writer thread writes the previous module."""
    return {key.name: [compression.chunk(frame) for frame in getattr(train, key.name)[:, module]]
            for key in PIXEL_KEYS[train.product]}


def check_train_layout(train: Train, product: Product) -> None:
    """Raises ``FrameRejected`` unless every array of ``train`` has the dtype and shape of ``product``."""
    if train.product is not product:
        raise FrameRejected("product_mismatch", f"{train.product.value} train {train.train_id} in a "
                            f"{product.value} run")
    problems = []
    for key in PIXEL_KEYS[product]:
        array = getattr(train, key.name)
        expected = (train.frames, AGIPD_MODULES, *key.shape)
        if array is None:
            problems.append(f"{key.name} missing")
        elif array.dtype != key.dtype or array.shape != expected:
            problems.append(f"{key.name} is {array.dtype} {array.shape}, expected {key.dtype} {expected}")
    for name in ("cell_ids", "pulse_ids"):
        if np.shape(getattr(train, name)) != (train.frames,):
            problems.append(f"{name} has shape {np.shape(getattr(train, name))}, expected ({train.frames},)")
    if len(train.modules_present) != AGIPD_MODULES:
        problems.append(f"modules_present has {len(train.modules_present)} entries, expected {AGIPD_MODULES}")
    if problems:
        raise FrameRejected("shape_mismatch", f"train {train.train_id}: " + "; ".join(problems))


def _frame_bytes(key: PixelKey) -> int:
    return int(np.prod(key.shape)) * key.dtype.itemsize


def _exdf_time(moment: dt.datetime) -> bytes:
    return moment.strftime("%Y%m%dT%H%M%SZ").encode("ascii")


def _strings(*values: str) -> np.ndarray:
    return np.array([v.encode("utf-8") for v in values], dtype=f"S{max(1, *(len(v.encode()) for v in values))}")


def write_metadata(handle: h5py.File, metadata: RunMetadata, sequence: int, source_ids: Sequence[str]) -> None:
    """METADATA as format 1.2 has it; ``source_ids`` are ``INSTRUMENT/<source>/<group>`` entries (may be empty)."""
    group = handle.require_group("METADATA")
    now = _exdf_time(file_time_utc())
    group["dataFormatVersion"] = _strings(DATA_FORMAT_VERSION)
    for name, value in (("daqLibrary", metadata.daq_library), ("karaboFramework", ""),
                        ("runType", metadata.run_type), ("sample", metadata.sample)):
        group[name] = _strings(value)
    group["creationDate"] = np.array([now])
    group["updateDate"] = np.array([now])
    for name, number in (("proposalNumber", metadata.proposal), ("runNumber", metadata.run),
                         ("sequenceNumber", sequence)):
        group.create_dataset(name, data=np.array([number], np.uint32))
    sources = group.require_group("dataSources")
    split = [s.partition("/") for s in source_ids]
    for name, values in (("dataSourceId", list(source_ids)), ("root", [s[0] for s in split]),
                         ("deviceId", [s[2] for s in split])):
        sources.create_dataset(name, data=_strings(*values) if values else np.zeros(0, "S1"))


def touch_update_date(handle: h5py.File) -> None:
    handle["METADATA/updateDate"][0] = _exdf_time(file_time_utc())


def write_train_index(handle: h5py.File, trains: Sequence[TrainRecord]) -> None:
    """INDEX/{trainId, timestamp, flag, origin}: one entry per train, every train flagged good."""
    n = len(trains)
    index = handle.require_group("INDEX")
    index.create_dataset("trainId", data=np.array([t.train_id for t in trains], np.uint64).reshape(n))
    index.create_dataset("timestamp", data=np.array([t.timestamp_ns for t in trains], np.uint64).reshape(n))
    index.create_dataset("flag", data=np.full(n, FLAG_GOOD, np.int32))
    index.create_dataset("origin", data=np.full(n, ORIGIN_TIME_SERVER, np.int32))


def create_exdf_file(path: Path, metadata: RunMetadata, sequence: int, group: str, *,
                     overwrite: bool, **options: object) -> tuple[h5py.File, h5py.Group]:
    """A new EXDF file with METADATA naming its one data source group ``INSTRUMENT/<source>/<group>`` and that
    group created; raises ``TargetFileExists`` rather than replace a file unless ``overwrite``. The caller
    owns the open file and closes it, also when filling the group fails. ``options`` go to ``create_h5``."""
    handle = create_h5(path, overwrite=overwrite, **options)
    try:
        write_metadata(handle, metadata, sequence, [f"INSTRUMENT/{group}"])
        return handle, handle.create_group(f"INSTRUMENT/{group}")
    except BaseException:
        handle.close()
        raise


class ExdfModuleFile:
    """Sequence ``sequence`` of one module: every train of the sequence is listed in INDEX, with
    ``count = 0`` where the module did not arrive (the way EuXFEL files show a missing module).

    Per-frame ids and INDEX are kept in memory (``_RowBuffer``) and written, with one resize and one write per
    dataset, at the flush every ``FLUSH_PERIOD_S`` and at close: a train's 11 small per-module appends cost
    the writer thread ~45 ms per 16-module train, a fifth of its time. A file whose writer was killed is
    a complete EXDF file up to its last flush: pixel rows written since lie beyond INDEX, where readers never
    look.
    """

    def __init__(self, path: Path, *, module: int, source: str, product: Product, sequence: int,
                 metadata: RunMetadata, overwrite: bool, compression: PixelCompression) -> None:
        self.path = path
        self.module = module
        self.source = source
        self.product = product
        self.sequence = sequence
        self.rows = 0  # frames of fully written trains; pixel datasets are trimmed to this at close
        self.trains = 0
        self._file, image = create_exdf_file(path, metadata, sequence, f"{source}/image", overwrite=overwrite)
        try:
            self._pixels = {
                key.name: image.create_dataset(key.name, shape=(0, *key.shape), maxshape=(None, *key.shape),
                                               chunks=(1, *key.shape), dtype=key.dtype,
                                               **compression.dataset_options)
                for key in PIXEL_KEYS[product]
            }
            per_frame = (1,) if product is Product.RAW else ()  # raw stores ids as (N, 1), as the DAQ does
            ids = {name: _growing(image, name, dtype, per_frame, _ID_CHUNK_ROWS) for name, dtype in _ID_KEYS[product]}
            index = self._file.create_group("INDEX")
            trains = {name: _growing(index, name, dtype, (), _INDEX_CHUNK_ROWS) for name, dtype in _INDEX_KEYS}
            image_index = index.create_group(f"{source}/image")
            counts = {name: _growing(image_index, name, "u8", (), _INDEX_CHUNK_ROWS) for name in ("first", "count")}
            self._ids, self._index, self._counts = _RowBuffer(ids), _RowBuffer(trains), _RowBuffer(counts)
            self._file.flush()
        except BaseException:
            self._file.close()
            raise
        self._flushed_monotonic = time.monotonic()

    def write_train(self, record: TrainRecord, train: Train, chunks: ModuleChunks) -> np.ndarray:
        """Appends this module's frames of ``train`` from ``module_chunks(train, module, compression)``; returns
        the stored bytes of each frame (int64 (F,)).

        The train counts only once all its chunks are written; an exception leaves ``rows`` unchanged.
        """
        nbytes = np.zeros(train.frames, np.int64)
        end = self.rows + train.frames
        for key in PIXEL_KEYS[self.product]:
            dataset = self._pixels[key.name]
            dataset.resize(end, axis=0)
            offset = (0,) * len(key.shape)
            for f, chunk in enumerate(chunks[key.name]):
                dataset.id.write_direct_chunk((self.rows + f, *offset), chunk)
                nbytes[f] += memoryview(chunk).nbytes
        per_frame = {
            "trainId": np.full(train.frames, record.train_id, np.uint64),
            "pulseId": np.asarray(train.pulse_ids, np.uint64),
            "cellId": np.asarray(train.cell_ids, np.uint16),
            "length": np.full(train.frames, _frame_bytes(PIXEL_KEYS[self.product][0])),  # bytes of one raw frame
            "status": np.zeros(train.frames),  # 0 = frame read out without error
        }
        for name in self._ids.names:
            self._ids.add(name, per_frame[name])
        self._add(record, train.frames)
        self.rows = end
        if (now := time.monotonic()) - self._flushed_monotonic >= FLUSH_PERIOD_S:
            self._write_rows()
            self._file.flush()  # a writer killed mid-sequence leaves a complete file up to here
            self._flushed_monotonic = now
        return nbytes

    def skip_train(self, record: TrainRecord) -> None:
        """Lists ``record`` with no rows: the module did not arrive for this train."""
        self._add(record, 0)

    def _add(self, record: TrainRecord, count: int) -> None:
        for name, value in (("trainId", record.train_id), ("timestamp", record.timestamp_ns), ("flag", FLAG_GOOD),
                            ("origin", ORIGIN_TIME_SERVER)):
            self._index.add(name, np.array([value]))
        self._counts.add("first", np.array([self.rows]))
        self._counts.add("count", np.array([count]))
        self.trains += 1

    def _write_rows(self) -> None:
        for rows in (self._ids, self._index, self._counts):
            rows.write_out()

    def close(self) -> int:
        """Trims the rows of a train written only in part, stamps updateDate and closes; returns the rows."""
        try:
            self._write_rows()
            for dataset in self._pixels.values():
                if dataset.shape[0] != self.rows:
                    dataset.resize(self.rows, axis=0)
            touch_update_date(self._file)
            return self.rows
        finally:
            self._file.close()


_ID_CHUNK_ROWS = 4096  # per-frame ids: a 352-cell train is 352 rows
_INDEX_CHUNK_ROWS = 256  # per-train INDEX entries: a sequence holds 256 trains by default
_INDEX_KEYS = (("trainId", "u8"), ("timestamp", "u8"), ("flag", "i4"), ("origin", "i4"))


def _growing(group: h5py.Group, name: str, dtype: str, row_shape: tuple[int, ...], chunk_rows: int) -> h5py.Dataset:
    return group.create_dataset(name, shape=(0, *row_shape), maxshape=(None, *row_shape), dtype=dtype,
                                chunks=(chunk_rows, *row_shape))


class _RowBuffer:
    """Rows for growing datasets, by name, kept until ``write_out`` appends each dataset's in one write."""

    def __init__(self, datasets: dict[str, h5py.Dataset]) -> None:
        self._datasets = datasets
        self._rows: dict[str, list[np.ndarray]] = {name: [] for name in datasets}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._datasets)

    def add(self, name: str, values: np.ndarray) -> None:
        self._rows[name].append(values)

    def write_out(self) -> None:
        for name, pieces in self._rows.items():
            if pieces:
                dataset = self._datasets[name]
                _append(dataset, np.concatenate(pieces).reshape(-1, *dataset.shape[1:]))
                pieces.clear()


def _append(dataset: h5py.Dataset, values: np.ndarray) -> None:
    start = dataset.shape[0]
    dataset.resize(start + len(values), axis=0)
    dataset[start:] = values

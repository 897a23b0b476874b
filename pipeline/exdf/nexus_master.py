"""The NeXus master of an AGIPD run (NeXus conventions): one virtual dataset stacking the 16 modules' EXDF files.

``/entry/data/data`` is (frames, 16, 2, 512, 128) uint16 for raw runs and (frames, 16, 512, 128) float32
for corrected ones, which also get ``data_slab`` and ``mask_slab``, the same frames as (frames, 16·512, 128)
(``SLAB_KEYS``); frame k is the k-th frame of the run, and a module missing for a train reads as the
fill value 0 for that train's frames (``modules_present`` tells fill from real zeros). Sources are named by
file name only, so the run directory can move. It is plain NeXus, not NXmx: NXmx requires the beam
wavelength, a sample and per-module geometry that an AGIPD stream does not carry, and a definition whose
required fields are invented would mislead validators. The same way as the module files, the master also
holds an EXDF METADATA/INDEX skeleton without sources, so extra-data's ``RunDirectory`` (which opens every
``*.h5`` of the directory) reads it as an empty member of the run instead of reporting it as a broken file.
A triaged run (triage_process.py) gets its master at the start instead, holding the EXDF skeleton, root
attributes, ``/entry/process_01`` and the CXI peak list, so the per-frame rows can be flushed into it as
sequences close; the end of the run then adds the rest. Peak rows follow the VDS frame axis (row k = frame
k of the run) and are in the stacked (16·512, 128) frame, ss' = module·512 + ss (the CXI peak-list layout).
Readers should take the VDS frame by frame: HDF5 (up to 2.0.0) reads a multi-frame slice of a VDS over
chunked sources ~100 times slower (8 frames x 16 modules: ~2 s as one slice, ~20 ms one by one; h5py #1597).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..core.file_clock import file_time_s
from ..core.saving_target import create_h5, rewrite_h5
from ..core.series import SeriesStart
from ..core.train import AGIPD_MODULES, Product
from ..core.virtual_dataset import create_untimed_virtual_dataset
from ..nexus.nxmx_master import NxmxMaster, iso_time
from ..nexus.triage_process import TriageProcess
from .index import RunIndex
from .module_file import PIXEL_KEYS, PixelKey, RunMetadata, write_metadata, write_train_index

PIXEL_SIZE_M = 200e-6  # European XFEL AGIPD documentation
SENSOR_THICKNESS_M = 500e-6
# Missing modules read as 0 in pixels and gain, raw or corrected (extra-data's CXI uses NaN for float data;
# modules_present tells them apart), and as every bad-pixel bit in the mask, so a masked reader drops them.
VDS_FILL = {"data": 0, "gain": 0, "mask": 0xFFFFFFFF}
SLAB_KEYS = ("data", "mask")
"""Corrected keys also given as a slab, (frames, 16·512, 128): the modules one below the other, the image CrystFEL
pairs with the CXI peak list's stacked coordinates (ss' = module·512 + ss) through a geometry file."""
_DIMENSIONS = {Product.RAW: ("frame", "module", "data/gain", "y", "x"), Product.CORRECTED: ("frame", "module", "y", "x")}


def master_file_name(run: int) -> str:
    return f"AGIPD-R{run:04d}-master.h5"


@dataclass(frozen=True, slots=True)
class ModuleFileExtent:
    """One closed sequence file: ``rows`` frames of ``source`` under ``INSTRUMENT/<source>/image``."""

    module: int
    sequence: int
    name: str  # file name only: VDS sources are relative to the master
    source: str
    rows: int


def _field(group: h5py.Group, name: str, value: Any, units: str | None = None) -> h5py.Dataset:
    dataset = group.create_dataset(name, data=value)
    if units is not None:
        dataset.attrs["units"] = units
    return dataset


def _group(parent: h5py.Group, name: str, nx_class: str) -> h5py.Group:
    group = parent.require_group(name)  # /entry exists already in a triaged run's master
    group.attrs["NX_class"] = nx_class
    return group


class AgipdNexusMaster:
    def __init__(self, path: Path, *, triage: TriageProcess | None = None) -> None:
        self.path = path
        self.triage = triage  # None: the run is not triaged; the master is written once, at the end

    def _create(self, overwrite: bool) -> h5py.File:
        return create_h5(self.path, overwrite=overwrite)

    @classmethod
    def begin(cls, directory: Path, start: SeriesStart, metadata: RunMetadata, *, overwrite: bool) -> TriageProcess:
        """Creates the master of a triaged run (``start.triage`` set) in ``directory`` at the run's start and
        returns the ``TriageProcess`` that flushes rows into it. Until ``write`` completes it, the file is an
        empty EXDF member (extra-data opens it mid-run, or after a crash, without a warning) plus the triage
        groups. Raises ``TargetFileExists`` (ABORT policy) before the run starts any thread."""
        if start.triage is None:
            raise ValueError(f"series {start.series_id} is not triaged; its master is written when the run ends")
        path = directory / master_file_name(metadata.run)
        triage = TriageProcess(start.triage, path)
        with cls(path, triage=triage)._create(overwrite) as handle:
            write_metadata(handle, metadata, 0, [])
            write_train_index(handle, [])
            NxmxMaster._write_root(handle)  # noqa: SLF001
            _group(handle, "entry", "NXentry")
            triage.create(handle, image_path="/entry/data/data", date=iso_time(start.received_s or file_time_s()))
        return triage

    def write(self, index: RunIndex, product: Product | None, extents: Sequence[ModuleFileExtent], *,
              metadata: RunMetadata, detector: str, instrument_name: str, source_name: str,
              overwrite: bool) -> None:
        """Writes the whole master at the end of the run (completes it, for a triaged run); ``product`` is
        None when no train was written."""
        opened = rewrite_h5(self.path) if self.triage is not None else self._create(overwrite)
        with opened as handle:
            for placeholder in ("METADATA", "INDEX"):  # begin's empty skeleton, rewritten below
                if placeholder in handle:
                    del handle[placeholder]
            write_metadata(handle, metadata, 0, [])
            write_train_index(handle, index.trains)
            # The Eiger master's root attributes (file_name, file_time, creator…), shared rather than copied.
            NxmxMaster._write_root(handle)  # noqa: SLF001
            entry = _group(handle, "entry", "NXentry")
            _field(entry, "entry_identifier", f"r{metadata.run:04d}")
            if metadata.proposal:
                _field(entry, "experiment_identifier", f"p{metadata.proposal:06d}")
            if index.trains:
                _field(entry, "start_time", iso_time(index.trains[0].timestamp_ns / 1e9))
                _field(entry, "end_time", iso_time(index.trains[-1].timestamp_ns / 1e9))
            instrument = _group(entry, "instrument", "NXinstrument")
            _field(instrument, "name", instrument_name)
            self._write_detector(_group(instrument, "detector", "NXdetector"), detector)
            if source_name:
                _field(_group(entry, "source", "NXsource"), "name", source_name)
            if self.triage is not None:
                self.triage.flush(handle, index.frames)
            data = _group(entry, "data", "NXdata")
            if product is None or index.frames == 0:
                return
            entry.attrs["default"] = "data"
            for key in PIXEL_KEYS[product]:
                _write_stack(data, key, index, extents, slab=False)
                if product is Product.CORRECTED and key.name in SLAB_KEYS:
                    _write_stack(data, key, index, extents, slab=True)
            # NeXus 2014 convention: signal and axes on the group, "." for a dimension without an axis field;
            # interpretation "image" lets viewers (silx) show the last two dimensions as a picture.
            data.attrs["signal"] = "data"
            data.attrs["axes"] = np.array(["."] * len(_DIMENSIONS[product]), dtype=h5py.string_dtype())
            data["data"].attrs["interpretation"] = "image"
            data["data"].attrs["long_name"] = f"AGIPD {product.value} ({', '.join(_DIMENSIONS[product])})"
            train_ids, pulse_ids, cell_ids = index.per_frame_ids()
            _field(data, "trainId", train_ids)
            _field(data, "pulseId", pulse_ids)
            _field(data, "cellId", cell_ids)
            _field(data, "modules_present", index.modules_present_per_frame())
            instrument["detector"]["data"] = h5py.SoftLink("/entry/data/data")

    @staticmethod
    def _write_detector(detector: h5py.Group, name: str) -> None:
        _field(detector, "description", "AGIPD-1M")
        _field(detector, "local_name", name)
        _field(detector, "layout", "area")  # NXdetector's enumeration: point, linear or area
        _field(detector, "x_pixel_size", PIXEL_SIZE_M, "m")
        _field(detector, "y_pixel_size", PIXEL_SIZE_M, "m")
        _field(detector, "sensor_material", "Si")
        _field(detector, "sensor_thickness", SENSOR_THICKNESS_M, "m")


def _write_stack(group: h5py.Group, key: PixelKey, index: RunIndex, extents: Sequence[ModuleFileExtent], *,
                 slab: bool) -> None:
    """VDS ``key`` of shape (frames, 16, *frame), or with ``slab`` ``<key>_slab`` of shape (frames, 16·512, 128):
    one mapping per contiguous run of rows in a sequence file."""
    rows = key.shape[0]
    shape = (index.frames, AGIPD_MODULES * rows, *key.shape[1:]) if slab else (index.frames, AGIPD_MODULES, *key.shape)
    layout = h5py.VirtualLayout(shape=shape, dtype=key.dtype)
    files = {(e.module, e.sequence): e for e in extents}
    for module in range(AGIPD_MODULES):
        for span in index.row_spans(module):
            extent = files.get((module, span.sequence))
            if extent is None or span.first_row + span.frames > extent.rows:
                continue  # the file failed to close, or lost this train when it did: leave the fill value
            source = h5py.VirtualSource(extent.name, f"INSTRUMENT/{extent.source}/image/{key.name}",
                                        shape=(extent.rows, *key.shape), dtype=key.dtype)
            frames = slice(span.first_frame, span.first_frame + span.frames)
            target = slice(module * rows, (module + 1) * rows) if slab else module
            layout[frames, target] = source[span.first_row : span.first_row + span.frames]
    name = f"{key.name}_slab" if slab else key.name
    create_untimed_virtual_dataset(group, name, layout, fillvalue=key.dtype.type(VDS_FILL[key.name]))

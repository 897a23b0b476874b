"""An archived Eiger series read back as the items a stream receiver emits, so ``detpipe reduce`` runs the
online stages offline: ``SeriesStart``, then every stored ``Frame`` in index order, then ``EndOfSeries``.

Each blob is the chunk as stored (``read_direct_chunk``), never decompressed: stages see what the detector sent
and a rewrite through ``NxmxWriter`` stores byte-identical chunks. Memory is one chunk plus ``triage_block_rows``
triage rows cut to the block's widest peak list (1024 rows × 2048 peaks × 6 columns would be 48 MiB uncut).

``series_start`` mirrors nxmx_master.py. What does NOT round-trip, and why:
- ``series_id`` is in no file field: ``detectorSpecific/series_id`` (a V2 header's copy), else the stem's
  trailing digits (``series_<id>``, the default prefix), else 0.
- ``dtype``/``shape`` are the frames' (finalise overwrites the header's layout fields with the frames').
- ``wavelength_a``: one ``incident_wavelength`` is stored, given or derived from the photon energy; equal to
  ``HC_EV_ANGSTROM / photon_energy`` it is taken as derived (None). A rewrite stores the same value either way.
  ``photon_energy_ev`` is ``detectorSpecific/photon_energy`` only (``incident_energy`` may be derived).
- ``compression`` is not stored as such: a V1 header's ``compression`` copy, else the data's encoding.
- ``header``: only the scalars ``_copy_header`` wrote, as Python bool/int/float/str. Lost: the copies of config
  fields (nimages, ntrigger, photon_energy, trigger_mode, x/y_pixels_in_detector), ``eiger_fw_version``
  (never written) and non-scalars; a V2 ``goniometer`` returns as ``{"omega": {start, increment}}``.
- ``SeriesStart``: ``received_s`` = ``/entry/start_time`` (ms); ``header_detail`` "all" when a mask or flatfield
  is stored, else "basic"; ``appendix`` is not stored; ``unique_id`` = the header's ``series_unique_id``.
- ``Frame``: ``received_s`` 0.0, no detector times, default ``channel``. ``FrameTriage``: ``time_ms`` 0.0; only
  the first ``max_num_peaks`` peaks were stored (``n_peaks`` keeps the full count).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401 - registers filter 32008 for the bitshuffled pixel_mask and flatfield
import numpy as np

from ..core.frame import Encoding, Frame
from ..core.series import DetectorConfig, EndOfSeries, EndReason, SeriesStart
from ..core.stage import Item
from .nxmx_data_file import DATASET_PATH
from .nxmx_master import DETECTOR, HC_EV_ANGSTROM
from .stored_triage import StoredTriage
from .triage_process import PROCESS_PATH, read_triage_params

# detectorSpecific fields nxmx_master.py writes from DetectorConfig fields or the frames, not from the header.
_FROM_CONFIG = {"nimages", "ntrigger", "photon_energy", "trigger_mode", "x_pixels_in_detector", "y_pixels_in_detector"}
# Header values written to the detector group itself; DECTRIS masters may not repeat them in detectorSpecific.
_DETECTOR_HEADER_FIELDS = ("detector_readout_time", "countrate_correction_applied", "flatfield_correction_applied",
                           "pixel_mask_applied", "virtual_pixel_correction_applied")
_DATA_LINK = re.compile(r"data_\d{6}")
_BSLZ4_LZ4 = 2  # bitshuffle filter option "compression": 2 = LZ4 (0 none, 3 zstd)
_ENCODING_OF_FILTERS = {((e.hdf5_filter_id,) if e.hdf5_filter_id else ()): e for e in Encoding}
_OMEGA = "/entry/sample/transformations"  # a V2 goniometer is rebuilt from the sample's omega axis


class NotAnNxmxMaster(ValueError):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} is not an NXmx master ({reason}); pass the <prefix>_master.h5 that detpipe "
                         "or a DECTRIS filewriter wrote, not a data file")
        self.path, self.reason = path, reason


class DataFileMissing(ValueError):
    def __init__(self, master: Path, data_file: Path) -> None:
        super().__init__(f"{data_file} (linked from {master.name}) is missing; restore it next to the master "
                         "or copy the whole series directory again")
        self.master, self.data_file = master, data_file


class UnsupportedChunks(ValueError):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}; frames are passed on as stored chunks, so each frame must be one "
                         "chunk filtered by bslz4 (32008), lz4 (32004) or nothing: repack it (h5repack) first")
        self.path, self.reason = path, reason


class NxmxFrameSource:
    """The frames of one series' master and data files, in index order, for the offline pipeline.

    The constructor only checks the master's layout and that every linked data file exists; pixels,
    triage rows and metadata are read when iterated. After a ``frames()`` pass, ``frames_missing`` counts
    the rows with no chunk and the indices between data files that no file holds (lost in acquisition).
    """

    def __init__(self, master: Path, *, triage_block_rows: int = 1024) -> None:
        self.master = Path(master)
        self.triage_block_rows = triage_block_rows
        self.frames_missing = 0
        self._frames_total: int | None = None
        self._data_files, self.series_id = _check_master(self.master)

    @property
    def data_files(self) -> list[Path]:
        """The data files in file-number order (the master's ``/entry/data/data_<k:06d>`` links)."""
        return list(self._data_files)

    @property
    def files(self) -> list[Path]:
        """Master first, then the data files: every file whose checksum identifies the series."""
        return [self.master, *self._data_files]

    @property
    def frames_per_file(self) -> int:
        """Rows of the first data file: the split a rewrite must use to give the same data files."""
        if not self._data_files:
            return 1000
        with h5py.File(self._data_files[0], "r") as handle:
            return max(1, int(handle[DATASET_PATH].shape[0]))

    @property
    def frames_total(self) -> int:
        """Frames present (allocated chunks), for a progress bar; counted once from the chunk indexes."""
        if self._frames_total is None:
            self._frames_total = 0
            for path in self._data_files:
                with h5py.File(path, "r") as handle:
                    self._frames_total += handle[DATASET_PATH].id.get_num_chunks()
        return self._frames_total

    def series_start(self) -> SeriesStart:
        """The series start the master records, rebuilt so a rewrite carries the same metadata."""
        with h5py.File(self.master, "r") as handle:
            config = _config(handle, self._data_files[0] if self._data_files else None)
            stored = [handle.get(f"{DETECTOR}/{name}") for name in ("pixel_mask", "detectorSpecific/flatfield")]
            pixel_mask, flatfield = (n[()] if isinstance(n, h5py.Dataset) and n.ndim == 2 else None for n in stored)
            start_time = _value(handle, "/entry/start_time")
            triage = read_triage_params(handle) if PROCESS_PATH in handle else None
        received_s = dt.datetime.fromisoformat(start_time.replace("Z", "+00:00")).timestamp() \
            if isinstance(start_time, str) else 0.0
        unique_id = config.header.get("series_unique_id") if config is not None else None
        return SeriesStart(self.series_id, "all" if pixel_mask is not None or flatfield is not None else "basic",
                           config=config, pixel_mask=pixel_mask, flatfield=flatfield, received_s=received_s,
                           unique_id=unique_id if isinstance(unique_id, str) else "", triage=triage)

    def frames(self) -> Iterator[Frame]:
        """Every stored frame in index order; global index = ``image_nr_low - 1 + row``. Unallocated rows and
        index ranges no data file covers are lost frames: skipped and counted in ``frames_missing``."""
        self.frames_missing = 0
        covered = 0  # the global index after the rows of the data files read so far
        with h5py.File(self.master, "r") as master:
            triage = StoredTriage(master, self.triage_block_rows) if PROCESS_PATH in master else None
            for path in self._data_files:
                with h5py.File(path, "r") as handle:
                    dataset = handle[DATASET_PATH]
                    encoding = _encoding(dataset, path)
                    first = int(dataset.attrs["image_nr_low"]) - 1
                    self.frames_missing += max(0, first - covered)
                    covered = max(covered, first + dataset.shape[0])
                    shape = (int(dataset.shape[1]), int(dataset.shape[2]))
                    for row in range(dataset.shape[0]):
                        if dataset.id.get_chunk_info_by_coord((row, 0, 0)).byte_offset is None:
                            self.frames_missing += 1
                            continue
                        filter_mask, blob = dataset.id.read_direct_chunk((row, 0, 0))
                        index = first + row
                        yield Frame(self.series_id, index, shape, dataset.dtype,
                                    Encoding.RAW if filter_mask & 1 else encoding, blob, received_s=0.0,
                                    triage=triage.at(index) if triage is not None else None)

    def items(self) -> Iterator[Item]:
        """What a stream receiver emits: the start, the frames, then an end that counts them."""
        yield self.series_start()
        sent = 0
        for frame in self.frames():
            sent += 1
            yield frame
        yield EndOfSeries(self.series_id, EndReason.END_MESSAGE, frames_sent=sent)


def _check_master(master: Path) -> tuple[list[Path], int]:
    """The data files the master links, all present, and the series id (see the module docstring)."""
    if not master.is_file():
        raise FileNotFoundError(f"{master} does not exist; pass the series' <prefix>_master.h5")
    if not h5py.is_hdf5(master):
        raise NotAnNxmxMaster(master, "not an HDF5 file")
    with h5py.File(master, "r") as handle:
        if (definition := _value(handle, "/entry/definition")) not in (None, "NXmx"):
            raise NotAnNxmxMaster(master, f"/entry/definition is {definition!r}")
        if missing := [name for name in (DETECTOR, "/entry/data") if not isinstance(handle.get(name), h5py.Group)]:
            raise NotAnNxmxMaster(master, f"no {missing[0]} group")
        data = handle["/entry/data"]
        links = [(name, data.get(name, getlink=True)) for name in sorted(data) if _DATA_LINK.fullmatch(name)]
        series_id = _value(handle, f"{DETECTOR}/detectorSpecific/series_id")
    paths = []
    for name, link in links:
        if not isinstance(link, h5py.ExternalLink):
            raise NotAnNxmxMaster(master, f"/entry/data/{name} is not an external link to a data file")
        if not (path := master.parent / link.filename).is_file():
            raise DataFileMissing(master, path)
        paths.append(path)
    if type(series_id) is not int:
        digits = re.search(r"(\d+)$", master.name.removesuffix(".h5").removesuffix("_master"))
        series_id = int(digits.group(1)) if digits else 0
    return paths, int(series_id)


def _config(handle: h5py.File, first_data_file: Path | None) -> DetectorConfig | None:
    """The ``DetectorConfig`` nxmx_master.py wrote; None when it wrote none (no ``detectorSpecific/nimages``)."""
    detector = handle[DETECTOR]
    specific = detector.get("detectorSpecific")
    if not isinstance(specific, h5py.Group) or type(nimages := _value(specific, "nimages")) is not int:
        return None
    header = {name: value for name in specific if name not in _FROM_CONFIG
              and (value := _value(specific, name)) is not None}
    header.update({name: value for name in _DETECTOR_HEADER_FIELDS
                   if name not in header and (value := _value(detector, name)) is not None})
    omega = handle.get(f"{_OMEGA}/omega")
    if "omega_start" not in header and "goniometer" not in header and isinstance(omega, h5py.Dataset) and omega.size:
        header["goniometer"] = {"omega": {"start": float(omega[0]),
                                          "increment": _value(handle, f"{_OMEGA}/omega_increment_set")}}
    shape, dtype, encoding = stored_frame_layout(first_data_file) if first_data_file is not None else (
        (_number(specific, "y_pixels_in_detector", int) or 0, _number(specific, "x_pixels_in_detector", int) or 0),
        np.dtype(f"uint{_number(detector, 'bit_depth_image', int) or 16}"), None)
    energy = _number(specific, "photon_energy")
    wavelength = _number(handle, "/entry/instrument/beam/incident_wavelength")
    if wavelength is not None and energy and wavelength == HC_EV_ANGSTROM / energy:
        wavelength = None
    compression = header.get("compression")
    if not isinstance(compression, str):
        compression = encoding.value if encoding in (Encoding.BSLZ4, Encoding.LZ4) else "bslz4"
    defaulted = {  # fields with a non-None default: left at it when the master lacks them
        "ntrigger": _number(specific, "ntrigger", int), "x_pixel_size_m": _number(detector, "x_pixel_size"),
        "y_pixel_size_m": _number(detector, "y_pixel_size"), "sensor_material": _value(detector, "sensor_material"),
        "sensor_thickness_m": _number(detector, "sensor_thickness"), "trigger_mode": _value(specific, "trigger_mode"),
    }
    return DetectorConfig(
        shape=shape, dtype=dtype, nimages=nimages, count_time_s=_number(detector, "count_time"),
        frame_time_s=_number(detector, "frame_time"), photon_energy_ev=energy, wavelength_a=wavelength,
        beam_center_x_px=_number(detector, "beam_center_x"), beam_center_y_px=_number(detector, "beam_center_y"),
        detector_distance_m=_number(detector, "distance"), description=str(_value(detector, "description") or ""),
        detector_number=str(_value(detector, "detector_number") or _value(detector, "serial_number") or ""),
        bit_depth_readout=_number(detector, "bit_depth_readout", int),
        saturation_value=_number(detector, "saturation_value", int), compression=compression, header=header,
        **{key: value for key, value in defaulted.items() if value is not None})


def stored_frame_layout(path: Path) -> tuple[tuple[int, int], np.dtype, Encoding]:
    """Shape, dtype and encoding of the stored frames (the master's layout fields follow the frames too)."""
    with h5py.File(path, "r") as handle:
        dataset = handle[DATASET_PATH]
        return (int(dataset.shape[1]), int(dataset.shape[2])), dataset.dtype, _encoding(dataset, path)


def _encoding(dataset: h5py.Dataset, path: Path) -> Encoding:
    """The chunk encoding of a data dataset from its filter pipeline, refusing what a Frame cannot carry."""
    if dataset.ndim != 3 or dataset.chunks != (1, *dataset.shape[1:]):
        raise UnsupportedChunks(path, f"{DATASET_PATH} is chunked {dataset.chunks}, not one frame per chunk")
    plist = dataset.id.get_create_plist()
    filters = [plist.get_filter(k) for k in range(plist.get_nfilters())]
    found = _ENCODING_OF_FILTERS.get(tuple(f[0] for f in filters))
    if found is None or (found is Encoding.BSLZ4 and tuple(filters[0][2])[4:5] not in ((), (_BSLZ4_LZ4,))):
        raise UnsupportedChunks(path, f"filters {[(f[0], tuple(f[2])) for f in filters]}")
    return found


def _value(group: h5py.Group | None, name: str) -> Any:
    """A scalar dataset as a Python bool/int/float/str; None when absent, a group or an array (nxmx_master.py
    copies only scalars into detectorSpecific)."""
    node = group.get(name) if isinstance(group, h5py.Group) else None
    if not isinstance(node, h5py.Dataset) or node.shape != ():
        return None
    if h5py.check_string_dtype(node.dtype) is not None:
        return str(node.asstr()[()])
    value = node[()]
    return value.item() if isinstance(value, np.generic) and node.dtype.kind in "biuf" else None


def _number(group: h5py.Group | None, name: str, kind: type[float] | type[int] = float) -> Any:
    """A numeric scalar as ``kind``; None when absent, not a number, or a float where an int is wanted."""
    value = _value(group, name)
    return kind(value) if type(value) in ((int, float) if kind is float else (int,)) else None

"""The NXmx master file of a series (NeXus NXmx, DECTRIS layout): metadata, links to the data files, one VDS.

It is written in three steps, each opening and closing the file, so a crash never leaves it half-open:
``create`` at series start (the file exists early and carries the metadata), ``link_data_file`` as each
data file closes, and ``finalise`` at the end (frame layout, VDS, ``end_time``). Values the series did not
supply are left out, never invented; only NXmx-required names get a neutral value (sample name = series).
A triaged series' master also holds ``/entry/process_01`` and the CXI peak list (triage_process.py); its
buffered rows are flushed in each of these steps, while the file is open anyway.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from ..core.file_clock import file_time_local, file_time_s
from ..core.saving_target import create_h5, rewrite_h5
from ..core.series import DetectorConfig, SeriesStart
from ..core.software_version import detpipe_version
from ..core.virtual_dataset import create_untimed_virtual_dataset
from .nxmx_data_file import DATASET_PATH, FrameLayout
from .triage_process import TriageProcess

HC_EV_ANGSTROM = 12398.42  # photon energy (eV) × wavelength (Å)
DETECTOR = "/entry/instrument/detector"
# Sample rotation axis for a horizontal goniometer in McStas coordinates, the nexgen/DLS convention. The
# detector does not report it: an assumption to correct per beamline.
OMEGA_VECTOR = (-1.0, 0.0, 0.0)
# Written from DetectorConfig fields, so the header copy in detectorSpecific must not repeat or override them.
# eiger_fw_version is never written: DIALS would take the file for a DECTRIS one and flip data_size.
_NOT_COPIED = {"eiger_fw_version", "nimages", "ntrigger", "photon_energy", "trigger_mode",
               "x_pixels_in_detector", "y_pixels_in_detector"}
_DETECTOR_FLAGS = ("countrate_correction_applied", "flatfield_correction_applied", "pixel_mask_applied",
                   "virtual_pixel_correction_applied")


@dataclass(frozen=True, slots=True)
class DataFileExtent:
    """Where one closed data file's rows sit in the series: rows 0…n_rows-1 are frames first_index…"""

    number: int
    name: str  # file name only: links and VDS sources are relative, so the directory can move
    first_index: int
    n_rows: int


LATEST_TIME_S = 253_402_300_799.0  # 9999-12-31T23:59:59Z, the last moment a datetime holds


def iso_time(timestamp_s: float) -> str:
    """ISO 8601 in UTC with the Z suffix, as NXmx asks for its times."""
    moment = dt.datetime.fromtimestamp(timestamp_s, tz=dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _put(group: h5py.Group, name: str, value: Any, units: str | None = None, **attrs: Any) -> None:
    """Writes ``name`` unless ``value`` is None (unknown values are omitted), replacing an older one."""
    if value is None:
        return
    if name in group:
        del group[name]
    dataset = group.create_dataset(name, data=value)
    if units is not None:
        dataset.attrs["units"] = units
    dataset.attrs.update(attrs)


def _group(parent: h5py.Group, name: str, nx_class: str) -> h5py.Group:
    group = parent.require_group(name)
    group.attrs["NX_class"] = nx_class
    return group


def _axis(group: h5py.Group, name: str, value: Any, units: str, kind: str, vector: Sequence[float],
          depends_on: str, offset: Sequence[float] = (0.0, 0.0, 0.0)) -> str:
    _put(group, name, value, units, transformation_type=kind, vector=np.asarray(vector, float),
         offset=np.asarray(offset, float), depends_on=depends_on)
    return f"{group.name}/{name}"


class NxmxMaster:
    def __init__(self, path: Path, *, triage: TriageProcess | None = None) -> None:
        self.path = path
        self.triage = triage  # None: the series is not triaged and the master has no triage groups

    def create(self, start: SeriesStart, *, instrument_name: str, source_name: str, sample_name: str,
               overwrite: bool) -> None:
        """Writes every metadata group the series start supplies (NXmx required + legacy paths)."""
        with create_h5(self.path, overwrite=overwrite) as handle:
            self._write_root(handle)
            start_s = start.received_s or file_time_s()
            entry = _group(handle, "entry", "NXentry")
            entry.attrs["default"] = "data"
            _put(entry, "definition", "NXmx")
            _put(entry, "start_time", iso_time(start_s))
            cfg = start.config
            if cfg is not None and cfg.frame_time_s is not None:
                end_s = start_s + cfg.frames_expected * cfg.frame_time_s
                if end_s < LATEST_TIME_S:  # 2**31 frames of 10**6 s end after year 9999: no estimate then
                    _put(entry, "end_time_estimated", iso_time(end_s))
            _group(entry, "data", "NXdata")
            instrument = _group(entry, "instrument", "NXinstrument")
            _put(instrument, "name", instrument_name)
            _put(instrument, "time_zone", file_time_local().isoformat(timespec="seconds")[-6:])
            self._write_beam(_group(instrument, "beam", "NXbeam"), cfg)
            detector = _group(instrument, "detector", "NXdetector")
            if cfg is not None:
                self._write_detector(detector, cfg)
                _write_layout(detector, cfg.shape, cfg.bit_depth_image)
            self._write_calibration(detector, start)
            self._write_sample(_group(entry, "sample", "NXsample"), cfg, sample_name)
            _put(_group(entry, "source", "NXsource"), "name", source_name)
            if self.triage is not None:
                self.triage.create(handle, image_path=DATASET_PATH, date=iso_time(start_s))

    @staticmethod
    def _write_root(handle: h5py.File) -> None:
        version = detpipe_version()
        handle.attrs.update({
            "default": "entry", "file_name": str(handle.filename), "creator": "detpipe",
            "file_time": file_time_local().isoformat(timespec="seconds"),
            "creator_version": version, "HDF5_Version": h5py.version.hdf5_version, "h5py_version": h5py.__version__,
        })

    @staticmethod
    def _write_beam(beam: h5py.Group, cfg: DetectorConfig | None) -> None:
        if cfg is None:
            return
        wavelength = cfg.wavelength_a
        if wavelength is None and cfg.photon_energy_ev:
            wavelength = HC_EV_ANGSTROM / cfg.photon_energy_ev
        energy = cfg.photon_energy_ev
        if energy is None and wavelength:
            energy = HC_EV_ANGSTROM / wavelength
        _put(beam, "incident_wavelength", wavelength, "angstrom")
        _put(beam, "incident_energy", energy, "eV")

    @staticmethod
    def _write_detector(detector: h5py.Group, cfg: DetectorConfig) -> None:
        _put(detector, "sensor_material", cfg.sensor_material)
        _put(detector, "sensor_thickness", cfg.sensor_thickness_m, "m")
        _put(detector, "description", cfg.description or None)
        _put(detector, "detector_number", cfg.detector_number or None)
        _put(detector, "serial_number", cfg.detector_number or None)
        _put(detector, "count_time", cfg.count_time_s, "s")
        _put(detector, "frame_time", cfg.frame_time_s, "s")
        _put(detector, "beam_center_x", cfg.beam_center_x_px, "pixel")
        _put(detector, "beam_center_y", cfg.beam_center_y_px, "pixel")
        _put(detector, "distance", cfg.detector_distance_m, "m")
        _put(detector, "detector_distance", cfg.detector_distance_m, "m")
        _put(detector, "x_pixel_size", cfg.x_pixel_size_m, "m")
        _put(detector, "y_pixel_size", cfg.y_pixel_size_m, "m")
        _put(detector, "bit_depth_readout", cfg.bit_depth_readout)
        _put(detector, "saturation_value", cfg.saturation_value)
        _put(detector, "detector_readout_time", cfg.header.get("detector_readout_time"), "s")
        for flag in _DETECTOR_FLAGS:
            if isinstance(cfg.header.get(flag), bool):
                _put(detector, flag, cfg.header[flag])
        depends_on = "."
        if cfg.detector_distance_m is not None:
            transformations = _group(detector, "transformations", "NXtransformations")
            depends_on = _axis(transformations, "translation", cfg.detector_distance_m, "m", "translation",
                               (0.0, 0.0, 1.0), ".")
            _put(detector, "depends_on", depends_on)
        _write_module_geometry(_group(detector, "module", "NXdetector_module"), cfg, depends_on)
        specific = _group(detector, "detectorSpecific", "NXcollection")
        _put(specific, "nimages", cfg.nimages)
        _put(specific, "ntrigger", cfg.ntrigger)
        _put(specific, "photon_energy", cfg.photon_energy_ev, "eV")
        _put(specific, "trigger_mode", cfg.trigger_mode)
        _copy_header(specific, cfg.header)

    @staticmethod
    def _write_calibration(detector: h5py.Group, start: SeriesStart) -> None:
        compressed = dict(hdf5plugin.Bitshuffle(nelems=0, cname="lz4"))
        if start.pixel_mask is not None and np.ndim(start.pixel_mask) == 2:
            detector.create_dataset("pixel_mask", data=np.asarray(start.pixel_mask, np.uint32), **compressed)
        if start.flatfield is not None and np.ndim(start.flatfield) == 2:
            specific = _group(detector, "detectorSpecific", "NXcollection")
            specific.create_dataset("flatfield", data=np.asarray(start.flatfield, np.float32), **compressed)

    @staticmethod
    def _write_sample(sample: h5py.Group, cfg: DetectorConfig | None, name: str) -> None:
        _put(sample, "name", name)
        omega = _goniometer_axis(cfg.header, "omega") if cfg is not None else None
        if omega is None or cfg is None:
            _put(sample, "depends_on", ".")
            return
        start_deg, increment_deg = omega
        transformations = _group(sample, "transformations", "NXtransformations")
        # One angle per frame written, filled at finalise: the series may announce 10**8 frames it never sends.
        empty = np.zeros(0, float)
        path = _axis(transformations, "omega", empty, "degree", "rotation", OMEGA_VECTOR, ".")
        _put(transformations, "omega_end", empty, "degree")
        _put(transformations, "omega_increment_set", increment_deg, "degree")
        transformations.attrs["omega_start_set"] = start_deg
        _put(sample, "depends_on", path)

    def link_data_file(self, extent: DataFileExtent) -> None:
        """Adds ``/entry/data/data_<k:06d>``, the legacy ExternalLink XDS-style readers follow."""
        with rewrite_h5(self.path) as handle:
            group = handle["/entry/data"]
            name = f"data_{extent.number:06d}"
            if name in group:
                del group[name]
            group[name] = h5py.ExternalLink(extent.name, DATASET_PATH)
            if self.triage is not None:
                self.triage.flush(handle)

    def finalise(self, layout: FrameLayout | None, extents: Sequence[DataFileExtent], n_frames: int,
                 end_s: float) -> None:
        """Writes the frame-derived fields, the VDS over frames 0…n_frames-1 and ``end_time``.

        The layout of the frames wins over the header's (bit depth follows the exposure). Rows of lost
        frames, and of data files never created, read as the masked-pixel fill value.
        """
        with rewrite_h5(self.path) as handle:
            entry = handle["/entry"]
            group = entry["data"]
            for extent in extents:
                name = f"data_{extent.number:06d}"
                if name not in group:
                    group[name] = h5py.ExternalLink(extent.name, DATASET_PATH)
            if layout is not None:
                _write_layout(handle[DETECTOR], layout.shape, layout.bit_depth)
                if n_frames > 0:
                    _write_vds(group, layout, extents, n_frames)
                    group.attrs["signal"] = "data"
            _write_omega(handle, n_frames)
            _put(entry, "end_time", iso_time(end_s))
            if "end_time_estimated" not in entry:
                _put(entry, "end_time_estimated", iso_time(end_s))
            if self.triage is not None:
                self.triage.flush(handle, n_frames)


def _write_omega(handle: h5py.File, n_frames: int) -> None:
    """The rotation angle of each of the ``n_frames`` frames written (and where each exposure ended)."""
    transformations = handle.get("/entry/sample/transformations")
    if transformations is None or "omega_start_set" not in transformations.attrs:
        return
    start = float(transformations.attrs["omega_start_set"])
    increment = float(transformations["omega_increment_set"][()])
    values = start + increment * np.arange(n_frames, dtype=float)
    attrs = dict(transformations["omega"].attrs)
    _put(transformations, "omega", values, **attrs)
    _put(transformations, "omega_end", values + increment, "degree")
    del transformations.attrs["omega_start_set"]


def renumber_omega(handle: h5py.File, series_frames: Sequence[int]) -> None:
    """A RED master holds frames kept from a series, written as frames 0, 1, 2…: its omega must be each kept
    frame's angle in the series (``series_frames[k]`` is RED frame k's index there), not the first angles."""
    transformations = handle.get("/entry/sample/transformations")
    if transformations is None or "omega" not in transformations or "omega_increment_set" not in transformations:
        return
    omega = transformations["omega"]
    if not len(series_frames) or omega.shape != (len(series_frames),):
        return
    increment = float(transformations["omega_increment_set"][()])
    values = float(omega[0]) + increment * np.asarray(series_frames, dtype=float)  # RED frame 0 got the start
    attrs = dict(omega.attrs)
    _put(transformations, "omega", values, **attrs)
    _put(transformations, "omega_end", values + increment, "degree")


def _write_vds(group: h5py.Group, layout: FrameLayout, extents: Sequence[DataFileExtent], n_frames: int) -> None:
    vds = h5py.VirtualLayout(shape=(n_frames, *layout.shape), dtype=layout.dtype)
    for extent in extents:
        rows = min(extent.n_rows, n_frames - extent.first_index)
        if rows > 0:
            source = h5py.VirtualSource(extent.name, DATASET_PATH, shape=(extent.n_rows, *layout.shape))
            vds[extent.first_index : extent.first_index + rows] = source[0:rows]
    if "data" in group:
        del group["data"]
    create_untimed_virtual_dataset(group, "data", vds, fillvalue=layout.fill_value)


def _write_layout(detector: h5py.Group, shape: tuple[int, int], bit_depth: int) -> None:
    """Fields that follow the frames: data_size is slow-first [H, W] as NXmx says (not DECTRIS's reversed).
    ``layout`` is NXdetector's enumeration (point, linear or area), never a description."""
    _put(detector, "layout", "area")
    _put(detector, "bit_depth_image", bit_depth)
    module = _group(detector, "module", "NXdetector_module")
    _put(module, "data_origin", np.array([0, 0], np.int64))
    _put(module, "data_size", np.array(shape, np.int64))
    specific = _group(detector, "detectorSpecific", "NXcollection")
    _put(specific, "x_pixels_in_detector", shape[1])
    _put(specific, "y_pixels_in_detector", shape[0])


def _write_module_geometry(module: h5py.Group, cfg: DetectorConfig, depends_on: str) -> None:
    """Pixel axes in McStas coordinates (z along the beam, y up): fast along -x, slow along -y. The module
    offset puts the beam centre on the beam axis, so pixel (bcx, bcy) lies at the detector origin."""
    if cfg.beam_center_x_px is not None and cfg.beam_center_y_px is not None:
        offset = (cfg.beam_center_x_px * cfg.x_pixel_size_m, cfg.beam_center_y_px * cfg.y_pixel_size_m, 0.0)
        depends_on = _axis(module, "module_offset", 0.0, "m", "translation", (1.0, 0.0, 0.0), depends_on, offset)
    _axis(module, "fast_pixel_direction", cfg.x_pixel_size_m, "m", "translation", (-1.0, 0.0, 0.0), depends_on)
    _axis(module, "slow_pixel_direction", cfg.y_pixel_size_m, "m", "translation", (0.0, -1.0, 0.0), depends_on)


def _goniometer_axis(header: Mapping[str, Any], axis: str) -> tuple[float, float] | None:
    """(start, increment) in degrees from a V1 header (``omega_start``) or a V2 start (``goniometer``)."""
    pair: tuple[Any, Any] = (header.get(f"{axis}_start"), header.get(f"{axis}_increment"))
    goniometer = header.get("goniometer")
    if isinstance(goniometer, Mapping) and isinstance(goniometer.get(axis), Mapping):
        pair = (goniometer[axis].get("start"), goniometer[axis].get("increment"))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair):
        return float(pair[0]), float(pair[1])
    return None


def _copy_header(specific: h5py.Group, header: Mapping[str, Any]) -> None:
    """Copies the detector's scalar config values, as the DECTRIS filewriter fills detectorSpecific."""
    for key, value in header.items():
        if key in _NOT_COPIED or key in specific or "/" in key or key in {"", "."}:
            continue
        if isinstance(value, (bool, float, str)) or (isinstance(value, int) and -(2**63) <= value < 2**63):
            _put(specific, key, value)

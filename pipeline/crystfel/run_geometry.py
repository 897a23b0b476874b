"""The CrystFEL geometry file of a run: what indexamajig needs to read a detpipe master and its peak list.

The file describes the run's own master, so CrystFEL reads it as written (``detpipe geom``):

- **Eiger** (NXmx master): one panel per detector module, at the master's own pixel axes (NXmx
  ``fast_pixel_direction``/``slow_pixel_direction``, McStas = CrystFEL lab frame: z along the beam, y up),
  the beam at (``beam_center_x``, ``beam_center_y``) measured from the detector corner as DIALS reads the same
  master; ``clen`` from ``distance``, ``photon_energy`` from ``incident_energy``; the master's
  ``pixel_mask`` as mask 0 (any set bit is bad).
- **AGIPD** (corrected run master): the slab view ``/entry/data/data_slab`` (frames, 16·512, 128), which
  pairs with the stacked peak coordinates of the CXI peak list; 128 ASIC panels ``p<module>a<asic>`` (extra-geom's
  names) in the idealised quadrant layout detpipe's triage used (extra-geom's ``from_quad_positions``
  conventions); ``mask_slab`` as mask 0. The master holds no detector distance or photon energy: give them
  (``clen_m``, ``photon_energy_ev``) or the file says where to set them. A raw run has no photons to index:
  correct it first.

Peaks: ``peak_list = /entry_1/result_1`` (``peak_list_type = cxi``) when the run was triaged.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np

from ..agipd.geometry import ASIC_SS, DEFAULT_QUAD_POSITIONS, MODULE_FS, agipd_tiles
from ..core.crystfel_geometry import CrystfelGeometry, GeomMask, GeomPanel, format_crystfel_geometry
from ..core.errors import ConfigError
from ..core.software_version import detpipe_version
from ..eiger.panels import eiger_panels
from ..exdf.nexus_master import PIXEL_SIZE_M as AGIPD_PIXEL_SIZE_M
from ..nexus.cxi_peak_list import CXI_PATH
from ..nexus.nxmx_frame_source import NxmxFrameSource
from ..nexus.nxmx_master import DETECTOR, HC_EV_ANGSTROM
from ..report.run_files import RunFiles, RunKind, locate_run

FRAME_DIMS = ("%", "ss", "fs")
ALL_BITS = 0xFFFFFFFF  # NXmx pixel_mask and AGIPD mask: any set bit marks the pixel bad


def write_run_geometry(path: Path, output: Path | None = None, *, clen_m: float | None = None,
                       photon_energy_ev: float | None = None) -> Path:
    """Write the geometry of the run at ``path`` (a master, or an AGIPD run folder) to ``output`` (default:
    ``<master stem>.geom`` next to the master); an existing file is never overwritten."""
    run = locate_run(path)
    geometry, header = run_geometry(run, clen_m=clen_m, photon_energy_ev=photon_energy_ev)
    target = output if output is not None else run.master.with_suffix(".geom")
    text = format_crystfel_geometry(geometry, header)
    try:
        with open(target, "x", encoding="utf-8") as file:
            file.write(text)
    except FileExistsError:
        raise ConfigError([f"{target} exists; a geometry file is never overwritten: remove it or give another "
                           "--output"]) from None
    return target


def run_geometry(run: RunFiles, *, clen_m: float | None = None, photon_energy_ev: float | None = None
                 ) -> tuple[CrystfelGeometry, list[str]]:
    """The run's geometry and the comment lines that head its file (origin, conventions, what is unset)."""
    with h5py.File(run.master, "r") as handle:
        if run.kind is RunKind.EIGER:
            geometry, notes = _eiger_geometry(run.master, handle)
        else:
            geometry, notes = _agipd_geometry(handle, run.master)
        triaged = CXI_PATH in handle
    settings = dict(geometry.settings)
    if clen_m is not None:
        settings["clen"] = f"{clen_m:.6g}"
    if photon_energy_ev is not None:
        settings["photon_energy"] = f"{photon_energy_ev:.6g}"
    unset = [key for key in ("clen", "photon_energy") if key not in settings]
    if triaged:
        settings.update(peak_list=CXI_PATH, peak_list_type="cxi")
    header = [
        f"CrystFEL geometry of {run.master.name} ({run.label}), written by detpipe {detpipe_version()}",
        "Lab frame as CrystFEL's and NXmx's: z along the beam, y up; the beam at x = y = 0; pixel units.",
        "clen in metres, photon_energy in eV (numbers without units, as every geometry reader takes them).",
        *notes,
        *(f"{key} = SET ME: the master does not record it (detpipe geom --{key.replace('_', '-')})" for key in unset),
    ]
    if triaged:
        header.append(f"Peaks: the CXI peak list {CXI_PATH}, pixel indices; keep CrystFEL's half-pixel shift.")
    return replace(geometry, settings=settings), header


def _eiger_geometry(master: Path, handle: h5py.File) -> tuple[CrystfelGeometry, list[str]]:
    """From the series start the master records (``NxmxFrameSource``, the reader ``detpipe reduce`` uses) and the
    pixel axes of its detector module."""
    start = NxmxFrameSource(master).series_start()
    config = start.config
    if config is None or not config.x_pixel_size_m > 0:
        raise ConfigError([f"{master} records no detector configuration (pixel size, shape): not an NXmx master "
                           "detpipe can describe"])
    fs, ss = (_pixel_axis(handle[DETECTOR], name) for name in ("fast_pixel_direction", "slow_pixel_direction"))
    notes = []
    beam_x, beam_y = config.beam_center_x_px, config.beam_center_y_px
    if beam_x is None or beam_y is None:
        beam_x, beam_y = config.shape[1] / 2.0, config.shape[0] / 2.0
        notes.append("The master records no beam centre: the image centre is assumed, as detpipe's triage does.")
    # The beam, at (beam_x, beam_y) from the detector's corner, is the lab origin.
    corner = -(beam_x * np.asarray(fs) + beam_y * np.asarray(ss))
    panels = []
    for index, (ss0, ss1, fs0, fs1) in enumerate(eiger_panels(config.shape).tolist()):
        origin = corner + fs0 * np.asarray(fs) + ss0 * np.asarray(ss)
        panels.append(GeomPanel(f"m{index}", min_fs=fs0, max_fs=fs1 - 1, min_ss=ss0, max_ss=ss1 - 1,
                                corner_x=float(origin[0]), corner_y=float(origin[1]), fs=fs, ss=ss, dims=FRAME_DIMS,
                                data="/entry/data/data", res=1.0 / config.x_pixel_size_m))
    settings = {"adu_per_photon": "1"}
    if config.detector_distance_m is not None:
        settings["clen"] = f"{config.detector_distance_m:.6g}"
    energy = config.photon_energy_ev or (HC_EV_ANGSTROM / config.wavelength_a if config.wavelength_a else None)
    if energy:
        settings["photon_energy"] = f"{energy:.6g}"
    masks = (GeomMask(0, f"{DETECTOR}/pixel_mask", None, 0, ALL_BITS),) if start.pixel_mask is not None else ()
    if len(panels) > 1:
        notes.append(f"One panel per detector module ({len(panels)}); the gaps between them hold no pixels.")
    return CrystfelGeometry(tuple(panels), masks=masks, settings=settings), notes


def _agipd_geometry(handle: h5py.File, master: Path) -> tuple[CrystfelGeometry, list[str]]:
    if "/entry/data/data_slab" not in handle:
        raise ConfigError([f"{master} is a raw AGIPD run: CrystFEL needs photons, so correct the run first "
                           "(AgipdDetector ConstantsFile); its master then holds the slab view /entry/data/data_slab"])
    panels = tuple(
        GeomPanel(f"p{tile.module}a{tile.asic}", min_fs=0, max_fs=MODULE_FS - 1, min_ss=tile.stacked_rows.start,
                  max_ss=tile.stacked_rows.start + ASIC_SS - 1, corner_x=tile.corner[0], corner_y=tile.corner[1],
                  fs=(*tile.fs_vector, 0.0), ss=(*tile.ss_vector, 0.0), dims=FRAME_DIMS,
                  data="/entry/data/data_slab", res=1.0 / AGIPD_PIXEL_SIZE_M)
        for tile in agipd_tiles(DEFAULT_QUAD_POSITIONS)
    )
    quads = ", ".join(f"({x:g}, {y:g})" for x, y in DEFAULT_QUAD_POSITIONS)
    notes = [
        f"AGIPD-1M: the idealised quadrant layout detpipe's triage used, quadrant positions {quads} px",
        "(extra-geom AGIPD_1MGeometry.from_quad_positions, asic_gap 2, panel_gap 29). For indexing, prefer your",
        "instrument's refined geometry, with data = /entry/data/data_slab, dim0 = %, dim1 = ss, dim2 = fs.",
    ]
    masks = (GeomMask(0, "/entry/data/mask_slab", None, 0, ALL_BITS),)
    return CrystfelGeometry(panels, masks=masks, settings={"adu_per_photon": "1"}), notes


def _pixel_axis(detector: h5py.Group, name: str) -> tuple[float, float, float]:
    node = detector.get(f"module/{name}")
    if node is None or "vector" not in node.attrs:
        raise ConfigError([f"{detector.file.filename} has no {detector.name}/module/{name} with a vector"])
    vector = np.asarray(node.attrs["vector"], dtype=np.float64)
    return float(vector[0]), float(vector[1]), float(vector[2])

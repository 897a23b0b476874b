"""The triage geometry from a CrystFEL geometry file: a measured layout and mask instead of the built-in one.

A beamline refines its detector geometry (panel positions, beam centre) and bad-pixel masks in CrystFEL
format; ``HitFinder.GeometryFile`` lets the online triage use exactly that. Everything peak finding needs
comes from the file:

- the radius of every pixel centre from the beam (lab (0, 0)), from each panel's corner and fs/ss vectors;
- the panels peaks may not cross (each geometry panel, as CrystFEL's peakfinder8 treats them);
- the mask: ``no_index`` panels, ``mask_edge_pixels``, bad regions (lab x/y or panel fs/ss) and every mask
  held in a file of its own (``maskN_file``, relative paths from the geometry file's folder, CrystFEL's
  good/bad-bit rule).

A mask without a file is read by CrystFEL from each image's own file: for detpipe's outputs that is the
detector's pixel mask (Eiger ``pixel_mask``, AGIPD per-frame ``mask``), which triage applies anyway, so it is
skipped with a note. The image is the detector's triage image, (H, W) for an Eiger and the stacked
(16·512, 128) for AGIPD-1M; a module-indexed AGIPD geometry (``dim1 = <module>``, EuXFEL's usual layout)
maps module m's rows to ``512·m …`` of the stack.
"""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
from numpy.typing import NDArray

from ..core.crystfel_geometry import BadRegion, CrystfelGeometry, GeomMask, GeomPanel
from ..core.errors import ConfigError
from ..core.triage_params import TriageParams
from .geometry import TriageGeometry

log = logging.getLogger(__name__)


def crystfel_triage_geometry(
    geometry: CrystfelGeometry,
    shape: tuple[int, int],
    *,
    good: NDArray[np.bool_],
    base_dir: Path,
    params: TriageParams,
) -> TriageGeometry:
    """The triage geometry of a ``shape`` image laid out by ``geometry``; ``good`` is the detector's own
    good-pixel map (pixel mask, user mask), ANDed with the geometry's masks."""
    rectangles = _panel_rectangles(geometry, shape)
    x = np.full(shape, np.nan, dtype=np.float64)  # outside every panel: no position, so no radius
    y = np.full(shape, np.nan, dtype=np.float64)
    good = good.copy()
    for panel, (rows, cols) in zip(geometry.panels, rectangles, strict=True):
        x[rows, cols], y[rows, cols] = panel.pixel_centres()
        if panel.no_index:
            good[rows, cols] = False
        elif (edge := panel.mask_edge_pixels) > 0:
            view = good[rows, cols]
            inner = view[edge:-edge, edge:-edge].copy()
            view[...] = False
            view[edge:-edge, edge:-edge] = inner
    for region in geometry.bad_regions:
        good &= ~_bad_region(region, geometry, rectangles, x, y)
    for mask in geometry.masks:
        if mask.file is None:
            log.info("%s: mask %d (%s) is read from each image's own file, i.e. the detector's pixel mask, which "
                     "triage applies anyway", geometry.source, mask.number, mask.data)
            continue
        good &= ~mask.bad(_mask_values(mask, base_dir, shape, geometry.source))
    if geometry.ignored:
        log.info("%s: keys not used by peak finding: %s", geometry.source, ", ".join(geometry.ignored))
    panels = [(r.start, r.stop, c.start, c.stop) for r, c in rectangles]
    return TriageGeometry.build(np.hypot(x, y), good, panels, min_res=params.min_res, max_res=params.max_res,
                                pixels_per_ring=params.pixels_per_ring)


def _panel_rectangles(geometry: CrystfelGeometry, shape: tuple[int, int]) -> list[tuple[slice, slice]]:
    """Each panel's rows and columns in the triage image; every panel outside it is named in one error."""
    block_rows = max((p.max_ss + 1 for p in geometry.panels if p.fixed_index is not None), default=0)
    rectangles, problems = [], []
    for panel in geometry.panels:
        offset = (panel.fixed_index or 0) * block_rows
        rows = slice(offset + panel.min_ss, offset + panel.max_ss + 1)
        cols = slice(panel.min_fs, panel.max_fs + 1)
        if rows.stop > shape[0] or cols.stop > shape[1]:
            problems.append(f"panel {panel.name} reaches image row {rows.stop - 1}, column {cols.stop - 1}, "
                            f"outside the detector's {shape[0]} × {shape[1]} image")
        rectangles.append((rows, cols))
    if problems:
        raise ConfigError([f"CrystFEL geometry {geometry.source} is not this detector's: {problems[0]}"
                           + (f" (and {len(problems) - 1} more panels)" if len(problems) > 1 else "")])
    return rectangles


def _bad_region(region: BadRegion, geometry: CrystfelGeometry, rectangles: list[tuple[slice, slice]],
                x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Pixels of a bad region: pixel centres inside its lab x/y box, or its inclusive fs/ss box of one panel
    (in that panel's data coordinates)."""
    bad = np.zeros(x.shape, dtype=bool)
    if region.x is not None and region.y is not None:
        with np.errstate(invalid="ignore"):
            bad = (x >= region.x[0]) & (x <= region.x[1]) & (y >= region.y[0]) & (y <= region.y[1])
        return bad
    assert region.panel is not None and region.fs is not None and region.ss is not None
    index = [p.name for p in geometry.panels].index(region.panel)
    panel: GeomPanel = geometry.panels[index]
    rows, cols = rectangles[index]
    ss0, ss1 = max(region.ss[0], panel.min_ss), min(region.ss[1], panel.max_ss)
    fs0, fs1 = max(region.fs[0], panel.min_fs), min(region.fs[1], panel.max_fs)
    if ss0 <= ss1 and fs0 <= fs1:
        row0, col0 = rows.start - panel.min_ss, cols.start - panel.min_fs
        bad[row0 + ss0 : row0 + ss1 + 1, col0 + fs0 : col0 + fs1 + 1] = True
    return bad


def _mask_values(mask: GeomMask, base_dir: Path, shape: tuple[int, int], source: str) -> NDArray[np.integer]:
    assert mask.file is not None
    file = Path(mask.file) if Path(mask.file).is_absolute() else base_dir / mask.file
    where = f"CrystFEL geometry {source}: mask {mask.number} ({file}:{mask.data})"
    if not file.is_file():
        raise ConfigError([f"{where}: the file does not exist"])
    try:
        with h5py.File(file, "r") as handle:
            node = handle.get(mask.data)
            if not isinstance(node, h5py.Dataset):
                raise ConfigError([f"{where}: the file has no such dataset"])
            values = node[()]
    except OSError as err:
        raise ConfigError([f"{where}: not a readable HDF5 file ({err})"]) from err
    values = np.asarray(values)
    if values.dtype.kind not in "biu" or values.size != shape[0] * shape[1]:
        raise ConfigError([f"{where}: a {values.shape} {values.dtype} array, not {shape[0]} × {shape[1]} integers"])
    return values.reshape(shape)

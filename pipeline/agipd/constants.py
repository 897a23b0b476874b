"""The AGIPD correction constants file (docs/agipd_constants.md), read and checked once per correction stage.

The file is detpipe's own compact format (≈ 38 MB): per-pixel offsets and gains per gain stage, a
per-cell offset shift, and per-pixel digital-gain thresholds. Every problem of a file is collected into
one ``ConfigError``, because a wrong constants file is an operator's mistake to fix in
one go, not a stream error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..core.errors import ConfigError
from ..core.train import AGIPD_MODULES, MODULE_SHAPE

GAIN_STAGES = 3  # high, medium, low (European XFEL AGIPD documentation)
NO_ROW = -1  # cell_row of a cellId the file does not describe

_PIXEL_DATASETS = {
    "offset_pixel": (AGIPD_MODULES, GAIN_STAGES, *MODULE_SHAPE),
    "relgain": (AGIPD_MODULES, GAIN_STAGES, *MODULE_SHAPE),
    "threshold": (AGIPD_MODULES, 2, *MODULE_SHAPE),
}


@dataclass(frozen=True, slots=True)
class AgipdConstants:
    """Correction constants, float32 C-contiguous as the kernel reads them.

    ``offset[m, cell, stage, ss, fs] = offset_pixel[m, stage, ss, fs] + offset_cell[m, row, stage]`` with
    ``row = cell_rows(cellId)``; photons = ``(analog − offset[stage]) × relgain[stage]``.
    """

    offset_pixel: np.ndarray  # (16, 3, 512, 128) ADU
    offset_cell: np.ndarray  # (16, n_cells, 3) ADU
    relgain: np.ndarray  # (16, 3, 512, 128) photons per ADU
    threshold: np.ndarray  # (16, 2, 512, 128) digital ADU: stage = (d > t0) + (d > t1)
    cell_ids: np.ndarray  # uint16 (n_cells,): the cellId of each offset_cell row
    path: Path | None = None

    @classmethod
    def from_file(cls, path: Path | str) -> AgipdConstants:
        """Read and check ``path``; raises ``ConfigError`` listing every problem, or ``OSError``."""
        path = Path(path)
        problems: list[str] = []
        arrays: dict[str, np.ndarray] = {}
        with h5py.File(path, "r") as f:
            for name in (*_PIXEL_DATASETS, "offset_cell", "cell_ids"):
                if not isinstance(f.get(name), h5py.Dataset):
                    problems.append(f"{path}: dataset /{name} is missing")
                    continue
                arrays[name] = f[name][()]
        problems += _shape_problems(arrays, path)
        if problems:
            raise ConfigError(problems)
        return cls(
            offset_pixel=np.ascontiguousarray(arrays["offset_pixel"], np.float32),
            offset_cell=np.ascontiguousarray(arrays["offset_cell"], np.float32),
            relgain=np.ascontiguousarray(arrays["relgain"], np.float32),
            threshold=np.ascontiguousarray(arrays["threshold"], np.float32),
            cell_ids=np.ascontiguousarray(arrays["cell_ids"], np.uint16),
            path=path,
        )

    def write(self, path: Path | str) -> None:
        """Write the file format of docs/agipd_constants.md (tests and tools build constants with it)."""
        with h5py.File(path, "w") as f:
            for name in ("offset_pixel", "offset_cell", "relgain", "threshold"):
                f[name] = np.asarray(getattr(self, name), np.float32)
            f["cell_ids"] = np.asarray(self.cell_ids, np.uint16)

    @property
    def n_cells(self) -> int:
        return int(self.cell_ids.shape[0])

    def cell_rows(self, cell_ids: np.ndarray) -> np.ndarray:
        """int32 row of each cellId in ``offset_cell``; ``NO_ROW`` (-1) for a cell the file lacks."""
        wanted = np.asarray(cell_ids).astype(np.int64).reshape(-1)
        order = np.argsort(self.cell_ids, kind="stable")
        known = self.cell_ids[order].astype(np.int64)
        pos = np.minimum(np.searchsorted(known, wanted), max(self.n_cells - 1, 0))
        found = (known[pos] == wanted) if self.n_cells else np.zeros(wanted.shape, bool)
        return np.where(found, order[pos] if self.n_cells else NO_ROW, NO_ROW).astype(np.int32)


def load_constants(path: Path | str) -> AgipdConstants:
    """``AgipdConstants.from_file``: the constants file at ``path``, checked (raises ``ConfigError``)."""
    return AgipdConstants.from_file(path)


def _shape_problems(arrays: dict[str, np.ndarray], path: Path) -> list[str]:
    problems = []
    for name, shape in _PIXEL_DATASETS.items():
        if name in arrays and arrays[name].shape != shape:
            problems.append(f"{path}: /{name} has shape {arrays[name].shape}, expected {shape}")
    cells = arrays.get("cell_ids")
    if cells is not None:
        out_of_range = cells.size > 0 and cells.dtype.kind in "ui" and (cells.min() < 0 or cells.max() > 0xFFFF)
        if cells.ndim != 1 or cells.dtype.kind not in "ui" or out_of_range:
            problems.append(f"{path}: /cell_ids must be a 1-D list of uint16 cellIds, got {cells.dtype} {cells.shape}")
        elif np.unique(cells).size != cells.size:
            problems.append(f"{path}: /cell_ids lists a cellId twice")
    offset_cell = arrays.get("offset_cell")
    if offset_cell is not None and cells is not None:
        expected = (AGIPD_MODULES, cells.reshape(-1).size, GAIN_STAGES)
        if offset_cell.shape != expected:
            problems.append(f"{path}: /offset_cell has shape {offset_cell.shape}, expected {expected}")
    for name, values in arrays.items():
        if values.dtype.kind not in "uif":
            problems.append(f"{path}: /{name} has non-numeric dtype {values.dtype}")
    return problems

"""Triage results read back from a master (``/entry/process_01/results`` and the CXI peak list, triage_process.py),
for the offline sources that replay an archived series or run: nxmx_frame_source.py (Eiger) and
exdf/run_source.py (AGIPD). Row k is frame k of the master's image stack in both.

Memory is ``block_rows`` rows cut to the block's widest stored peak list: rows are padded to ``max_num_peaks``
on disk, and 1024 rows × 2048 peaks × 6 columns would be 48 MiB uncut.
"""

from __future__ import annotations

import h5py
import numpy as np

from ..core.peak_list import FrameTriage, PeakList
from .cxi_peak_list import CXI_COLUMNS, CXI_PATH
from .triage_process import PROCESS_PATH, RESULT_FIELDS


class StoredTriage:
    """``process_01/results`` and the CXI peak list, read ``block_rows`` frames at a time (the writer's
    flush unit); -1 in ``n_peaks`` means not triaged, and rows past the end were never written (also None).
    ``time_ms`` is 0.0 (not stored) and ``peaks`` holds only the stored peaks (``n_peaks`` may count more)."""

    def __init__(self, handle: h5py.File, block_rows: int) -> None:
        self._results, self._cxi = handle[f"{PROCESS_PATH}/results"], handle.get(CXI_PATH)
        self._block_rows = max(1, block_rows)
        self._first = -1  # first frame of the block in memory; _load sets the block's arrays

    def at(self, index: int) -> FrameTriage | None:
        """The result of frame ``index`` (0-based row of the master's image stack)."""
        if self._first != index - index % self._block_rows:
            self._load(index - index % self._block_rows)
        k = index - self._first
        if k >= len(self._values["n_peaks"]) or self._values["n_peaks"][k] < 0:
            return None
        n = int(self._stored[k])
        peaks = PeakList(*(np.array(self._columns[c, k, :n], np.float32) for c in range(len(CXI_COLUMNS))))
        return FrameTriage(int(self._values["n_peaks"][k]), peaks, int(self._values["lit_pixels"][k]),
                           bool(self._values["is_hit"][k]), bool(self._values["vetoed"][k]), time_ms=0.0)

    def range(self, first: int, count: int) -> tuple[FrameTriage | None, ...]:
        """Frames ``first … first + count - 1`` (an AGIPD train); a train crosses at most one block edge
        when ``count`` ≤ ``block_rows``, so this reads each block once."""
        return tuple(self.at(index) for index in range(first, first + count))

    def _load(self, first: int) -> None:
        last = first + self._block_rows
        self._first = first
        self._values = {name: self._results[name][first:last] for name, _ in RESULT_FIELDS}
        rows = len(self._values["n_peaks"])
        self._stored = np.zeros(rows, np.int32)
        if self._cxi is not None:
            found = self._cxi["nPeaks"][first:last][:rows]
            self._stored[: len(found)] = found
        width = int(self._stored.max(initial=0))
        self._columns = np.zeros((len(CXI_COLUMNS), rows, width), np.float32)
        for c, (name, _) in enumerate(CXI_COLUMNS if width and self._cxi is not None else ()):
            found = self._cxi[name][first:last, :width][:rows]
            self._columns[c, : len(found)] = found

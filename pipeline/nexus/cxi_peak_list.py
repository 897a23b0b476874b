"""The CXI peak list at ``/entry_1/result_1`` (the CXI peak-list layout) and the small buffer of rows waiting for it.

CrystFEL (``peak_list_type = cxi``), Cheetah and OM read one row per frame: ``nPeaks`` (N,) and six
(N, max_num_peaks) float32 columns padded with zeros beyond ``nPeaks[n]``; CrystFEL reads only
``nPeaks``, ``peakXPosRaw``, ``peakYPosRaw`` and ``peakTotalIntensity``. Row n is frame n of the image
stack in the same file, so a frame that never arrived, or was not triaged, must still read as a row:
the datasets grow to the highest frame index + 1 and unwritten rows read as the fill value 0.

Writers never hold a series' results: ``PeakRowBuffer`` keeps only the peaks each frame stored (not the
padding) until the writer next opens the master, and ``write_cxi_rows`` pads them on the way to disk.
Compression is deflate with shuffle, which every HDF5 build has (CrystFEL needs no plugin). Deflating
the padding is what costs: ~0.1 ms per frame for 2048-wide rows at level 1 (level 4 ~0.17 ms), so the
level is 1; a smaller ``max_num_peaks`` makes it proportionally cheaper.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import h5py
import numpy as np
from numpy.typing import NDArray

from ..core.peak_list import FrameTriage

CXI_PATH = "/entry_1/result_1"
CXI_DATA_PATH = "/entry_1/data_1/data"
# CXI dataset name -> PeakList attribute, in the order rows are stored (the CXI peak-list layout).
CXI_COLUMNS: tuple[tuple[str, str], ...] = (
    ("peakXPosRaw", "fs"),
    ("peakYPosRaw", "ss"),
    ("peakTotalIntensity", "intensity"),
    ("peakSNR", "snr"),
    ("peakNPixels", "npix"),
    ("peakMaximumValue", "max_value"),
)
FLUSH_ROWS = 1024  # rows buffered before the writer opens the master just to store them
FRAME_CHUNK_ROWS = 1024  # chunk of the (N,) per-frame datasets
DEFLATE: dict[str, object] = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
_MAX_CHUNK_BYTES = 1 << 20  # 1 MiB: HDF5's default per-dataset chunk cache holds one whole chunk
_NO_PEAKS = np.zeros((len(CXI_COLUMNS), 0), np.float32)


def cxi_chunk_rows(max_num_peaks: int) -> int:
    """Rows per chunk of the padded columns: 64 at the default width 2048 (512 KiB), fewer for wider rows."""
    return int(np.clip(_MAX_CHUNK_BYTES // (4 * max_num_peaks), 1, 64))


@dataclass(frozen=True, slots=True, eq=False)
class PeakRow:
    """One frame's triage result as buffered. ``peaks`` is (6, stored) float32 in ``CXI_COLUMNS`` order,
    a copy, so the buffer never keeps a worker's larger arrays alive. The per-frame values use the NXprocess
    results convention (triage_process.py): -1 everywhere when the frame was not triaged."""

    index: int
    n_peaks: int  # every accepted peak (may exceed the stored ones); -1 = not triaged
    lit_pixels: int  # -1 = not triaged
    is_hit: int  # 1 hit, 0 miss, -1 not triaged
    vetoed: int  # 1 = lit-pixel pre-veto decided "miss", 0 = peakfinder8 ran, -1 = not triaged
    peaks: NDArray[np.float32]

    @classmethod
    def of(cls, index: int, triage: FrameTriage | None, max_num_peaks: int) -> PeakRow:
        if triage is None:
            return cls(index, -1, -1, -1, -1, _NO_PEAKS)
        stored = min(len(triage.peaks), max_num_peaks)
        peaks = np.stack([np.asarray(getattr(triage.peaks, attr)[:stored], np.float32) for _, attr in CXI_COLUMNS])
        return cls(index, int(triage.n_peaks), int(triage.lit_pixels), int(triage.is_hit), int(triage.vetoed), peaks)

    @property
    def stored(self) -> int:
        """``nPeaks`` of this row: the peaks written, at most ``max_num_peaks`` (0 when not triaged)."""
        return int(self.peaks.shape[1])


class PeakRowBuffer:
    """Rows received since the last flush, keyed by frame index (a repeated index keeps the last result).

    ``full`` tells the writer to flush although it would not open the master yet; the bound of
    ``flush_rows`` rows keeps memory at ~1024 frames' peaks (~100 kB for typical frames, at most ~50 MB
    with 2048 stored peaks each). After a failed flush (a reader holds the master locked) ``defer`` moves
    the bound on by another ``flush_rows`` rows, so the writer does not retry at every frame.
    ``highest_index`` survives ``clear``: datasets are grown to cover every frame seen.
    """

    def __init__(self, max_num_peaks: int, *, flush_rows: int = FLUSH_ROWS) -> None:
        self.max_num_peaks = max_num_peaks
        self.flush_rows = flush_rows
        self.highest_index = -1
        self._rows: dict[int, PeakRow] = {}
        self._bound = flush_rows

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def full(self) -> bool:
        return len(self._rows) >= self._bound

    def add(self, index: int, triage: FrameTriage | None) -> None:
        self._rows[index] = PeakRow.of(index, triage, self.max_num_peaks)
        self.highest_index = max(self.highest_index, index)

    def blocks(self) -> list[list[PeakRow]]:
        """The rows in index order, split into runs of consecutive indices that never cross a CXI chunk
        boundary, so each block is one hyperslab write per dataset and at most one chunk of padding."""
        chunk = cxi_chunk_rows(self.max_num_peaks)
        blocks: list[list[PeakRow]] = []
        for row in (self._rows[i] for i in sorted(self._rows)):
            last = blocks[-1][-1] if blocks else None
            if last is None or row.index != last.index + 1 or row.index % chunk == 0:
                blocks.append([row])
            else:
                blocks[-1].append(row)
        return blocks

    def clear(self) -> None:
        """Drops the rows once they are on disk; a failed write keeps them for the next flush."""
        self._rows.clear()
        self._bound = self.flush_rows

    def defer(self) -> None:
        self._bound = len(self._rows) + self.flush_rows


def create_cxi_peak_list(handle: h5py.File, max_num_peaks: int, *, image_path: str) -> None:
    """Creates the empty CXI layout: ``/entry_1`` (NXentry), ``result_1`` (NXcollection) and ``data_1``.

    ``result_1`` is an NXcollection, not an NXdata: its arrays have two shapes and no common axes, and the
    plottable per-frame view is the NXprocess ``results`` NXdata (NeXus NXprocess). ``data_1/data`` is a soft
    link to the image stack at ``image_path``, so the CXI view of the file is self-contained; it dangles
    until the stack exists (the Eiger VDS is written when the series ends).
    """
    entry = handle.require_group("entry_1")
    entry.attrs["NX_class"] = "NXentry"
    result = entry.create_group("result_1")
    result.attrs["NX_class"] = "NXcollection"
    result.create_dataset("nPeaks", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(FRAME_CHUNK_ROWS,),
                          fillvalue=0, **DEFLATE)
    width, rows = max_num_peaks, cxi_chunk_rows(max_num_peaks)
    for name, _ in CXI_COLUMNS:
        result.create_dataset(name, shape=(0, width), maxshape=(None, width), dtype=np.float32, chunks=(rows, width),
                              fillvalue=np.float32(0), **DEFLATE)
    data = entry.create_group("data_1")
    data.attrs.update({"NX_class": "NXdata", "signal": "data"})
    data["data"] = h5py.SoftLink(image_path)


def grow_rows(dataset: h5py.Dataset, n_rows: int) -> None:
    """Extends axis 0 to ``n_rows``; never shrinks (rows already written stay)."""
    if dataset.shape[0] < n_rows:
        dataset.resize(n_rows, axis=0)


def write_cxi_rows(handle: h5py.File, blocks: Sequence[Sequence[PeakRow]], n_rows: int) -> None:
    """Writes ``blocks`` (from ``PeakRowBuffer.blocks``) into ``/entry_1/result_1`` after growing every dataset
    to at least ``n_rows`` and past the last block.

    Only the first ``w`` columns of a block are written, ``w`` its widest row: the padding beyond them is
    the fill value, so a block of frames with few peaks costs a few narrow hyperslab writes.
    """
    result = handle[CXI_PATH]
    n_rows = max([n_rows] + [block[-1].index + 1 for block in blocks])
    for name in ("nPeaks", *(name for name, _ in CXI_COLUMNS)):
        grow_rows(result[name], n_rows)
    for block in blocks:
        first, last = block[0].index, block[-1].index + 1
        result["nPeaks"][first:last] = np.array([row.stored for row in block], np.int32)
        width = max(row.stored for row in block)
        if width == 0:
            continue
        padded = np.zeros((len(CXI_COLUMNS), len(block), width), np.float32)
        for k, row in enumerate(block):
            padded[:, k, : row.stored] = row.peaks
        for column, (name, _) in enumerate(CXI_COLUMNS):
            result[name][first:last, :width] = padded[column]


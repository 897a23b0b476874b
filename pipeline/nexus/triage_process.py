"""The triage step's record in a series' master file: ``/entry/process_01`` (NeXus NXprocess) and the CXI
peak list it names (cxi_peak_list.py).

``process_01`` is detpipe's provenance convention: ``program``/``version``/``date``/``sequence_index``,
``parameters`` (NXparameters, one field per ``TriageParams`` field with its unit), ``notes_01`` (NXnote
whose ``data`` is the exact JSON ``TriageParams.from_mapping`` accepts, with its sha256, so the settings
can be fed back and checked), ``peak_list`` naming the CXI group, and ``results`` (NXdata) with one
row per frame of the image stack. Per-frame results use -1, their fill value, for "not triaged": a frame
that arrived untriaged (triage fell behind) is written as -1 and a frame that never arrived is never
written, so both read the same and neither looks like a miss.

``TriageProcess`` is what a writer holds for a triaged series. It never holds the series' results: rows
wait in a ``PeakRowBuffer`` until the writer opens the master anyway (``flush``) or the buffer is full
(``flush_file`` opens and closes the master itself), so the master is never kept open between steps.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from ..core.peak_list import FrameTriage
from ..core.saving_target import rewrite_h5
from ..core.triage_params import UNITS, TriageParams
from .cxi_peak_list import (
    CXI_COLUMNS,
    CXI_PATH,
    DEFLATE,
    FLUSH_ROWS,
    FRAME_CHUNK_ROWS,
    PeakRow,
    PeakRowBuffer,
    create_cxi_peak_list,
    grow_rows,
    write_cxi_rows,
)
from .nx_process import create_process, read_json_note, write_json_note, write_parameters

log = logging.getLogger(__name__)

PROCESS_PATH = "/entry/process_01"
NOTE_DESCRIPTION = (
    "detpipe triage parameters: the JSON of TriageParams.to_mapping(). Feed back with "
    "detpipe.pipeline.nexus.triage_process.read_triage_params(<master file>), which checks the sha256, or "
    "TriageParams.from_mapping(json.loads(data)). Peak list: CXI at /entry_1/result_1 "
    "(CrystFEL: peak_list = /entry_1/result_1, peak_list_type = cxi); row n = frame n of /entry/data/data."
)
# Per-frame results (name, dtype); -1 = not triaged. ``vetoed`` = 1 when the lit-pixel pre-veto made the call.
RESULT_FIELDS: tuple[tuple[str, type[np.integer]], ...] = (
    ("n_peaks", np.int32), ("is_hit", np.int8), ("lit_pixels", np.int64), ("vetoed", np.int8))


def write_process_group(handle: h5py.File, params: TriageParams, *, date: str) -> h5py.Group:
    """Creates ``/entry/process_01`` with empty per-frame ``results``; ``date`` is ISO 8601 (series start)."""
    process = create_process(handle.require_group("entry"), "process_01", sequence_index=1, date=date)
    write_parameters(process, params.to_mapping(), UNITS)
    write_json_note(process, "notes_01", params.to_mapping(), description=NOTE_DESCRIPTION)
    process["peak_list"] = CXI_PATH
    results = process.create_group("results")
    results.attrs.update({"NX_class": "NXdata", "signal": "n_peaks"})
    for name, dtype in RESULT_FIELDS:
        results.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(FRAME_CHUNK_ROWS,),
                               fillvalue=dtype(-1), **DEFLATE)
    for name in ("nPeaks", *(name for name, _ in CXI_COLUMNS)):  # the CXI columns, seen from the NeXus side
        results[name] = h5py.SoftLink(f"{CXI_PATH}/{name}")
    return process


def write_result_rows(handle: h5py.File, blocks: Sequence[Sequence[PeakRow]], n_rows: int) -> None:
    """Writes ``blocks`` into ``results`` after growing it to at least ``n_rows`` and past the last block."""
    results = handle[f"{PROCESS_PATH}/results"]
    n_rows = max([n_rows] + [block[-1].index + 1 for block in blocks])
    for name, _ in RESULT_FIELDS:
        grow_rows(results[name], n_rows)
    for block in blocks:
        first, last = block[0].index, block[-1].index + 1
        for name, dtype in RESULT_FIELDS:
            results[name][first:last] = np.array([getattr(row, name) for row in block], dtype)


def read_triage_params(handle: h5py.File) -> TriageParams:
    """The parameters a master was triaged with, from ``notes_01``; raises ``ConfigError`` when the JSON does
    not match its checksum (the file was edited) or no longer validates."""
    return TriageParams.from_mapping(read_json_note(handle, f"{PROCESS_PATH}/notes_01"))


class TriageProcess:
    """The triage results of one series on their way into the master at ``master`` (detpipe's
    NXprocess convention, docs/file_layout.md, and the CXI peak list). The writer calls ``create`` when it
    creates the master, ``add`` per frame (Eiger) or train
    (AGIPD), ``flush`` whenever it has the master open, and ``flush_file`` where it closes a file without
    opening the master. ``add`` itself calls ``flush_file`` once ``flush_rows`` rows are waiting.
    """

    def __init__(self, params: TriageParams, master: Path, *, flush_rows: int = FLUSH_ROWS) -> None:
        self.params = params
        self.master = master
        self.frames_without_results = 0  # frames whose train carried the wrong number of results
        self._rows = PeakRowBuffer(params.max_num_peaks, flush_rows=flush_rows)

    @property
    def rows_waiting(self) -> int:
        return len(self._rows)

    def create(self, handle: h5py.File, *, image_path: str, date: str) -> None:
        """Writes ``process_01`` and the empty CXI layout; ``image_path`` is the master's image stack."""
        write_process_group(handle, self.params, date=date)
        create_cxi_peak_list(handle, self.params.max_num_peaks, image_path=image_path)

    def add(self, first_index: int, results: Sequence[FrameTriage | None] | None, frames: int = 1, *,
            flush: bool = False) -> None:
        """Buffers frames ``first_index … first_index + frames - 1``; ``results`` holds one result (or None,
        not triaged) per frame, or is None when none of them was triaged. A count that does not match
        ``frames`` is an upstream fault: those frames are stored as not triaged and counted, never guessed.
        The rows go to the master now when ``flush`` is set (the writer closed a file) or the buffer is full."""
        if results is not None and len(results) != frames:
            log.warning("%d triage results for %d frames from frame %d; stored as not triaged",
                        len(results), frames, first_index)
            self.frames_without_results += frames
            results = None
        for k in range(frames):
            self._rows.add(first_index + k, None if results is None else results[k])
        if flush or self._rows.full:
            self.flush_file()

    def flush(self, handle: h5py.File, n_frames: int = 0) -> None:
        """Writes the waiting rows into the open master and grows every per-frame dataset to at least
        ``n_frames`` rows (the image stack's length at finalise) and past every frame added so far."""
        blocks = self._rows.blocks()
        n_rows = max(n_frames, self._rows.highest_index + 1)
        write_cxi_rows(handle, blocks, n_rows)
        write_result_rows(handle, blocks, n_rows)
        self._rows.clear()

    def flush_file(self) -> bool:
        """Flushes into a copy of the master renamed over it (``rewrite_h5``: valid at every moment, and a
        reader holding the master open keeps its version). A master that cannot be rewritten (disk full) only
        delays the rows: they stay buffered, and the next try waits for ``flush_rows`` more rows."""
        try:
            with rewrite_h5(self.master) as handle:
                self.flush(handle)
        except OSError as err:
            self._rows.defer()
            log.warning("could not store %d triage rows in %s yet; kept for the next flush: %s",
                        len(self._rows), self.master, err)
            return False
        return True

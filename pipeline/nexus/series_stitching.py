"""The one NXmx master of a series that several receivers wrote (a fan-out spread its frames over them, each
receiver writing whole data files in its own folder): the files LIMA2 and odin-data stitch the same way.

The master is written once every receiver has ended the series: the metadata from the series start the
controlling device received, then the data files each receiver's own master links (a receiver links a data
file only once it has closed it, so every file named here is complete and valid), a VDS presenting all
frames in index order whichever receiver wrote them, and the triage results (``process_01``, the CXI peak
list) merged row by row from the receivers' masters. A frame no receiver wrote (a receiver died, its last
file was never closed) reads as the fill value, and ``detectorSpecific/written`` says per frame whether it
is data (1) or fill (0), so a reader never takes a lost frame for a masked one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..core.errors import ConfigError
from ..core.saving_target import SeriesFiles, rewrite_h5
from ..core.series import SeriesStart
from .nxmx_data_file import DATASET_PATH, FrameLayout
from .nxmx_frame_source import stored_frame_layout
from .nxmx_master import DETECTOR, DataFileExtent, NxmxMaster
from .stored_triage import StoredTriage
from .triage_process import PROCESS_PATH, TriageProcess, read_triage_params

log = logging.getLogger(__name__)

WRITTEN_PATH = f"{DETECTOR}/detectorSpecific/written"
TRIAGE_BLOCK_ROWS = 1024  # rows read from a receiver's master at a time (its writer's flush unit)
_STEM_SUFFIX = "_master.h5"


def series_files_of(master: Path) -> SeriesFiles:
    """The file set whose master is ``master`` (``<stem>_master.h5``)."""
    return SeriesFiles(master.parent, master.name.removesuffix(_STEM_SUFFIX))


@dataclass(frozen=True, slots=True)
class ReceiverShare:
    """One receiver's part of a series: its name (for messages) and the master its writer claimed."""

    name: str
    master: Path

    @property
    def files(self) -> SeriesFiles:
        return series_files_of(self.master)


@dataclass(frozen=True, slots=True)
class _StoredFile:
    share: ReceiverShare
    path: Path
    number: int
    first_index: int
    n_rows: int
    rows_written: np.ndarray  # bool per row: a chunk is stored


@dataclass
class StitchedSeries:
    """What the stitched master holds: per frame whether it is data, per receiver how many it wrote, and
    the files left out with the reason."""

    master: Path
    written: np.ndarray
    written_by: dict[str, int]
    left_out: dict[str, str] = field(default_factory=dict)  # file → why the master does not use it

    @property
    def frames(self) -> int:
        return len(self.written)

    @property
    def frames_written(self) -> int:
        return int(self.written.sum())


def stitch_series(master: Path, start: SeriesStart, shares: Sequence[ReceiverShare], frames_sent: int, *,
                  instrument_name: str, source_name: str, end_s: float) -> StitchedSeries:
    """Writes ``master`` over what ``shares`` hold; ``frames_sent`` is how many frames the detector's stream
    delivered (the image stack is at least that long, so frames lost downstream are visible as fill)."""
    stored, left_out = _stored_files(shares)
    n_frames = max([frames_sent, *(f.first_index + f.n_rows for f in stored if f.rows_written.any())])
    written = np.zeros(n_frames, np.uint8)
    written_by = {share.name: 0 for share in shares}
    for item in stored:
        rows = item.rows_written[: max(0, n_frames - item.first_index)]
        written[item.first_index : item.first_index + len(rows)] |= rows
        written_by[item.share.name] += int(rows.sum())
    triage = _triage_of(master, shares)
    nxmx = NxmxMaster(master, triage=triage)
    nxmx.create(start, instrument_name=instrument_name, source_name=source_name,
                sample_name=series_files_of(master).stem, overwrite=False)
    if triage is not None:
        _merge_triage(triage, stored)
    extents = [DataFileExtent(f.number, os.path.relpath(f.path, master.parent), f.first_index, f.n_rows)
               for f in sorted(stored, key=lambda f: f.number)]
    nxmx.finalise(_layout(stored), extents, n_frames if stored else 0, end_s)
    with rewrite_h5(master) as handle:
        handle.require_group(f"{DETECTOR}/detectorSpecific").create_dataset(
            "written", data=written)
        handle[WRITTEN_PATH].attrs["description"] = (
            "1: frame n of /entry/data/data was written by a receiver; 0: it was lost and reads as the fill value")
    return StitchedSeries(master, written.astype(bool), written_by, left_out)


def _stored_files(shares: Sequence[ReceiverShare]) -> tuple[list[_StoredFile], dict[str, str]]:
    """The data files each receiver closed (its master links them), with the rows they hold; files of the
    series on disk that no master links were never closed (their receiver died writing them) and are left out."""
    stored: list[_StoredFile] = []
    left_out: dict[str, str] = {}
    for share in shares:
        linked = _linked_files(share, left_out)
        for path in share.files.existing():
            if path == share.master:
                continue
            if path not in linked:
                left_out[str(path)] = f"{share.name} never closed it (it stopped while writing it)"
                continue
            try:
                stored.append(_stored_file(share, path, linked[path]))
            except (OSError, KeyError, ValueError) as err:
                left_out[str(path)] = f"unreadable: {err}"
    return stored, left_out


def _linked_files(share: ReceiverShare, left_out: dict[str, str]) -> dict[Path, int]:
    """Data file → number, as the receiver's master links them (``/entry/data/data_<k:06d>``)."""
    try:
        with h5py.File(share.master, "r") as handle:
            data = handle["/entry/data"]
            links = {name: data.get(name, getlink=True) for name in data if name.startswith("data_")}
    except (OSError, KeyError) as err:
        left_out[str(share.master)] = f"{share.name}'s master is unreadable: {err}"
        return {}
    return {share.master.parent / link.filename: int(name.removeprefix("data_"))
            for name, link in links.items() if isinstance(link, h5py.ExternalLink)}


def _stored_file(share: ReceiverShare, path: Path, number: int) -> _StoredFile:
    with h5py.File(path, "r") as handle:
        dataset = handle[DATASET_PATH]
        first = int(dataset.attrs["image_nr_low"]) - 1
        rows_written = np.zeros(dataset.shape[0], bool)
        for k in range(dataset.id.get_num_chunks()):
            rows_written[dataset.id.get_chunk_info(k).chunk_offset[0]] = True
        return _StoredFile(share, path, number, first, int(dataset.shape[0]), rows_written)


def _layout(stored: Sequence[_StoredFile]) -> FrameLayout | None:
    if not stored:
        return None
    shape, dtype, encoding = stored_frame_layout(stored[0].path)
    return FrameLayout(shape, dtype, encoding, "")


def _triage_of(master: Path, shares: Sequence[ReceiverShare]) -> TriageProcess | None:
    """The triage the receivers ran (the same parameters in each: the first readable master's), or None."""
    for share in shares:
        try:
            with h5py.File(share.master, "r") as handle:
                if PROCESS_PATH in handle:
                    return TriageProcess(read_triage_params(handle), master)
        except (OSError, KeyError, ConfigError) as err:
            log.warning("no triage parameters from %s: %s", share.master, err)
    return None


def _merge_triage(triage: TriageProcess, stored: Sequence[_StoredFile]) -> None:
    """Each written frame's triage row, from the master of the receiver that wrote it, in index order (the
    files never overlap, so file order is index order); one open master per receiver."""
    with ExitStack() as stack:
        results: dict[ReceiverShare, StoredTriage | None] = {}
        for item in sorted(stored, key=lambda f: f.first_index):
            if item.share not in results:
                results[item.share] = _stored_triage(item.share, stack)
            source = results[item.share]
            for row in np.flatnonzero(item.rows_written):
                index = item.first_index + int(row)
                triage.add(index, (source.at(index) if source is not None else None,))


def _stored_triage(share: ReceiverShare, stack: ExitStack) -> StoredTriage | None:
    try:
        handle = stack.enter_context(h5py.File(share.master, "r"))
    except OSError as err:
        log.warning("triage rows of %s not merged: %s", share.name, err)
        return None
    return StoredTriage(handle, TRIAGE_BLOCK_ROWS) if PROCESS_PATH in handle else None

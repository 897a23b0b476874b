"""Rebuild the master of an EIGER series whose writer died (kill -9, power loss, a full disk).

The master is created with every metadata group when the series starts; what a dead writer never wrote
is the part that follows the frames: the links to the last data files, the VDS over all frames, the
end time. The data files say all of it themselves: ``image_nr_low`` gives each file's first frame, the
allocated chunks which rows were written (a row never written has no chunk). ``recover_series`` writes
the same VDS and links ``NxmxMaster.finalise`` would have, plus ``/entry/data/written`` (1 per frame
on disk, 0 per hole), so readers can tell lost frames from frames that read as the masked-pixel fill.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..core.frame import Encoding
from ..core.saving_target import rewrite_h5
from .nxmx_data_file import DATASET_PATH, FrameLayout
from .nxmx_master import DataFileExtent, NxmxMaster

_DATA_FILE = re.compile(r"(?P<stem>.+)_data_(?P<number>\d{6})\.h5")
_FILTER_ENCODING = {32008: Encoding.BSLZ4, 32004: Encoding.LZ4}


@dataclass(frozen=True, slots=True)
class Recovered:
    master: Path
    data_files: int
    frames: int  # the VDS length: highest frame on disk + 1
    frames_written: int  # rows that hold a frame
    unreadable: tuple[str, ...]  # data files HDF5 could not open (their frames read as fill)


def recover_series(master: Path) -> Recovered:
    """Rebuild ``master``'s links, VDS, per-frame ``written`` flags and end time from its data files."""
    stem = master.name.removesuffix("_master.h5")
    extents, unreadable, layout = [], [], None
    written: set[int] = set()
    for path in sorted(master.parent.glob(f"{stem}_data_*.h5")):
        match = _DATA_FILE.fullmatch(path.name)
        if match is None or match["stem"] != stem:
            continue
        try:
            with h5py.File(path, "r") as handle:
                dataset = handle[DATASET_PATH]
                first = int(dataset.attrs["image_nr_low"]) - 1
                rows = _rows_written(dataset)
                layout = layout or _layout(dataset)
                extents.append(DataFileExtent(int(match["number"]), path.name, first, int(dataset.shape[0])))
                written.update(first + row for row in rows)
        except (OSError, KeyError) as err:
            unreadable.append(f"{path.name}: {err}")
    frames = max(written, default=-1) + 1
    NxmxMaster(master).finalise(layout, extents, frames, master.stat().st_mtime)
    with rewrite_h5(master) as handle:
        flags = np.zeros(frames, np.uint8)
        flags[sorted(written)] = 1
        group = handle["/entry/data"]
        if "written" in group:
            del group["written"]
        group.create_dataset("written", data=flags).attrs["long_name"] = "1 = frame on disk, 0 = lost"
    return Recovered(master, len(extents), frames, len(written), tuple(unreadable))


def _rows_written(dataset: h5py.Dataset) -> list[int]:
    """Rows that own an allocated chunk (one chunk per frame)."""
    return [dataset.id.get_chunk_info(i).chunk_offset[0] for i in range(dataset.id.get_num_chunks())]


def _layout(dataset: h5py.Dataset) -> FrameLayout:
    plist = dataset.id.get_create_plist()
    filters = {plist.get_filter(k)[0] for k in range(plist.get_nfilters())}
    encoding = next((_FILTER_ENCODING[f] for f in filters if f in _FILTER_ENCODING), Encoding.RAW)
    return FrameLayout((int(dataset.shape[1]), int(dataset.shape[2])), dataset.dtype, encoding, "")

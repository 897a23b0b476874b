"""The REDU00 aggregator file of a reduced AGIPD run: the decision taken for every frame received.

The reduced module files hold only the kept cells; this file lists every frame (memory cell) of every train
received, kept or not, with its keep reason and triage numbers, so an analysis knows what was dropped and can
use the sampled misses as an unbiased control. The flags are the ones EXtra-redu's SPI hit finder writes
(``hitFlag``, ``missFlag``, ``dataFlag``; EXtra-redu), under a ``<detector>/REDU/<PRODUCT>`` source in a
``REDU00`` aggregator (European XFEL reduced-data practice, EXtra-redu).

Rows go to disk train by train into resizable, deflate-compressed datasets (34 bytes a frame before
compression: a 1M-frame run is 34 MB raw and mostly 0/1 flags), so a long run never sits in memory; only the
per-train INDEX records are kept, and written when the file closes. ``close`` trims rows of a train that was
only partly written, so a file closed after an exception (close in ``finally``) still opens in extra-data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import h5py
import numpy as np

from ..core.errors import FrameRejected
from ..core.train import Product
from ..exdf.index import TrainRecord
from ..exdf.module_file import PRODUCT_PREFIX, RunMetadata, create_exdf_file, touch_update_date, write_train_index
from .event_selection import KEEP_REASON_LEGEND, KeepReason

log = logging.getLogger(__name__)

REDU_PRODUCT = "DETPIPE_HITFINDER"
REDU_AGGREGATOR = "REDU00"
_GROUP = "data"
_CHUNK_FRAMES = 16384  # 16 KiB (u1) to 128 KiB (u8/i8) a chunk: fits the chunk cache below
# Each train appends to deflated chunks: with a cache a chunk is compressed once, when it leaves the cache, not
# at every train; the datasets stay open until ``close``, so where the chunks land depends on the writes alone.
_CHUNK_CACHE_BYTES = 1 << 20
_DEFLATE = {"compression": "gzip", "compression_opts": 1, "shuffle": True}  # deflate: readable without plugins

# name, dtype, description: one row per frame (per-frame flags and nPeaks).
ROW_KEYS: tuple[tuple[str, str, str], ...] = (
    ("trainId", "u8", "train id of the frame"),
    ("pulseId", "u8", "pulse id of the frame, as the detector reported it"),
    ("cellId", "u2", "AGIPD memory cell of the frame"),
    ("hitFlag", "u1", "1 = a hit (keepReason 1), kept in the reduced data"),
    ("missFlag", "u1", "1 = a miss kept as the random control sample (keepReason 2), unbiased by the hit rule"),
    ("dataFlag", "u1", "1 = the frame is in the reduced data (any kept reason), 0 = dropped"),
    ("keepReason", "i1", f"why the frame is kept or dropped: {KEEP_REASON_LEGEND}"),
    ("nPeaks", "i4", "Bragg peaks found by triage; -1 = not triaged"),
    ("litPixels", "i8", "pixels above the lit threshold found by triage; -1 = not triaged"),
)


def redu_source(detector: str) -> str:
    """``<detector>/REDU/DETPIPE_HITFINDER:output``, as EuXFEL names ``…/REDU/SPI_HITFINDER:output``.

    EuXFEL's reduced-data practice writes the name without a channel, but extra-data 1.25 needs one: ``FileAccess``
    splits an INSTRUMENT dataSourceId at the first ``:`` (``file_access.py``, ``_read_data_sources``), so
    ``…/REDU/DETPIPE_HITFINDER/data`` becomes the source ``…/DETPIPE_HITFINDER/data:`` and the key is
    not found. EuXFEL's own hit-finder files use ``:output`` for the same reason.
    """
    return f"{detector}/REDU/{REDU_PRODUCT}:output"


def redu_file_name(product: Product, run: int, sequence: int = 0) -> str:
    """``CORR-R0007-REDU00-S00000.h5``: the run's aggregator file next to the reduced module files."""
    return f"{PRODUCT_PREFIX[product]}-R{run:04d}-{REDU_AGGREGATOR}-S{sequence:05d}.h5"


class ReduFlagsFile:
    """One row per frame received, train by train; a train with no frames is listed with ``count = 0``.

    Train ids must strictly increase (extra-data's validator requires it of ``INDEX/trainId``); a train
    that breaks that or has rows of unequal length is rejected with ``FrameRejected`` and nothing of it
    is written. Owned by one thread (h5py serialises calls anyway).
    """

    def __init__(self, path: Path, *, detector: str, metadata: RunMetadata, sequence: int = 0,
                 overwrite: bool = False) -> None:
        self.path = path
        self.source = redu_source(detector)
        self._records: list[TrainRecord] = []
        self._rows = 0  # frames of fully written trains; datasets are trimmed to this at close
        self._sequence = sequence
        self._file, group = create_exdf_file(path, metadata, sequence, f"{self.source}/{_GROUP}",
                                             overwrite=overwrite, rdcc_nbytes=_CHUNK_CACHE_BYTES)
        try:
            self._datasets: dict[str, h5py.Dataset] = {}
            for name, dtype, description in ROW_KEYS:
                dataset = group.create_dataset(name, shape=(0,), maxshape=(None,), chunks=(_CHUNK_FRAMES,),
                                               dtype=dtype, **_DEFLATE)
                dataset.attrs["description"] = description
                self._datasets[name] = dataset
        except BaseException:
            self._file.close()
            raise

    @property
    def frames(self) -> int:
        return self._rows

    @property
    def trains(self) -> int:
        return len(self._records)

    def add_train(self, train_id: int, timestamp_ns: int, *, pulse_ids: np.ndarray, cell_ids: np.ndarray,
                  reasons: Sequence[KeepReason] | np.ndarray, n_peaks: np.ndarray,
                  lit_pixels: np.ndarray) -> None:
        """Appends one row per frame of the train; ``n_peaks``/``lit_pixels`` are -1 where not triaged."""
        codes = np.asarray(reasons)
        if codes.dtype.kind not in "iu":  # a list of KeepReason (or an empty list, which numpy makes float)
            codes = np.array([int(r) for r in reasons], np.int64)
        columns = {"pulseId": pulse_ids, "cellId": cell_ids, "keepReason": codes, "nPeaks": n_peaks,
                   "litPixels": lit_pixels}
        self._check(train_id, columns)
        count = len(codes)
        kept = np.isin(codes, [r.value for r in KeepReason if r.kept])
        rows = {
            "trainId": np.full(count, train_id, np.uint64),
            "hitFlag": codes == KeepReason.HIT,
            "missFlag": codes == KeepReason.SAMPLED_MISS,
            "dataFlag": kept,
            **columns,
        }
        end = self._rows + count
        if count:
            for name, dtype, _ in ROW_KEYS:
                dataset = self._datasets[name]
                dataset.resize(end, axis=0)
                dataset[self._rows : end] = np.asarray(rows[name]).astype(dtype, copy=False)
        self._records.append(TrainRecord(train_id=train_id, timestamp_ns=timestamp_ns, sequence=self._sequence,
                                         first_frame=self._rows, frames=count, modules_present=()))
        self._rows = end

    def _check(self, train_id: int, columns: dict[str, np.ndarray]) -> None:
        problems = [f"{name} has shape {np.shape(values)}" for name, values in columns.items()
                    if np.ndim(values) != 1 or len(values) != len(columns["keepReason"])]
        if problems:
            raise FrameRejected("shape_mismatch", f"train {train_id}: rows of unequal length: "
                                + "; ".join(problems) + f" (keepReason has {len(columns['keepReason'])})")
        unknown = set(np.unique(columns["keepReason"]).tolist()) - {r.value for r in KeepReason}
        if unknown:
            raise FrameRejected("unknown_keep_reason", f"train {train_id}: codes {sorted(unknown)} are not "
                                f"KeepReason values ({KEEP_REASON_LEGEND})")
        if self._records and train_id <= self._records[-1].train_id:
            raise FrameRejected("train_id_order", f"train {train_id} after train {self._records[-1].train_id}: "
                                "train ids must strictly increase within a file")

    def close(self) -> None:
        """Trims rows of a partly written train, writes INDEX and updateDate, closes; a second call does nothing."""
        if not self._file.id.valid:
            return
        try:
            for dataset in self._datasets.values():  # cached chunks placed in this order, not in h5py's closing one
                if dataset.shape[0] != self._rows:
                    dataset.resize(self._rows, axis=0)
                dataset.flush()
            write_train_index(self._file, self._records)
            n = len(self._records)
            group = self._file.create_group(f"INDEX/{self.source}/{_GROUP}")
            for name, values in (("first", [r.first_frame for r in self._records]),
                                 ("count", [r.frames for r in self._records])):
                group.create_dataset(name, data=np.array(values, np.uint64).reshape(n))
            touch_update_date(self._file)
            log.debug("%s: %d trains, %d frames", self.path, n, self._rows)
        finally:
            self._file.close()

    def __enter__(self) -> ReduFlagsFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


"""The run's ledger of trains: what each train holds and where its frames lie, in the run and per module.

Every module file of a sequence lists every train of that sequence (INDEX in the EuXFEL data format documentation), so a
module that did not arrive for a train shows as ``count = 0`` there. This ledger is what the NeXus master's virtual
dataset is built from: frame k of the run is the k-th frame overall, and a module's rows for a train are
found by counting the frames of the earlier trains of the same sequence in which that module was present.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..core.train import AGIPD_MODULES, Train


@dataclass(frozen=True, slots=True)
class TrainRecord:
    """One written train. ``first_frame`` is the run-wide 0-based index of its first frame."""

    train_id: int
    timestamp_ns: int
    sequence: int
    first_frame: int
    frames: int
    modules_present: tuple[bool, ...]


@dataclass(frozen=True, slots=True)
class RowSpan:
    """``frames`` consecutive rows of one module's sequence file that hold run frames
    ``first_frame … first_frame + frames - 1``: one virtual-dataset mapping."""

    sequence: int
    first_row: int
    first_frame: int
    frames: int


@dataclass
class RunIndex:
    """The trains of one run in the order written; owned by the writer thread.

    Only trains every module file has accepted are recorded (``commit``), so after a failure mid-train the
    ledger never points at rows that a file trimmed away when it closed.
    """

    trains_per_sequence: int
    trains: list[TrainRecord] = field(default_factory=list)
    _pulse_ids: list[np.ndarray] = field(default_factory=list, repr=False)
    _cell_ids: list[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def frames(self) -> int:
        last = self.trains[-1] if self.trains else None
        return last.first_frame + last.frames if last is not None else 0

    @property
    def last_train_id(self) -> int | None:
        return self.trains[-1].train_id if self.trains else None

    @property
    def next_sequence(self) -> int:
        """The sequence the next train goes to: a new one every ``trains_per_sequence`` trains."""
        return len(self.trains) // self.trains_per_sequence

    def record_for(self, train: Train) -> TrainRecord:
        """The record ``train`` gets if it is committed next (nothing is stored yet)."""
        return TrainRecord(
            train_id=train.train_id,
            timestamp_ns=round(train.timestamp_s * 1e9),
            sequence=self.next_sequence,
            first_frame=self.frames,
            frames=train.frames,
            modules_present=tuple(bool(p) for p in train.modules_present),
        )

    def commit(self, record: TrainRecord, train: Train) -> None:
        self.commit_ids(record, train.pulse_ids, train.cell_ids)

    def commit_ids(self, record: TrainRecord, pulse_ids: np.ndarray, cell_ids: np.ndarray) -> None:
        """``commit`` from the ids alone (a run read back from its files)."""
        self.trains.append(record)
        self._pulse_ids.append(np.asarray(pulse_ids, np.uint64))
        self._cell_ids.append(np.asarray(cell_ids, np.uint16))

    def per_frame_ids(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(trainId u8, pulseId u8, cellId u2), each of shape (frames,), in run frame order."""
        train_ids = np.repeat(np.array([t.train_id for t in self.trains], np.uint64),
                              [t.frames for t in self.trains]).astype(np.uint64)
        pulse_ids = np.concatenate(self._pulse_ids) if self._pulse_ids else np.zeros(0, np.uint64)
        cell_ids = np.concatenate(self._cell_ids) if self._cell_ids else np.zeros(0, np.uint16)
        return train_ids, pulse_ids, cell_ids

    def modules_present_per_frame(self) -> np.ndarray:
        """uint8 (frames, 16): 1 where the module's pixels of that frame are real, 0 where they are fill."""
        present = np.zeros((self.frames, AGIPD_MODULES), np.uint8)
        for train in self.trains:
            present[train.first_frame : train.first_frame + train.frames] = train.modules_present
        return present

    def row_spans(self, module: int) -> Iterator[RowSpan]:
        """Where ``module``'s committed frames lie, merged into the fewest contiguous spans.

        Rows restart at 0 in each sequence file; a train without the module adds no rows but breaks the
        run-frame contiguity, so spans split there.
        """
        span: RowSpan | None = None
        row, sequence = 0, -1
        for train in self.trains:
            if train.sequence != sequence:
                row, sequence = 0, train.sequence
            if not train.modules_present[module] or train.frames == 0:
                continue
            if (span is not None and span.sequence == sequence and span.first_row + span.frames == row
                    and span.first_frame + span.frames == train.first_frame):
                span = RowSpan(sequence, span.first_row, span.first_frame, span.frames + train.frames)
            else:
                if span is not None:
                    yield span
                span = RowSpan(sequence, row, train.first_frame, train.frames)
            row += train.frames
        if span is not None:
            yield span

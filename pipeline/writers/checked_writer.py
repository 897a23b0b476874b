"""The writer stage as a device runs it: a frame-check thread verifies every chunk, then the writer thread stores it.

A chunk whose LZ4 sequences do not decode, stored as it came, makes every reader of the dataset fail ("filter
returned failure") long after the frame was counted as saved; and decoding one through bitshuffle can crash
the process. So every Eiger chunk is verified before it is written: ``chunk_framing.verify_payload`` walks
the block chain and parses every LZ4 sequence without writing output (~0.4 ms per 4M frame, against ~2.5 ms
for a decode), and a chunk that fails is rejected (``corrupt_payload``, ``truncated_blob``) and counted.

The check runs in a thread of its own, between the writer device's inbox and the writer thread
(at most ``FRAME_CHECK_QUEUE`` frames apart), so it overlaps the HDF5 writes instead of adding to them, and the
receive thread stays as lean as a bare ZMQ loop. A frame that a triage worker decoded (``Frame.triage``
set) was verified there already (``decode_chunk_pixels`` verifies first) and passes without a second parse.
AGIPD trains carry arrays, not detector chunks, and pass unchanged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from ..core.chunk_check import warm_up
from ..core.chunk_framing import verify_payload
from ..core.errors import FrameRejected
from ..core.frame import Frame
from ..core.frame_queue import FrameQueue, FullPolicy
from ..core.peak_list import FrameTriage
from ..core.series import EndOfSeries, SeriesStart
from ..core.stage import Item, Stage
from ..core.stage_runner import StageRunner
from ..core.stage_stats import StageStats
from ..core.train import Train

log = logging.getLogger(__name__)

FRAME_CHECK_QUEUE = 64  # Eiger frames verified but not yet written: with 4, the threads' hand-offs cost 8 % more
# AGIPD trains have nothing to check, and each is ~270 MB beyond the inbox's BufferFrames: only this many wait here
TRAINS_AHEAD = 1
_TRAIN_WAIT_S = 0.005


class _CheckedQueue(FrameQueue[Item]):
    """The frame check's outbox: frames may run ``FRAME_CHECK_QUEUE`` ahead of the writer, trains ``TRAINS_AHEAD``."""

    def put(self, item: Item, timeout_s: float | None = None, *, wait_for_room: bool = False) -> bool:
        while isinstance(item, Train) and self.size >= TRAINS_AHEAD:
            time.sleep(_TRAIN_WAIT_S)
        return super().put(item, timeout_s, wait_for_room=wait_for_room)


class PayloadCheck:
    """Stage: forwards every item, raising ``FrameRejected`` for an Eiger frame whose chunk would not decode."""

    def __init__(self) -> None:
        self.stats = StageStats()
        warm_up()  # compile the kernel now: a first-frame stall of ~0.5 s would back up the writer's inbox

    def start_series(self, start: SeriesStart) -> None:
        """Nothing to set up: each chunk is judged on its own (its shape and type travel with it)."""

    def process(self, frame: Frame | Train) -> Frame | Train:
        if isinstance(frame, Frame) and not isinstance(frame.triage, FrameTriage):
            try:
                verify_payload(frame.encoding, frame.blob, frame.nbytes_uncompressed, frame.dtype.itemsize)
            except FrameRejected:
                raise
            except Exception as err:  # a check bug or an input no check foresaw: this frame only, not the series
                log.exception("the payload of frame %d could not be checked", frame.index)
                raise FrameRejected("undecodable", f"frame {frame.index}: {type(err).__name__}: {err}") from err
            self.stats.processed += 1
        return frame

    def finish(self, end: EndOfSeries) -> None:
        """Nothing to close: the writer behind this stage ends the series' files."""

    def abort(self, reason: str) -> None:
        """Nothing to close: the writer behind this stage ends the series' files."""


class CheckedWriter:
    """``inbox`` → frame-check thread → writer thread, with the interface of the writer's own ``StageRunner``.

    A series is ended early (``end_series_now``) at the head of the chain, so the end reaches the writer after
    every frame already queued. ``failure``, ``in_series`` and ``last_end`` speak for the chain as a whole.
    """

    def __init__(self, writer: Stage, inbox: FrameQueue[Item], *,
                 on_failure: Callable[[str], None] | None = None) -> None:
        self.check = PayloadCheck()
        self.writer = writer
        checked = _CheckedQueue(FRAME_CHECK_QUEUE, FullPolicy.BLOCK)
        self._check_runner = StageRunner("frame-check", self.check, inbox, checked, on_failure=on_failure)
        self._write_runner = StageRunner("writer", writer, checked, on_failure=on_failure)

    def start(self) -> None:
        self._write_runner.start()
        self._check_runner.start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop both threads after the items already queued; a series still open is ended (files closed valid)."""
        self._check_runner.close(timeout_s)
        self._write_runner.close(timeout_s)

    def end_series_now(self, detail: str) -> bool:
        """End the open series behind the items already queued. Once the frame check has passed a series' end
        on, the writer gets it anyway: a second end would close the next series' files."""
        return self._check_runner.end_series_now(detail)

    def reset(self) -> None:
        """Clear a failure (Reset); the next series is processed normally."""
        self._check_runner.reset()
        self._write_runner.reset()

    def reset_counters(self) -> None:
        """A new series (Prepare) or Reset: the frame check's and the writer's counters start from zero."""
        self.check.stats.reset()
        self.writer.stats.reset()

    @property
    def failure(self) -> str | None:
        return self._check_runner.failure or self._write_runner.failure

    @property
    def in_series(self) -> bool:
        return self._check_runner.in_series or self._write_runner.in_series

    @property
    def series_id(self) -> int | None:
        return self._write_runner.series_id if self._write_runner.in_series else self._check_runner.series_id

    @property
    def last_end(self) -> EndOfSeries | None:
        """The end of the last series the writer closed."""
        return self._write_runner.last_end

    @last_end.setter
    def last_end(self, end: EndOfSeries | None) -> None:
        self._write_runner.last_end = end

    @property
    def series_done(self) -> threading.Event:
        return self._write_runner.series_done

    @property
    def alive(self) -> bool:
        return self._check_runner.alive and self._write_runner.alive

    @property
    def rejected(self) -> Counter[str]:
        """Frames of the series refused, by reason: by the frame check (corrupt chunks) and by the writer."""
        return self.check.stats.rejected + self.writer.stats.rejected

"""The one generic loop that moves items between queues, times stages and carries the sentinels."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from .errors import FrameRejected
from .frame import Frame
from .frame_queue import FrameQueue
from .series import EndOfSeries, SeriesStart
from .stage import Item, Stage
from .thread_names import pipeline_thread
from .train import Train

log = logging.getLogger(__name__)



class StageRunner:
    """Runs one stage in its own thread between an inbox and an optional outbox.

    Frames are timed and counted; ``FrameRejected`` is counted under its reason (logged once per
    reason) and the stream goes on. Any other exception is a stage failure: the stage's ``abort`` closes
    its files, ``failure`` holds the message, ``on_failure`` is told, and the rest of that series is
    counted as ``rejected["stage_failed"]`` so upstream never jams and nothing is lost silently.
    The sentinel ``EndOfSeries`` calls ``finish`` and is forwarded after the last frame, so a Stop
    drains in order. ``in_series`` is True from a series' start to its end (``series_id`` names it);
    ``series_done`` is set when a series' end has been handled. A runner closed in the middle of a series
    ends that series itself (``EndReason.ABORT``), so its files are closed valid whatever stopped it.
    """

    def __init__(
        self,
        name: str,
        stage: Stage,
        inbox: FrameQueue[Item],
        outbox: FrameQueue[Item] | None = None,
        *,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.stage = stage
        self.inbox = inbox
        self.outbox = outbox
        self.on_failure = on_failure
        self.failure: str | None = None
        self.series_done = threading.Event()
        self.in_series = False
        self.series_id: int | None = None
        self.last_end: EndOfSeries | None = None
        self._closing = threading.Event()
        self._thread = pipeline_thread(self._loop, name)
        self._logged_reasons: set[str] = set()

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the thread after the items already queued; used at device shutdown and Init. A series still
        open then is ended as aborted (files closed valid)."""
        self.end_series_now(f"{self.name} closed")
        self._closing.set()
        self._thread.join(timeout_s)

    def end_series_now(self, detail: str) -> bool:
        """End the open series after the items already queued, when nothing upstream will (its source was
        re-initialised or died): the way out of a series that would otherwise stay open forever.
        Returns False when no series is open or the end found no room in the inbox."""
        return self.in_series and self.inbox.put_abort_end(self.series_id, detail)

    def reset(self) -> None:
        """Clear a failure (Reset command); the next series is processed normally."""
        self.failure = None

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        while True:
            try:
                item = self.inbox.get(timeout_s=0.1)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            self._handle(item)

    def _handle(self, item: Item) -> None:
        if isinstance(item, SeriesStart):
            self.series_done.clear()
            self.in_series, self.series_id = True, item.series_id
            if self.failure is None:
                self._guarded(lambda: self.stage.start_series(item), f"series {item.series_id} start")
            self._forward(item)
        elif isinstance(item, EndOfSeries):
            if self.failure is None:
                self._guarded(lambda: self.stage.finish(item), f"series {item.series_id} end")
            self.last_end = item
            self.in_series = False
            self._forward(item)
            self.series_done.set()
        else:
            self._process_frame(item)

    def _process_frame(self, frame: Frame | Train) -> None:
        stats = self.stage.stats
        frames = frame.frames if isinstance(frame, Train) else 1  # counts are in frames, a train holds many
        if self.failure is not None:
            stats.rejected["stage_failed"] += frames
            return
        try:
            with stats.timed():
                out = self.stage.process(frame)
        except FrameRejected as err:
            stats.rejected[err.reason] += frames
            if err.reason not in self._logged_reasons:
                self._logged_reasons.add(err.reason)
                log.warning("%s rejected frame %d: %s (further ones counted only)", self.name, frame.index, err)
            return
        except Exception as exc:  # noqa: BLE001 - any other error is a stage failure, reported as FAULT
            stats.rejected["stage_failed"] += frames
            self._fail(f"frame {frame.index} of series {frame.series_id}", exc)
            return
        if out is not None:
            self._forward(out)

    def _guarded(self, call: Callable[[], None], what: str) -> None:
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - reported as FAULT with the reason
            self._fail(what, exc)

    def _fail(self, what: str, exc: Exception) -> None:
        self.failure = f"{self.name} failed on {what}: {type(exc).__name__}: {exc}"
        log.error("%s", self.failure, exc_info=exc)
        try:
            self.stage.abort(self.failure)
        except Exception:  # noqa: BLE001 - already failing; keep the first reason
            log.exception("%s: abort after failure also failed", self.name)
        if self.on_failure is not None:
            self.on_failure(self.failure)

    def _forward(self, item: Item) -> None:
        if self.outbox is not None:
            self.outbox.put(item)

"""The hit finder's thread: images in, through the worker pool, out to the writer in arrival order.

Every item leaves in the order it came (the writers expect frames in index order), with its triage
attached. Images wait for a free worker slot while the hit finder's queue is below ``bypass_fill_percent``;
beyond that, triage has fallen behind and images go on untriaged (counted ``backlog``) rather than be
dropped at ingress: writing every frame matters more than triaging it (issue: "frames are still written").
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from dataclasses import dataclass, field, replace

import numpy as np

from ..core.frame import Frame
from ..core.frame_queue import FrameQueue
from ..core.peak_list import FrameTriage, PeakList
from ..core.series import DetectorConfig, EndOfSeries, SeriesStart
from ..core.stage import Item
from ..core.thread_names import pipeline_thread
from ..core.train import Product, Train
from ..core.triage_params import TriageParams
from .pool import TriagePool
from .setup import DetectorKind, TriageSetup
from .stats import TriageStats

log = logging.getLogger(__name__)



@dataclass
class _Pending:
    """An item on its way through triage: ``results[k]`` for image k; ``unsubmitted`` images still to
    hand to the pool; ``owed`` results still to come back."""

    item: Item
    results: list[FrameTriage | None] = field(default_factory=list)
    unsubmitted: int = 0
    owed: int = 0
    next_image: int = 0


@dataclass(frozen=True, slots=True)
class LastHit:
    """The newest hit: ``image`` k of ``item`` (a Frame, or a cell of a Train); ``number`` counts hits;
    ``peaks`` are its stored peaks (for a viewer's overlay)."""

    item: Frame | Train
    image: int
    n_peaks: int
    number: int
    peaks: PeakList


class TriageDispatcher:
    """Owns the pool and one thread. The device calls ``prepare`` before a series and reads ``stats``,
    ``last_hit`` and ``backlog``; everything else runs in the thread."""

    def __init__(self, pool: TriagePool, inbox: FrameQueue[Item], *, bypass_fill_percent: float = 50.0) -> None:
        self.pool = pool
        self.inbox = inbox
        self.bypass_fill_percent = bypass_fill_percent
        self.params = TriageParams()
        self.user_mask_path = ""
        self.geometry_file = ""  # a CrystFEL .geom replacing the detector's built-in layout
        self.stats = TriageStats()
        self.last_hit: LastHit | None = None
        self.active: TriageSetup | None = None  # the setup of the series being (or last) triaged
        self.in_series = False
        self.series_id: int | None = None
        self.failure: str | None = None
        self._kind = DetectorKind.EIGER
        self._outbox: FrameQueue[Item] | None = None
        self._preload: TriageSetup | None = None
        self._last_pixel_mask: np.ndarray | None = None  # the last series header's, for the next Prepare
        self._pending: collections.deque[_Pending] = collections.deque()
        self._jobs: dict[int, tuple[_Pending, int, float]] = {}
        self._next_job = 0
        self._logged: set[str] = set()
        self._closing = threading.Event()
        self._thread = pipeline_thread(self._loop, "triage")

    def start(self) -> None:
        self.pool.start()
        self._thread.start()

    def close(self) -> None:
        """Stop after the images already queued; a series still open is ended as aborted, which closes the
        writer's files too."""
        self.end_series_now("hit finder closed")
        self._closing.set()
        self._thread.join(10.0)
        self.pool.close()

    def end_series_now(self, detail: str) -> bool:
        """End the open series after the images already queued, when its source will not (it was
        re-initialised or died); the end then releases the writer too. False when no series is open."""
        return self.in_series and self.inbox.put_abort_end(self.series_id, detail)

    def prepare(self, kind: DetectorKind, outbox: FrameQueue[Item]) -> None:
        """Route the next series to ``outbox`` (the writer's queue); called from the control thread."""
        if self.in_series:
            raise RuntimeError("the hit finder is still triaging the previous series; wait or Abort it")
        self._kind, self._outbox = kind, outbox
        self.stats.reset()
        self.last_hit = None
        if kind is DetectorKind.AGIPD:
            self.expect(None)

    def expect(self, config: DetectorConfig | None, kind: DetectorKind | None = None, *,
               pixel_mask: np.ndarray | None = None) -> None:
        """The next series' configuration (Eiger: as read over REST when the detector connects and again at
        Prepare): the workers build their geometry now, while no series runs, rather than after the series
        header arrived, which for a 4M takes about a second. When the header agrees (same shape, beam
        centre, mask), the workers keep what they built. Without a mask read at Prepare, the last series'
        (a DCU's mask seldom changes) stands in for the one the header will bring."""
        if kind is not None:
            self._kind = kind
        if pixel_mask is None and config is not None and self._last_pixel_mask is not None:
            pixel_mask = self._last_pixel_mask if self._last_pixel_mask.shape == config.shape else None
        self._preload = self._setup(config, pixel_mask=pixel_mask)

    @property
    def setup_ready(self) -> bool:
        """True when no setup is waiting to be sent and every worker has built the last one sent."""
        return self._preload is None and self.pool.configured

    @property
    def backlog(self) -> int:
        """Images waiting for triage: queued items plus images handed to the pool and not back yet."""
        held = sum(p.unsubmitted for p in list(self._pending))
        return self.inbox.size + held + self.pool.in_flight

    # --- the thread ---
    def _loop(self) -> None:
        while not (self._closing.is_set() and not self._pending and self.inbox.size == 0):
            try:
                self._step()
            except Exception as exc:  # noqa: BLE001 - from now on images pass untriaged; none is lost
                if self.failure is None:
                    self.failure = f"hit finder failed: {type(exc).__name__}: {exc}"
                    log.exception("%s; frames now go to the writer untriaged", self.failure)
                for entry in self._pending:
                    self._skip(entry, "hit_finder_failed")

    def _step(self) -> None:
        if (preload := self._preload) is not None:
            if self.in_series:  # a running series keeps the setup its start sent
                self._preload = None
            elif not self._pending and not self.pool.in_flight:
                self._preload = None
                self.pool.configure(preload)
        self._collect(0.002 if self.pool.in_flight else 0.0)
        self._submit_waiting()
        self._forward_done()
        if self._pending and self._pending[-1].unsubmitted:
            return  # wait for a slot before taking more work
        try:
            item = self.inbox.get(timeout_s=0.001 if self._pending else 0.1)
        except queue.Empty:
            return
        self._accept(item)

    def _accept(self, item: Item) -> None:
        if isinstance(item, SeriesStart):
            self._drain()
            self.in_series, self.series_id = True, item.series_id
            self.active = self._setup_for(item)
            if self.active is not None:
                self.pool.configure(self.active)
                item = replace(item, triage=self.active.params)
            self._pending.append(_Pending(item))
            return
        if isinstance(item, EndOfSeries):
            self._pending.append(_Pending(item))
            return
        images = item.frames if isinstance(item, Train) else 1
        entry = _Pending(item, [None] * images, unsubmitted=images)
        if self.active is None or self.failure is not None:
            self._skip(entry, "hit_finder_failed" if self.failure else "no_series_setup")
        elif isinstance(item, Train) and item.product is not Product.CORRECTED:
            self._skip(entry, "uncorrected")
        self._pending.append(entry)

    def _setup_for(self, start: SeriesStart) -> TriageSetup | None:
        if self.failure is not None:
            return None
        if self._kind is DetectorKind.EIGER and start.config is None:
            self._log_once("no_series_setup", "series %d has no detector config; its frames are not triaged",
                           start.series_id)
            return None
        if start.pixel_mask is not None:
            self._last_pixel_mask = start.pixel_mask
        return self._setup(start.config, pixel_mask=start.pixel_mask)

    def _setup(self, config: DetectorConfig | None, *, pixel_mask: np.ndarray | None) -> TriageSetup:
        if self._kind is DetectorKind.AGIPD or config is None:
            return TriageSetup(DetectorKind.AGIPD, self.params, user_mask_path=self.user_mask_path,
                               geometry_file=self.geometry_file)
        centre = (None if config.beam_center_x_px is None or config.beam_center_y_px is None
                  else (config.beam_center_x_px, config.beam_center_y_px))
        params = self.params
        if params.saturation_value == 0 and config.saturation_value:  # the detector's count-rate cut-off
            params = replace(params, saturation_value=float(config.saturation_value))
        return TriageSetup(DetectorKind.EIGER, params, shape=config.shape, itemsize=config.dtype.itemsize,
                           beam_center_px=centre, pixel_mask=pixel_mask, user_mask_path=self.user_mask_path,
                           geometry_file=self.geometry_file)

    def _submit_waiting(self) -> None:
        for entry in self._pending:
            while entry.unsubmitted:
                if not self.pool.has_free_slot:
                    if self.inbox.fill_percent >= self.bypass_fill_percent:
                        self._skip(entry, "backlog")
                    return
                self._submit(entry)

    def _submit(self, entry: _Pending) -> None:
        image, item = entry.next_image, entry.item
        entry.next_image += 1
        entry.unsubmitted -= 1
        job = self._next_job
        self._next_job += 1
        if isinstance(item, Frame):
            if not self.pool.fits(item.nbytes_encoded):
                self.stats.record_not_triaged("too_large")
                return
            self.pool.submit_frame(job, item)
        else:
            assert isinstance(item, Train)
            self.pool.submit_cell(job, item, image)
        entry.owed += 1
        self._jobs[job] = (entry, image, time.monotonic())

    def _skip(self, entry: _Pending, reason: str) -> None:
        """The remaining images of ``entry`` go on untriaged, counted under ``reason``."""
        self.stats.record_not_triaged(reason, entry.unsubmitted)
        entry.next_image, entry.unsubmitted = len(entry.results), 0

    def _collect(self, timeout_s: float) -> None:
        for done in self.pool.results(timeout_s):
            entry, image, submitted = self._jobs.pop(done.job_id)
            entry.owed -= 1
            if done.result is None:
                self.stats.record_not_triaged("triage_error")
                self._log_once("triage_error", "triage failed on an image: %s (further ones counted only)",
                               done.error)
                continue
            result = done.result
            assert isinstance(result, FrameTriage)
            entry.results[image] = result
            self.stats.record(result, (time.monotonic() - submitted) * 1e3)
        for job in self.pool.lost_jobs():
            entry, _, _ = self._jobs.pop(job)
            entry.owed -= 1
            self.stats.record_not_triaged("worker_died")

    def _forward_done(self) -> None:
        while self._pending and not self._pending[0].owed and not self._pending[0].unsubmitted:
            entry = self._pending.popleft()
            item = entry.item
            if isinstance(item, (Frame, Train)):
                self._note_hits(item, entry.results)
            if isinstance(item, Frame):
                item = replace(item, triage=entry.results[0])
            elif isinstance(item, Train):
                item = replace(item, triage=tuple(entry.results))
            elif isinstance(item, EndOfSeries):
                self.in_series = False  # ``active`` stays: it describes the last series until the next one
            assert self._outbox is not None, "prepare() names the outbox before any series"
            self._outbox.put(item, wait_for_room=True)

    def _note_hits(self, item: Frame | Train, results: list[FrameTriage | None]) -> None:
        """Here, in arrival order, not as results come back: with several workers a later frame's result
        can arrive first, and the last hit must be the last one in the series."""
        for image, result in enumerate(results):
            if result is not None and result.is_hit:
                number = self.last_hit.number + 1 if self.last_hit else 1
                self.last_hit = LastHit(item, image, result.n_peaks, number, result.peaks)

    def _drain(self) -> None:
        """Finish and forward everything of the previous series before a new setup is sent."""
        while self._pending:
            self._collect(0.005)
            self._submit_waiting()
            self._forward_done()

    def _log_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(message, *args)

"""Sequences one AGIPD run: the writer claims the run directory, then the receiver forwards
``nb_trains`` trains (or until Stop/Abort/silence), then the run ends in the writer.

The Karabo bridge has no arm/trigger: the detector streams continuously, so Prepare only claims the
files and Start opens the gate of the receiver (Karabo bridge protocol).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..core.errors import AcquisitionAbandoned, AcquisitionStateError, ConfigError
from ..core.frame_queue import FrameQueue
from ..core.series import EndOfSeries, EndReason
from ..core.stage import Item
from .receiver import AgipdReceiver

log = logging.getLogger(__name__)


RunClaim = Callable[[int], FrameQueue[Item]]
"""Called with the run number at Prepare: claims the run directory (raising the writer's refusal) and returns
the queue the trains go to (the writer's, or a stage in front of it)."""


class AgipdAcquisition:
    """Prepare/Start/Stop/Abort of one AGIPD run; blocking methods for the device's worker threads.

    ``stream_timeout_s`` is how long the bridge may stay silent while trains are owed before the run is
    ended as timed out (a vanished bridge); the device then reports FAULT. While a REQ request is in flight
    the receiver's ``request_timeout_s`` applies instead: a bridge that answers slowly is still sending.
    """

    def __init__(self, receiver: AgipdReceiver, *, stream_timeout_s: float = 5.0) -> None:
        self.receiver = receiver
        self.stream_timeout_s = stream_timeout_s
        self.run_number: int | None = None
        self.nb_trains = 0
        self.prepared = False
        self.running = False
        self._outbox: FrameQueue[Item] | None = None
        self._ended = threading.Event()
        self._last_end: EndOfSeries | None = None
        self._abandoned = False
        receiver.on_series_end = self._on_end

    def prepare(self, run_number: int, nb_trains: int, claim: RunClaim) -> None:
        """Claim the run's files and its route (``claim``): trains go to the queue it returns."""
        if self.running:
            raise AcquisitionStateError("Prepare", "running", "Stop or Abort the running run first")
        problems = [f"run_number must be >= 1, got {run_number}"] if run_number < 1 else []
        problems += [f"nb_trains must be >= 1, got {nb_trains}"] if nb_trains < 1 else []
        if problems:
            raise ConfigError(problems)
        if self._abandoned:
            raise AcquisitionAbandoned(run_number)
        outbox = claim(run_number)
        self.run_number, self.nb_trains, self._outbox = run_number, nb_trains, outbox
        self.receiver.stats.reset()
        self.prepared = True

    def abandon(self) -> None:
        """The device is re-initialised while ``prepare`` may still run in a worker thread: it claims nothing."""
        self._abandoned = True

    def acquire(self) -> EndOfSeries:
        """Receive the run; returns its end. Raises TimeoutError after ending the run if the bridge goes silent."""
        if not self.prepared or self.run_number is None or self._outbox is None:
            raise AcquisitionStateError("Start", "idle", "call Prepare first")
        self.prepared, self.running = False, True
        self._ended.clear()
        try:
            self.receiver.listen(self.run_number, self._outbox, max_trains=self.nb_trains)
            while not self._ended.wait(0.05):
                silence = self._silence()
                if silence:
                    detail = (f"{silence} with {self.receiver.stats.trains_received}/{self.nb_trains} trains "
                              "received; check the bridge endpoint, then Reset")
                    self.receiver.end_series(EndReason.TIMEOUT, detail)
                    self._ended.wait(5.0)
                    raise TimeoutError(detail)
        finally:
            self.running = False
        assert self._last_end is not None
        return self._last_end

    def _silence(self) -> str:
        """How the bridge has been silent too long, or "" while it is not."""
        waited_s = self.receiver.pending_request_s()
        if waited_s is not None:
            limit_s = self.receiver.request_timeout_s
            return f"the Karabo bridge left a request for a train unanswered for {waited_s:.1f}s" \
                if waited_s > limit_s else ""
        silent_s = time.monotonic() - self.receiver.last_message_monotonic
        return f"no train from the Karabo bridge for {silent_s:.1f}s" if silent_s > self.stream_timeout_s else ""

    def stop(self, reason: EndReason = EndReason.STOP) -> None:
        """End the run after the trains already read (Stop drains them into the writer)."""
        if self.running:
            self.receiver.end_series(reason, f"{reason.value} command")
        self.prepared = False

    def _on_end(self, end: EndOfSeries) -> None:
        self._last_end = end
        self._ended.set()

"""One receiver's part of a series that a controlling device armed: the engine of a receiver behind a
fan-out (stream_fan_out.py), which has no detector to configure, arm or trigger.

The controlling device arms the detector and tells each receiver the series id; the receiver claims its files
and listens. The fan-out sends every receiver the series header and, after the last frame it sent that
receiver, the end (the detector's, or one it made for Stop, Abort and silence), so the series ends here
on its own, in stream order. There is no silence timeout: a receiver may rightly hear nothing while the
other receivers' blocks stream; the controlling device watches the detector's stream instead.
"""

from __future__ import annotations

import logging
import threading

from ..core.errors import AcquisitionAbandoned, AcquisitionStateError
from ..core.series import EndOfSeries, EndReason
from .acquisition import Phase, SeriesClaim
from .stream_receiver import StreamReceiver

log = logging.getLogger(__name__)


class StreamFollower:
    """Blocking methods, called from worker threads of the receiver device."""

    def __init__(self, receiver: StreamReceiver) -> None:
        self.receiver = receiver
        self.phase = Phase.IDLE
        self.series_id: int | None = None
        self.last_end: EndOfSeries | None = None
        self._series_ended = threading.Event()
        self._abandoned = False
        self._claim_lock = threading.Lock()  # abandon() vs. claiming files and listening
        receiver.on_series_end = self._on_series_end

    def prepare(self, series_id: int, claim: SeriesClaim) -> None:
        """Claim the files of ``series_id`` and listen to it; a header read already is kept (the receiver
        buffers what arrives before ``listen``)."""
        if self.phase in (Phase.ACQUIRING, Phase.ENDING):
            raise AcquisitionStateError("Prepare", self.phase.value, "Stop or Abort the running series first")
        if self.phase is Phase.PREPARED:
            self._end_and_wait(EndReason.STOP, "prepared again")
        with self._claim_lock:
            if self._abandoned:
                raise AcquisitionAbandoned(series_id)
            outbox = claim(series_id)
            self.receiver.stats.reset()
            self.receiver.decoder.reset()
            self._series_ended.clear()
            self.series_id, self.last_end = series_id, None
            self.receiver.listen(series_id, outbox, None)
            self.phase = Phase.PREPARED
        log.info("receiving series %d", series_id)

    def abandon(self) -> None:
        """The device is re-initialised while ``prepare`` may still wait in a worker thread: from now on that
        prepare claims no files and listens to nothing."""
        with self._claim_lock:
            self._abandoned = True

    def acquire(self) -> EndOfSeries:
        """Returns once the series' end went out after its last frame."""
        if self.phase is not Phase.PREPARED:
            raise AcquisitionStateError("Start", self.phase.value, "call PrepareSeries first")
        self.phase = Phase.ACQUIRING
        self._series_ended.wait()  # set by the series' end, or by the receiver closing (the device's Init)
        self.phase = Phase.IDLE
        assert self.last_end is not None
        return self.last_end

    def end(self, reason: EndReason, detail: str) -> None:
        """Stop or Abort from the operator: the series ends after the messages already read; a fan-out's end
        already on its way makes no difference (the first end closes the series)."""
        if self.phase is Phase.IDLE:
            return
        self._end_and_wait(reason, detail)

    def _end_and_wait(self, reason: EndReason, detail: str) -> None:
        self.receiver.end_series(reason, detail)
        self._series_ended.wait(5.0)
        if self.phase is Phase.PREPARED:
            self.phase = Phase.IDLE

    def _on_series_end(self, end: EndOfSeries) -> None:
        self.last_end = end
        self._series_ended.set()
        if self.phase is Phase.PREPARED:  # ended before Start (the controller stopped an armed series)
            self.phase = Phase.IDLE

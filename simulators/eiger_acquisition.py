"""The detector's command state machine: initialize, arm, trigger, disarm, cancel, abort (SIMPLON API docs).

States: ``na`` until ``initialize``; ``idle``; ``ready`` = armed; ``acquire`` while a trigger's images
are exposed; ``error`` when building a message failed. A series holds ``ntrigger`` triggers of
``nimages`` images each; image indices run on across triggers. ``trigger`` blocks until its images
are out, as on hardware, so clients need long HTTP timeouts (LImA allows 5 min).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable

from .eiger_stream import MessageKind, StopRequest, StreamJob, StreamSender
from .simplon_errors import RequestRejected
from .stream_series import StreamSeries


class DetectorState(enum.Enum):
    NA = "na"
    IDLE = "idle"
    READY = "ready"
    ACQUIRE = "acquire"
    ERROR = "error"


class EigerAcquisition:
    """Serialises commands from concurrent HTTP threads; the stream thread does the sending.

    Deviations of real DCUs can be switched on (settable between series): ``duplicate_end_at_disarm``
    sends a second end message at disarm, as some firmware does; ``end_message=False`` sends none;
    ``stream_id_offset`` makes the stream carry series ``arm id + offset`` while ``arm`` answers the arm id,
    as a DCU whose sequence ids and stream ids disagree.
    """

    def __init__(self, sender: StreamSender, *, duplicate_end_at_disarm: bool = False, end_message: bool = True,
                 stream_id_offset: int = 0) -> None:
        self._sender = sender
        self.duplicate_end_at_disarm = duplicate_end_at_disarm
        self.end_message = end_message
        self.stream_id_offset = stream_id_offset
        self._lock = threading.Lock()
        self._state = DetectorState.NA
        self._series: StreamSeries | None = None
        self._sequence_id = 0
        self._next_index = 0
        self._triggers_done = 0
        self._active: StreamJob | None = None
        self.errors: list[str] = []

    @property
    def state(self) -> DetectorState:
        return self._state

    @property
    def sequence_id(self) -> int:
        """Id of the current or last series; 0 before the first ``arm``."""
        return self._sequence_id

    def initialize(self) -> None:
        self.abort()
        with self._lock:
            self._state = DetectorState.IDLE
            self.errors.clear()

    def arm(self, open_series: Callable[[int], StreamSeries]) -> int:
        """Open series ``sequence_id + 1`` from the configuration as it is now, and send its header."""
        with self._lock:
            if self._state not in (DetectorState.IDLE, DetectorState.READY):
                raise RequestRejected(f"arm needs state idle or ready, the detector is {self._state.value}")
            previous = self._series
            arm_id = self._sequence_id + 1
            series = open_series(arm_id + self.stream_id_offset)
            self._sequence_id = arm_id
            self._series, self._next_index, self._triggers_done = series, 0, 0
            self._state = DetectorState.READY
            # Queued under the lock, so a concurrent arm cannot slip its messages in between.
            jobs = [StreamJob(MessageKind.END, previous)] if previous is not None else []
            jobs.append(StreamJob(MessageKind.START, series))
            for job in jobs:
                self._sender.submit(job)
        for job in jobs:
            self._wait(job)
        return arm_id

    def trigger(self, exposure_s: float | None = None) -> None:
        """The REST ``trigger``: internal modes only; ``inte`` takes the exposure as its value."""
        self._acquire_one_trigger(exposure_s, internal=True)

    def fire_external_trigger(self, exposure_s: float | None = None) -> None:
        """A pulse (``exts``) or gate of ``exposure_s`` (``exte``) on the trigger input; blocks like ``trigger``."""
        self._acquire_one_trigger(exposure_s, internal=False)

    def disarm(self) -> int:
        """Close the series: the end message goes out, state → idle. Stops a running trigger first."""
        return self._close_series(StopRequest.ABORT)

    def abort(self) -> int:
        return self._close_series(StopRequest.ABORT)

    def cancel(self) -> int:
        """Stop after the image being exposed; the series stays armed (``ready``)."""
        with self._lock:
            job = self._active
        if job is not None:
            job.request_stop(StopRequest.CANCEL)
            job.done.wait()
        return self._sequence_id

    def _acquire_one_trigger(self, exposure_s: float | None, *, internal: bool) -> None:
        with self._lock:
            series = self._series
            if self._state is not DetectorState.READY or series is None:
                raise RequestRejected(f"trigger needs an armed detector (ready), it is {self._state.value}")
            mode = series.trigger_mode
            if mode.is_internal != internal:
                raise RequestRejected(
                    f"trigger_mode {mode.value} does not take this trigger; "
                    + ("use the REST trigger command" if mode.is_internal else "fire an external trigger")
                )
            if self._triggers_done >= series.ntrigger:
                raise RequestRejected(f"all {series.ntrigger} triggers of series {series.series_id} are done; disarm")
            if mode.is_gated:
                if exposure_s is None or exposure_s <= 0:
                    raise RequestRejected(f"trigger_mode {mode.value} needs the exposure time (s) as the trigger value")
                exposure, period = exposure_s, exposure_s + series.readout_time
            else:
                exposure, period = series.count_time, series.frame_time
            job = StreamJob(
                MessageKind.IMAGES,
                series,
                first_index=self._next_index,
                count=series.nimages,
                exposure_s=exposure,
                period_s=period,
            )
            self._active, self._state = job, DetectorState.ACQUIRE
            self._triggers_done += 1
        self._sender.submit(job)
        job.done.wait()
        with self._lock:
            self._active = None
            self._next_index = job.first_index + job.images_done
            if self._state is DetectorState.ACQUIRE:
                self._state = DetectorState.READY
        self._raise_if_failed(job)

    def _close_series(self, request: StopRequest) -> int:
        with self._lock:
            job, series = self._active, self._series
            self._series = None
            if self._state in (DetectorState.READY, DetectorState.ACQUIRE):
                self._state = DetectorState.IDLE
        if job is not None:
            job.request_stop(request)
            job.done.wait()
        if series is not None and self.end_message:
            self._wait(self._sender.submit(StreamJob(MessageKind.END, series)))
            if self.duplicate_end_at_disarm:
                self._wait(self._sender.submit(StreamJob(MessageKind.END, series)))
        return self._sequence_id

    def _wait(self, job: StreamJob) -> None:
        job.done.wait()
        self._raise_if_failed(job)

    def _raise_if_failed(self, job: StreamJob) -> None:
        if job.error is not None:
            with self._lock:
                self._state = DetectorState.ERROR
                self.errors.append(f"series {job.series.series_id}: {job.error}")
            raise job.error

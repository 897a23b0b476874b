"""The DCU's stream interface: a bound ZMQ PUSH socket and the one thread that owns it (DECTRIS Stream V1/V2 docs).

ZMQ sockets are not thread-safe, so HTTP handler threads never touch the socket: they queue jobs
(series start, a trigger's images, series end) and wait on each job's ``done`` event. Jobs run in
order, which keeps header → images → end ordering on the wire whatever the HTTP threads do.

Backpressure: a send waits while ZMQ's queue is full or no receiver is connected, polling so that
abort and kill interrupt it. After ``send_timeout_s`` the image is dropped and counted in ``dropped``
(stream status), as a DCU drops when its buffer is full; once one image was dropped the following
ones are tried once without waiting, until a send succeeds again, so a series with no receiver
ends in about one timeout rather than one per image.
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from types import ModuleType

import zmq

from . import stream_v1_messages, stream_v2_messages
from .stream_config import StreamFormat
from .stream_series import ImageTiming, StreamSeries
from .zmq_binding import bind_socket

log = logging.getLogger(__name__)

_MESSAGES: dict[StreamFormat, ModuleType] = {
    StreamFormat.LEGACY: stream_v1_messages,
    StreamFormat.CBOR: stream_v2_messages,
}
_POLL_MS = 20
_LINGER_MS = 500  # on a graceful stop, queued messages (the end message) get this long to leave


class MessageKind(enum.Enum):
    START = "start"
    IMAGES = "images"
    END = "end"


class StopRequest(enum.Enum):
    CANCEL = "cancel"  # finish the image being exposed, then stop
    ABORT = "abort"  # stop now, mid-wait or mid-send


@dataclass(eq=False)
class StreamJob:
    """One unit of work for the stream thread; ``done`` is set when it ended, however it ended.

    For IMAGES, frames ``first_index`` … ``first_index + count - 1`` are exposed every ``period_s``.
    ``images_done`` counts images acquired (sent, dropped or not streamed); ``error`` is set if building
    a message failed, and the waiting thread re-raises it.
    """

    kind: MessageKind
    series: StreamSeries
    first_index: int = 0
    count: int = 0
    exposure_s: float = 0.0
    period_s: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)
    images_done: int = 0
    error: BaseException | None = None
    stop_request: StopRequest | None = None
    aborted: threading.Event = field(default_factory=threading.Event)

    def request_stop(self, request: StopRequest) -> None:
        self.stop_request = request
        if request is StopRequest.ABORT:
            self.aborted.set()


class StreamSender:
    """Owns the PUSH socket; ``paced`` sends each image when its exposure would end."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        paced: bool = True,
        send_timeout_s: float = 2.0,
        high_water_mark: int = 64,
    ) -> None:
        self.paced = paced
        self.send_timeout_s = send_timeout_s
        self.frames_sent = 0
        self.frames_dropped = 0
        self.sending = False
        self._context, self._socket, self.endpoint = bind_socket(
            zmq.PUSH, host, port, what="stream", send_hwm=high_water_mark
        )
        self._jobs: queue.Queue[StreamJob | None] = queue.Queue()
        self._killed = threading.Event()
        self._current: StreamJob | None = None
        self._thread = threading.Thread(target=self._run, name=f"eiger-stream {self.endpoint}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: StreamJob) -> StreamJob:
        if self._killed.is_set() or not self._thread.is_alive():
            job.done.set()
        else:
            self._jobs.put(job)
        return job

    def stop(self) -> None:
        """Finish queued jobs, then close; call after the acquisition stopped queueing."""
        self._shutdown()

    def kill(self) -> None:
        """Vanish: drop whatever is queued or in flight, send nothing more, close the socket at once."""
        self._killed.set()
        current = self._current
        if current is not None:
            current.request_stop(StopRequest.ABORT)
        self._shutdown()

    def _shutdown(self) -> None:
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        elif not self._socket.closed:
            self._close()
        self._finish_pending()

    def _close(self) -> None:
        self._socket.close(linger=0 if self._killed.is_set() else _LINGER_MS)
        self._context.term()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._killed.is_set():
                job.done.set()
                continue
            self._current = job
            try:
                self._execute(job)
            except Exception as err:  # handed to the waiting HTTP thread, which turns it into HTTP 500
                log.exception("stream %s job of series %d failed", job.kind.value, job.series.series_id)
                job.error = err
            finally:
                self._current = None
                self.sending = False
                job.done.set()
        self._close()
        self._finish_pending()

    def _finish_pending(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.done.set()

    def _execute(self, job: StreamJob) -> None:
        series = job.series
        messages = _MESSAGES[series.stream_format]
        if job.kind is MessageKind.IMAGES:
            self._send_images(job, messages)
            return
        if job.kind is MessageKind.START:
            self.frames_sent = self.frames_dropped = 0
        if not series.stream_enabled:
            return
        build = messages.start_message if job.kind is MessageKind.START else messages.end_message
        if not self._send(build(series), patience_s=self.send_timeout_s, abort=job.aborted):
            log.warning(
                "series %d %s message dropped: no receiver took it within %.1f s",
                series.series_id,
                job.kind.value,
                self.send_timeout_s,
            )

    def _send_images(self, job: StreamJob, messages: ModuleType) -> None:
        series = job.series
        self.sending = series.stream_enabled
        t0 = time.monotonic()
        offset_s = t0 - series.arm_clock_s
        backlogged = False
        for k in range(job.count):
            if job.stop_request is not None or self._killed.is_set():
                return
            index = job.first_index + k
            start_s = offset_s + k * job.period_s
            timing = ImageTiming(start_s=start_s, stop_s=start_s + job.exposure_s, exposure_s=job.exposure_s)
            parts = messages.image_message(series, index, timing) if series.stream_enabled else None
            if self.paced:
                # The image leaves the detector when its exposure ends; an abort cuts the wait short.
                if job.aborted.wait(max(0.0, t0 + k * job.period_s + job.exposure_s - time.monotonic())):
                    return
            if parts is not None:
                patience = 0.0 if backlogged else self.send_timeout_s
                if self._send(parts, patience_s=patience, abort=job.aborted):
                    self.frames_sent += 1
                    backlogged = False
                elif job.aborted.is_set() or self._killed.is_set():
                    return
                else:
                    if not backlogged:
                        log.warning("series %d image %d dropped: no receiver took it", series.series_id, index)
                    self.frames_dropped += 1
                    backlogged = True
            job.images_done += 1

    def _send(self, parts: list[bytes], *, patience_s: float, abort: threading.Event) -> bool:
        deadline = time.monotonic() + patience_s
        while True:
            try:
                self._socket.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
                return True
            except zmq.Again:
                if self._killed.is_set() or abort.is_set() or time.monotonic() >= deadline:
                    return False
            self._socket.poll(_POLL_MS, zmq.POLLOUT)

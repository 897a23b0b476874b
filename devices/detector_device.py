"""What every detector device shares: the writer (and hit finder, data policy) it feeds in this process, the
background work behind Prepare, Start, Stop and Abort, and the LImA-style ``acq_status``.

No command waits for the detector, the disk or the hit finder: Prepare returns at once and the device shows
MOVING while it arms the detector, claims the files and waits for triage to be ready, then STANDBY (or FAULT
with the reason); Start returns at once and the device is RUNNING until the writer has closed the series;
Stop and Abort end the series in the background. Init and Reset abort a series in any of those steps, so
the whole server can always run the next one. The state diagram is in the README.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import numpy as np
from tango import DevFailed, DevState, Util
from tango.server import attribute, command, device_property

from detpipe.pipeline.core.frame_queue import FrameQueue
from detpipe.pipeline.core.series import DetectorConfig, EndReason
from detpipe.pipeline.core.stage import Item
from detpipe.pipeline.triage.setup import DetectorKind

from .data_policy import DataPolicy
from .detpipe_device import RELEASE_BUDGET_S, in_background, settle, wait_for
from .hit_finder import HitFinder
from .live_view_device import LiveViewDevice
from .nexus_writer import QUEUE_ALARM_PERCENT, NexusWriter

log = logging.getLogger(__name__)

T = TypeVar("T")

WRITER_DRAIN_TIMEOUT_S = 120.0
# How long a background Prepare waits for the previous series to be closed and for the hit finder's workers
# (their first start on a machine compiles peakfinder8: about a minute on a loaded 2-core machine).
CHAIN_READY_TIMEOUT_S = 600.0
# Abort answers once the series is closed, or after this long with the closing going on in the background.
ABORT_WAIT_S = 2.0


class DetectorDevice(LiveViewDevice):
    """Base of EigerDetector and AgipdDetector. Subclasses implement the engine steps (``prepare_series``,
    ``acquire_series``, ``end_engine_series``) and say when they are armed (``armed``) and what their
    acquisition is called in messages (``acquisition_label``)."""

    WriterDevice = device_property(
        dtype=str, mandatory=True, doc="Mandatory. Name of the NexusWriter device in this server that receives the data"
    )
    DataPolicyDevice = device_property(
        dtype=str, default_value="",
        doc="Name of the DataPolicy device in this server that decides what is kept (raw/red) after triage; "
            "empty = everything goes to the writer as raw",
    )
    HitFinderDevice = device_property(
        dtype=str, default_value="",
        doc="Name of the HitFinder device in this server that triages the data before the writer; empty = none",
    )
    async def init_device(self) -> None:
        await super().init_device()
        self._connecting: asyncio.Task[None] | None = None  # reaching the detector (INIT until done)
        self._preparing: asyncio.Task[None] | None = None
        self._engine_call: asyncio.Future[Any] | None = None  # the blocking step of the Prepare in progress
        self._run: asyncio.Task[None] | None = None  # Start → saved, or the end of an armed series
        self._ending: asyncio.Future[object] | None = None  # Stop/Abort's engine call while a series runs
        self._stop_reason: EndReason | None = None  # Stop/Abort asked while preparing or running
        self._stop_cause = ""  # who asked, when not the operator (an Init, a Reset)
        self._chain_step = ""  # what a Prepare waits for before the engine works
        self._written: Callable[[], bool] | None = None  # is the armed series closed by the writer?
        self._summary = ""  # how the last series ended; Status when idle
        self.triage_geometry: tuple[DetectorKind, DetectorConfig | None] | None = None

    async def delete_device(self) -> None:
        await self.abort_series(f"Init of {self.get_name()}", RELEASE_BUDGET_S)
        if self._engine_call is not None and not self._engine_call.done():
            self.abandon_engine()
            self.unfinished_engine_call = self._engine_call
            self._engine_call.add_done_callback(_log_abandoned)
        await self.stop_monitor()
        for task in (self._connecting, self._preparing, self._run):
            await _cancelled(task)
        await self.close_live_view()
        await super().delete_device()

    async def _stop_connecting(self) -> None:
        await _cancelled(self._connecting)

    # --- what subclasses provide ---
    @property
    def armed(self) -> bool:
        """Prepared and waiting for Start; subclasses read it from their engine."""
        return False

    @property
    def acquisition_label(self) -> str:
        return "Acquisition"

    @property
    def engine_step(self) -> str:
        """What the engine is doing in a Prepare in progress; subclasses read it from their engine."""
        return ""

    # The engine steps, implemented by each detector: arm the next series and claim its files (blocking work
    # through ``engine_call``); receive the armed series until the writer has closed it; blocking, end the
    # engine's armed or running series (Stop drains, Abort closes the files at once); and tell the engine that
    # a Prepare still running in its thread is abandoned (Init).
    prepare_series: Callable[[], Coroutine[Any, Any, None]]
    acquire_series: Callable[[], Coroutine[Any, Any, None]]
    end_engine_series: Callable[[EndReason], None]
    abandon_engine: Callable[[], None]
    # A Prepare's engine call still running when the device was re-initialised (an arm can take seconds, an
    # Init may not wait for it). Kept on purpose across Init: the next Prepare waits until that thread is done
    # with the detector before it talks to the detector itself.
    unfinished_engine_call: asyncio.Future[Any] | None = None

    # --- the devices this detector feeds ---
    def routes_through(self, device_name: str) -> bool:
        """True when this detector's series pass through ``device_name`` (its writer, hit finder or policy)."""
        names = (self.WriterDevice, self.HitFinderDevice, self.DataPolicyDevice)
        return device_name.lower() in (n.lower() for n in names if n)

    def _writer(self) -> NexusWriter:
        """The writer device object in this process (raises DevFailed until it is created)."""
        writer: NexusWriter = self._device(self.WriterDevice, NexusWriter)
        return writer

    def _device(self, name: str, kind: type[Any]) -> Any:
        """A device object of this process (raises DevFailed until it is created)."""
        device = Util.instance().get_device_by_name(name)
        if not isinstance(device, kind):
            raise TypeError(f"{name} is a {type(device).__name__}, not a {kind.__name__}")
        return device

    def _hit_finder(self) -> HitFinder | None:
        return self._device(self.HitFinderDevice, HitFinder) if self.HitFinderDevice else None

    def data_sink(self) -> NexusWriter | DataPolicy:
        """Who claims the next series' files and receives its frames after triage: the data policy when one is
        configured, else the writer."""
        if not self.DataPolicyDevice:
            return self._writer()
        policy: DataPolicy = self._device(self.DataPolicyDevice, DataPolicy)
        return policy

    def _chain(self) -> list[NexusWriter | DataPolicy | HitFinder]:
        """The devices of this process the next series passes through."""
        devices = (self._hit_finder(), self.data_sink(), self._writer())
        return list(dict.fromkeys(device for device in devices if device is not None))

    async def wait_for_chain(self) -> None:
        """Before arming: every device the series passes through has closed the previous series (it may still
        drain after a Stop or an Init), and the hit finder's workers have started (the first start on a machine
        compiles peakfinder8)."""
        for device in self._chain():
            self._chain_step = f"waiting for {device.get_name()} to close the previous series"
            if not await wait_for(lambda: not device.in_series, WRITER_DRAIN_TIMEOUT_S, poll_s=0.02):
                raise TimeoutError(f"{device.get_name()} still busy with the previous series after "
                                   f"{WRITER_DRAIN_TIMEOUT_S:.0f}s: {device.get_status()}")
        finder = self._hit_finder()
        if finder is not None and finder.enabled_for_next_series:
            self._chain_step = f"waiting for the hit finder {finder.get_name()}: {finder.get_status()}"
            if not await wait_for(lambda: finder.ready_for_series, CHAIN_READY_TIMEOUT_S, poll_s=0.05):
                raise TimeoutError(f"hit finder {finder.get_name()} not ready after {CHAIN_READY_TIMEOUT_S:.0f}s: "
                                   f"{finder.get_status()}")
        self._chain_step = ""

    def claimed(self, sink: NexusWriter | DataPolicy, series_id: int, kind: DetectorKind) -> FrameQueue[Item]:
        """After ``sink`` claimed the files of ``series_id`` (in the engine's thread, once the detector is armed):
        how to tell when it has closed them, and where the data goes, the hit finder in front of the sink when
        one is enabled. Resolved now, not before the arm, so a device re-initialised meanwhile is the one used."""
        self._written = sink.series_written_check(series_id)
        finder = self._hit_finder()
        return sink.inbox if finder is None else finder.connect(kind, sink.inbox)

    def preload_triage(self, kind: DetectorKind, config: DetectorConfig | None) -> None:
        """Give the hit finder the geometry of this detector's next series, so its workers build it now and not
        inside a Prepare (a hit finder created later, or re-initialised, asks for ``triage_geometry``)."""
        self.triage_geometry = (kind, config)
        try:
            finder = self._hit_finder()
        except DevFailed:
            return  # not created yet: it reads triage_geometry when it is
        if finder is not None:
            finder.preload(kind, config)

    async def expect_series(self, config: DetectorConfig | None, pixel_mask: np.ndarray | None = None) -> None:
        """Tell the hit finder (if any) what the armed series looks like (its pixel mask too, as read over
        REST); returns when triage is ready for it."""
        finder = self._hit_finder()
        if finder is not None:
            self._chain_step = "waiting for the hit finder's geometry"
            await finder.expect(config, pixel_mask)
            self._chain_step = ""

    def _writer_queue_fill(self) -> float:
        try:
            return self._writer().inbox.fill_percent
        except DevFailed:  # the writer device is created after this one at server start-up
            return 0.0

    # --- state of the acquisition ---
    @property
    def connecting(self) -> bool:
        return self._connecting is not None and not self._connecting.done()

    @property
    def preparing(self) -> bool:
        return self._preparing is not None and not self._preparing.done()

    @property
    def acquiring(self) -> bool:
        return self._run is not None and not self._run.done()

    @property
    def busy(self) -> bool:
        """Preparing, armed or acquiring: a series exists that Init, Reset or Abort must end."""
        return self.preparing or self.armed or self.acquiring

    @property
    def prepare_step(self) -> str:
        return self._chain_step or self.engine_step or "starting"

    def running_state(self, frames_dropped: int) -> DevState:
        alarm = frames_dropped > 0 or self._writer_queue_fill() > QUEUE_ALARM_PERCENT
        return DevState.ALARM if alarm else DevState.RUNNING

    def ending_note(self) -> str:
        """Status suffix while Stop or Abort is ending the series."""
        if self._stop_reason is None:
            return ""
        verb = "Stopping (draining)" if self._stop_reason is EndReason.STOP else "Aborting"
        return f"; {verb}{f' for {self._stop_cause}' if self._stop_cause else ''}, waiting for the writer"

    # --- commands' shared logic ---
    def check_can_prepare(self) -> None:
        if self.get_state() == DevState.FAULT:
            raise RuntimeError(f"device is in FAULT ({self.get_status()}); Reset first")
        if self.preparing:
            raise RuntimeError(f"a Prepare is already in progress ({self.prepare_step}); wait for STANDBY, or Abort")
        if self.acquiring and self._stop_reason is None:
            raise RuntimeError(f"{self.acquisition_label} is running; Stop or Abort it first")

    def start_prepare(self) -> None:
        """Prepare's work as the owned background task: MOVING until armed (STANDBY) or failed (FAULT)."""
        self._stop_reason, self._stop_cause, self._written = None, "", None
        self._chain_step = ""
        self._throttle.forget()
        self._preparing = asyncio.create_task(self._prepare(), name=f"{self.get_name()} prepare")
        self._preparing.add_done_callback(self._on_prepare_done)
        self.refresh(force=True)

    async def engine_call(self, call: Callable[[], T]) -> T:
        """A blocking engine step of a Prepare (arming, claiming files) on a worker thread; an Init does not
        cancel it (a thread cannot be), it abandons it (``abandon_engine``) and leaves it to finish."""
        self._engine_call = in_background(call)
        result: T = await asyncio.shield(self._engine_call)
        return result

    async def _prepare(self) -> None:
        self.frames_lost = 0
        if (unfinished := self.unfinished_engine_call) is not None:
            self._chain_step = "waiting for the detector to answer the Prepare abandoned by the last Init"
            await settle([unfinished], CHAIN_READY_TIMEOUT_S)
            self.unfinished_engine_call = None
        if self.connecting:  # a Prepare right after Init or Reset waits for the detector to answer
            self._chain_step = "waiting for the connection to the detector"
            await settle([self._connecting] if self._connecting else [], CHAIN_READY_TIMEOUT_S)
        if self._fault is not None:
            raise RuntimeError(f"the detector is not connected: {self._fault}")
        if self.acquiring:  # the previous series is still being stopped: it is closed first
            self._chain_step = f"waiting for {self.acquisition_label} to be closed"
            await settle([self._run] if self._run else [], WRITER_DRAIN_TIMEOUT_S)
            self._stop_reason, self._stop_cause = None, ""
        elif self.armed:  # Prepare again from STANDBY: the armed series (no frame yet) is ended first
            self._chain_step = f"ending the armed {self.acquisition_label}"
            await asyncio.to_thread(self.end_engine_series, EndReason.STOP)
        await self.prepare_series()
        if self._stop_reason is not None:  # Stop or Abort arrived while preparing
            self.start_acquisition(self._end_armed(self._stop_reason))

    def _on_prepare_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (err := task.exception()) is not None:
            self.set_fault(f"Prepare failed: {type(err).__name__}: {err}")
        self.refresh(force=True)

    def check_can_start(self) -> None:
        if self.preparing:
            raise RuntimeError(f"Prepare is still in progress ({self.prepare_step}); Start once State is STANDBY")
        if self.acquiring:
            raise RuntimeError(f"{self.acquisition_label} is already running")
        if not self.armed:
            raise RuntimeError("Start needs a prepared series: call Prepare and wait for State STANDBY")

    def start_acquisition(self, acquisition: Coroutine[Any, Any, None]) -> None:
        """Run ``acquisition`` as the owned task; its exception, if any, ends in FAULT."""
        self._run = asyncio.create_task(acquisition, name=f"{self.get_name()} acquisition")
        self._run.add_done_callback(self._on_acquisition_done)
        self.refresh(force=True)

    def end_series(self, reason: EndReason, cause: str = "") -> None:
        """Stop (drain) or Abort whatever step the series is in; the work runs in the background. Nothing to
        end is not an error: Stop and Abort are safe to repeat."""
        if not self.busy or self._stop_reason in (reason, EndReason.ABORT):
            return
        self._stop_reason, self._stop_cause = reason, cause
        if self.preparing:
            return  # the Prepare task ends the series as soon as it is armed
        if self.acquiring:
            self._ending = in_background(lambda: self.end_engine_series(reason))
        else:
            self.start_acquisition(self._end_armed(reason))
        self.refresh(force=True)

    async def abort_series(self, cause: str, timeout_s: float = ABORT_WAIT_S) -> None:
        """Abort the series in whatever step it is (Init, Reset, or Init/Reset of a device it passes through);
        returns once it is closed, or after ``timeout_s`` with the closing going on in the background."""
        if not self.busy:
            return
        log.warning("%s: aborting %s (%s)", self.get_name(), self.acquisition_label, cause)
        self.end_series(EndReason.ABORT, cause)
        await self.series_settled(timeout_s)

    async def series_settled(self, timeout_s: float) -> bool:
        """True once no Prepare or acquisition task is left (a Prepare ended by Abort hands over to the task that
        closes its series), False after ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while tasks := [t for t in (self._preparing, self._run) if t is not None and not t.done()]:
            if not await settle(tasks, deadline - loop.time()):
                return False
        return True

    async def _end_armed(self, reason: EndReason) -> None:
        await asyncio.to_thread(self.end_engine_series, reason)
        self._summary = f"{self.acquisition_label} ended before Start{await self.wait_series_written()}"

    async def wait_series_written(self) -> str:
        """Returns once every file of the series is closed (and, under a data policy, its manifest written); the
        return value is a note for Status about what could not be finished (empty when everything was)."""
        written = self._written
        if written is None:
            return ""
        if not await wait_for(written, WRITER_DRAIN_TIMEOUT_S):
            raise TimeoutError(f"writer still draining {self.acquisition_label} after {WRITER_DRAIN_TIMEOUT_S:.0f}s")
        sink = self.data_sink()
        if isinstance(sink, DataPolicy):
            try:
                await sink.finalise()
            except OSError as err:  # the files are closed; the data policy shows ALARM with the reason
                return f"; no manifest ({sink.get_name()}: {err})"
        return ""

    def unwritten_note(self, passed_on: int) -> str:
        """A Status note naming the frames this series passed on that the raw writer did not write (a disk that
        filled up, a file that could not be created), or "". Under a data policy that keeps no raw data, the
        policy's own metrics account for every frame, kept or dropped by the policy."""
        sink = self.data_sink()
        if isinstance(sink, DataPolicy) and not sink.raw_kept:
            return ""
        writer = self._writer()
        self.frames_lost = max(0, passed_on - writer.frames_written_in_series)
        if not self.frames_lost:
            return ""
        return (f"; {self.frames_lost} frames received but not written ({writer.get_name()} "
                f"{writer.get_state()}: {writer.get_status()})")

    def _on_acquisition_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (err := task.exception()) is not None:
            self.set_fault(f"{self.acquisition_label} failed: {type(err).__name__}: {err}")
        elif self._stop_cause:
            self._summary = f"{self.acquisition_label} aborted by {self._stop_cause}. {self._summary}".strip()
        self._stop_reason, self._stop_cause = None, ""
        self.refresh(force=True)

    # --- commands ---
    # What the detector is, for the hit finder and the data policy; the image shape is known once connected.
    detector_kind: DetectorKind
    image_shape: tuple[int, int] | None = None
    frames_lost = 0  # of the last series: received and passed on, not written (see unwritten_note)

    def check_settings(self) -> None:
        """Refuse at once what can be judged without the detector (the data policy's reductions against the
        detector's images); the rest is judged by the background Prepare."""
        sink = self.data_sink()
        if isinstance(sink, DataPolicy):
            sink.check_next(self.detector_kind, self.image_shape)

    @command
    async def Prepare(self) -> None:
        """Arm the next acquisition in the background and return at once: State MOVING (acq_status
        Configuration) while the detector is configured and armed, the files claimed and triage made ready,
        then STANDBY, or FAULT with the reason. A second Prepare while one is in progress is refused."""
        self.check_can_prepare()
        self.check_settings()
        self.start_prepare()

    @command
    async def Start(self) -> None:
        """Start the armed acquisition (State STANDBY) and return at once; RUNNING until the writer has saved
        the last frame, then ON (ALARM if frames were dropped, rejected or missing)."""
        self.check_can_start()
        self.start_acquisition(self.acquire_series())

    @command
    async def Stop(self) -> None:
        """Stop after the current frame and return at once; every frame received is still written (RUNNING
        while the queues drain), then the files close. Also ends an armed or preparing acquisition."""
        self.end_series(EndReason.STOP)

    @command
    async def Abort(self) -> None:
        """Stop now: the detector is aborted and the files are closed with what was queued. Returns once they
        are closed, or after 2 s with the closing going on (RUNNING until done)."""
        self.end_series(EndReason.ABORT)
        await self.series_settled(ABORT_WAIT_S)

    @attribute(label="Queue fill", dtype=float, unit="%", format="%.1f", max_alarm=QUEUE_ALARM_PERCENT,
               description="Fill of the writer's ingress queue; ALARM above 75 %")
    async def queue_fill(self) -> float:
        return self._writer_queue_fill()

    def acquisition_status(self) -> str:
        if self.get_state() == DevState.FAULT:
            return "Fault"
        if self.preparing:
            return "Configuration"
        return "Running" if self.armed or self.acquiring else "Ready"

    @attribute(dtype=str, label="Acquisition status", change_event_implemented=True, change_event_detect=False,
               description="LImA-style acquisition status: Configuration (Prepare in progress, State MOVING), "
                           "Running (armed, acquiring or draining), Ready, or Fault")
    async def acq_status(self) -> str:
        return self.acquisition_status()


async def _cancelled(task: asyncio.Task[None] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _log_abandoned(call: asyncio.Future[Any]) -> None:
    if not call.cancelled() and (err := call.exception()) is not None:
        log.info("abandoned Prepare ended: %s", err)

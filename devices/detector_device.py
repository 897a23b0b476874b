"""What every detector device shares: the writer device it feeds in this process, the acquisition task
that stays RUNNING until the writer has closed the series, and the LImA-style ``acq_status``."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from tango import DevFailed, DevState, Util
from tango.server import attribute, device_property

from detpipe.pipeline.frame_queue import FrameQueue
from detpipe.pipeline.series import DetectorConfig
from detpipe.pipeline.stage import Item
from detpipe.pipeline.triage_setup import DetectorKind

from .data_policy import DataPolicy
from .detpipe_device import DetpipeDevice
from .hit_finder import HitFinder
from .nexus_writer import QUEUE_ALARM_PERCENT, NexusWriter

WRITER_DRAIN_TIMEOUT_S = 120.0


class DetectorDevice(DetpipeDevice):
    """Base of EigerDetector and AgipdDetector; subclasses say when they are armed (``armed``) and what
    their acquisition is called in messages (``acquisition_label``)."""

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
        self._run: asyncio.Task[None] | None = None

    async def delete_device(self) -> None:
        await self.stop_monitor()
        if self._run is not None:
            self._run.cancel()
            await asyncio.gather(self._run, return_exceptions=True)
        await super().delete_device()

    @property
    def armed(self) -> bool:
        """Prepared and waiting for Start; subclasses read it from their engine."""
        return False

    @property
    def acquisition_label(self) -> str:
        return "Acquisition"

    @property
    def acquiring(self) -> bool:
        return self._run is not None and not self._run.done()

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

    def data_sink(self) -> NexusWriter | DataPolicy:
        """Who claims the next series' files and receives its frames after triage: the data policy when one is
        configured, else the writer."""
        if not self.DataPolicyDevice:
            return self._writer()
        policy: DataPolicy = self._device(self.DataPolicyDevice, DataPolicy)
        return policy

    def data_inbox(self, kind: DetectorKind) -> FrameQueue[Item]:
        """Where the next series' data goes: the hit finder when one is configured and enabled, else the sink."""
        sink_inbox = self.data_sink().inbox
        if not self.HitFinderDevice:
            return sink_inbox
        finder: HitFinder = self._device(self.HitFinderDevice, HitFinder)
        return finder.connect(kind, sink_inbox)

    async def expect_series(self, config: DetectorConfig | None) -> None:
        """Tell the hit finder (if any) what the armed series looks like; returns when triage is ready for it."""
        if self.HitFinderDevice:
            await self._device(self.HitFinderDevice, HitFinder).expect(config)

    def _writer_queue_fill(self) -> float:
        try:
            return self._writer().inbox.fill_percent
        except DevFailed:  # the writer device is created after this one at server start-up
            return 0.0

    def check_can_prepare(self) -> None:
        if self.get_state() == DevState.FAULT:
            raise RuntimeError(f"device is in FAULT ({self.get_status()}); Reset first")
        if self.acquiring:
            raise RuntimeError("an acquisition is running; Stop or Abort it first")

    def start_acquisition(self, acquisition: Coroutine[Any, Any, None]) -> None:
        """Run ``acquisition`` as the owned task; its exception, if any, ends in FAULT."""
        self._run = asyncio.create_task(acquisition, name=f"{self.get_name()} acquisition")
        self._run.add_done_callback(self._on_acquisition_done)
        self.refresh(force=True)

    async def acquisition_finished(self) -> None:
        """Return once the running acquisition (if any) has drained into the writer."""
        if self._run is not None:
            await asyncio.wait_for(asyncio.shield(self._run), WRITER_DRAIN_TIMEOUT_S)
        self.refresh(force=True)

    async def wait_writer_done(self, series_id: int | None) -> None:
        """Returns once every file of the series is closed (and, under a data policy, its manifest written)."""
        sink, loop = self.data_sink(), asyncio.get_running_loop()
        deadline = loop.time() + WRITER_DRAIN_TIMEOUT_S
        while not sink.series_written(series_id):
            if loop.time() > deadline:
                raise TimeoutError(f"writer still draining series {series_id} after {WRITER_DRAIN_TIMEOUT_S:.0f}s")
            await asyncio.sleep(0.01)
        if isinstance(sink, DataPolicy):
            await sink.finalise(series_id)

    def _on_acquisition_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (err := task.exception()) is not None:
            self.set_fault(f"{self.acquisition_label} failed: {type(err).__name__}: {err}")
        self.refresh(force=True)

    def running_state(self, frames_dropped: int) -> DevState:
        alarm = frames_dropped > 0 or self._writer_queue_fill() > QUEUE_ALARM_PERCENT
        return DevState.ALARM if alarm else DevState.RUNNING

    @attribute(dtype=float, unit="%", format="%.1f", max_alarm=QUEUE_ALARM_PERCENT,
               description="Fill of the writer's ingress queue; ALARM above 75 %")
    async def queue_fill(self) -> float:
        return self._writer_queue_fill()

    @attribute(dtype=str,
               description="LImA-style acquisition status: Ready, Running (prepared, acquiring or draining) or Fault")
    async def acq_status(self) -> str:
        if self.get_state() == DevState.FAULT:
            return "Fault"
        return "Running" if self.armed or self.acquiring else "Ready"

"""Tango face of an AGIPD-1M fed by a Karabo bridge: receiver, optional correction, run control.

Trains go from the receiver (and the correction stage, when constants are configured) straight into
the writer device's queue in this process; Tango carries settings, counters and State only. With ``Modules`` the
device receives and writes one module group; with ``ModuleGroups`` too, it runs the other groups' devices with its
own run and writes the run's master over every group's files (module_group_coordinator.py, docs/scale_out.md).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
from tango import AttrWriteType, DevState
from tango.server import attribute, command, device_property

from detpipe.pipeline.agipd.acquisition import AgipdAcquisition
from detpipe.pipeline.agipd.constants import load_constants
from detpipe.pipeline.agipd.correction import AgipdCorrection
from detpipe.pipeline.agipd.receiver import AgipdReceiver
from detpipe.pipeline.core.errors import ConfigError
from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.core.live_view import TrainView
from detpipe.pipeline.core.saving_target import OverwritePolicy
from detpipe.pipeline.core.series import EndReason
from detpipe.pipeline.core.stage import Item
from detpipe.pipeline.core.stage_runner import StageRunner
from detpipe.pipeline.core.train import AGIPD_MODULES
from detpipe.pipeline.exdf.module_groups import check_modules
from detpipe.pipeline.triage.setup import DetectorKind

from .detector_device import DetectorDevice
from .detpipe_device import CLOSE_WAIT_S, in_background, settle, unusable_file
from .live_view_device import LIVE_MAX_HEIGHT, LIVE_MAX_WIDTH
from .module_group_coordinator import ModuleGroupCoordinator
from .receiver_group import ReceiverUnavailable

CORRECTION_QUEUE_TRAINS = 4
MEMORY_CELLS = 352  # AGIPD's analog memory: the most frames a train can hold
SLOW_BRIDGE_NOTE_S = 1.0  # a 10 Hz bridge answers in 0.1 s: a longer wait is worth a word in Status


class AgipdDetector(DetectorDevice):
    """Receives AGIPD-1M trains from a Karabo bridge (protocol 1.0 or 2.2, REQ or PULL) into EuXFEL run files.

    Sequence: set run_number and acq_nb_trains, Prepare (the writer claims r<run>/ in the background: MOVING,
    then STANDBY), Start (receive that many trains: RUNNING), then ON once the writer closed the run. Stop
    drains what was received; Abort too, at once.
    """

    EVENT_ATTRIBUTES = ("trains_received", "frames_received", "last_train_id", "frames_dropped", "acq_status")
    detector_kind = DetectorKind.AGIPD

    BridgeEndpoint = device_property(dtype=str, mandatory=True, doc="Mandatory. Karabo bridge endpoint, e.g. tcp://host:4545")
    BridgeSocket = device_property(
        dtype=str, default_value="REQ",
        doc="REQ: asks b'next' per train (bridge in REP mode); flow-controlled, never drops, a slow bridge is waited "
            "for. PULL: bridge in PUSH mode; a train arriving while the writer is full is dropped and counted",
    )
    ConstantsFile = device_property(
        dtype=str, default_value="",
        doc="Correction constants (docs/agipd_constants.md); when set, raw trains are corrected and CORR files written",
    )
    StreamTimeout = device_property(
        dtype=float, default_value=5.0,
        doc="Seconds of bridge silence, with trains owed, before FAULT (PULL; REQ while no request is in flight)",
    )
    RequestTimeout = device_property(
        dtype=float, default_value=30.0,
        doc="REQ: seconds one request may wait for its train before the bridge counts as gone (FAULT). A slower "
            "bridge is waited for, never asked again: the bridge takes a train off its queue when asked, so a "
            "request given up would lose it. A request still unanswered when a run ends counts as a lost train",
    )
    Modules = device_property(
        dtype=(int,), default_value=[],
        doc="The modules (0..15) this device's bridge serves and its writer writes: one module group of a run "
            "written by several groups into one run directory (docs/scale_out.md). Empty: all 16. A group has no "
            "HitFinderDevice or DataPolicyDevice: triage needs all 16 modules of a frame",
    )
    ModuleGroups = device_property(
        dtype=(str,), default_value=[],
        doc="With Modules: the AgipdDetector devices (any server, any host) of the run's other module groups. "
            "This device prepares, starts, stops and aborts them with its own run (same run_number and "
            "acq_nb_trains), and writes the run's master over every group's files once all have closed them",
    )

    async def init_device(self) -> None:
        await super().init_device()
        self._modules, self._property_problem = self._module_group()  # a problem: this device alone stays in FAULT
        self._groups = ModuleGroupCoordinator(self.ModuleGroups) if self.ModuleGroups else None
        self._group_losses = ""  # groups that did not finish the last run, or lost modules of its frames
        self._receiver = AgipdReceiver(self.BridgeEndpoint, socket_type=self.BridgeSocket.upper(),
                                       request_timeout_s=self.RequestTimeout, modules=self._modules)
        self._receiver.start()
        self._train_view = TrainView()
        receiver = self._receiver
        self.start_live_view(lambda: receiver.latest, self._train_view.render, lambda train: train.train_id)
        self._acq = AgipdAcquisition(self._receiver, stream_timeout_s=self.StreamTimeout)
        self._correction: StageRunner | None = None
        if self.ConstantsFile:
            try:
                constants = load_constants(Path(self.ConstantsFile))
            except Exception as err:  # noqa: BLE001 - any unreadable file: one line in Status, the server stays up
                self._property_problem = unusable_file("ConstantsFile", self.ConstantsFile, err)
            else:
                self._correction_inbox: FrameQueue[Item] = FrameQueue(CORRECTION_QUEUE_TRAINS, FullPolicy.DROP)
                self._correction = StageRunner("correction", AgipdCorrection(constants), self._correction_inbox,
                                               on_failure=self.set_fault)
                self._correction.start()
        self._nb_trains, self._run_number = 20, 1
        self._summary = f"Ready: Karabo bridge {self.BridgeEndpoint} ({self.BridgeSocket})"
        self.preload_triage(DetectorKind.AGIPD, None)
        self.refresh(force=True)
        self.start_monitor()

    def _module_group(self) -> tuple[tuple[int, ...], str]:
        """The modules this device receives, and why ``Modules``/``ModuleGroups`` cannot work as configured
        (empty when they can)."""
        try:
            modules = check_modules(self.Modules or range(AGIPD_MODULES))
        except ConfigError as err:
            return (), f"Modules: {err}; correct the property, then Init"
        if self.ModuleGroups and not self.Modules:
            return modules, "ModuleGroups needs Modules, the modules of this device's own group; set it, then Init"
        if self._in_group(modules) and (self.HitFinderDevice or self.DataPolicyDevice):
            return modules, ("a module group (Modules) has no HitFinderDevice or DataPolicyDevice: triage and data "
                             "reduction need all 16 modules of a frame; leave them empty, then Init")
        return modules, ""

    def _in_group(self, modules: tuple[int, ...]) -> bool:
        """One module group of a run written by several (its writer claims its modules' files, writes no master)."""
        return bool(self.ModuleGroups) or len(modules) < AGIPD_MODULES

    async def delete_device(self) -> None:
        await super().delete_device()
        closing = [in_background(self._receiver.close)]  # ends a run still open
        if self._correction is not None:
            closing.append(in_background(self._correction.close))
        await settle(closing, CLOSE_WAIT_S)

    @property
    def armed(self) -> bool:
        return self._acq.prepared

    @property
    def acquisition_label(self) -> str:
        return f"Run {self._run_number}"

    @property
    def engine_step(self) -> str:
        return f"claiming the files of run {self._run_number}"

    # --- State ---
    def assess(self) -> tuple[DevState, str]:
        stats = self._receiver.stats
        if self._receiver.failure:
            return DevState.FAULT, f"{self._receiver.failure}; Init starts a new receiver"
        if self._property_problem:
            return DevState.FAULT, self._property_problem
        if self.preparing:
            return DevState.MOVING, f"Preparing run {self._run_number}: {self.prepare_step}"
        if self._acq.prepared:
            return DevState.STANDBY, f"Run {self._run_number} prepared: {self._nb_trains} trains; waiting for Start"
        if self.acquiring:
            return self.running_state(stats.frames_dropped_total), (
                f"Run {self._run_number}: {stats.trains_received}/{self._nb_trains} trains received, "
                f"{stats.frames_dropped_total} frames dropped, writer queue {self._writer_queue_fill():.0f}% full"
                f"{self._slow_bridge_note()}{self.ending_note()}"
            )
        if (stats.frames_dropped_total or stats.rejected_total or stats.trains_missing or self.frames_lost
                or stats.requests_unanswered or sum(stats.modules_missing.values()) or self._group_losses):
            return DevState.ALARM, self._summary
        return DevState.ON, self._summary

    def _slow_bridge_note(self) -> str:
        """A bridge slower than a train period is waited for; Status says so rather than looking stuck."""
        waited_s = self._receiver.pending_request_s()
        if waited_s is None or waited_s < SLOW_BRIDGE_NOTE_S:
            return ""
        return f"; waiting {waited_s:.0f}s for the bridge's next train (RequestTimeout {self.RequestTimeout:g}s)"

    def event_values(self) -> dict[str, Any]:
        stats = self._receiver.stats
        return {"trains_received": stats.trains_received, "frames_received": stats.frames_received,
                "last_train_id": stats.last_train_id, "frames_dropped": stats.frames_dropped_total,
                "acq_status": self.acquisition_status()}

    # --- settings ---
    def _check_idle(self) -> None:
        if self.preparing or self._acq.prepared or self._acq.running:
            raise RuntimeError("settings apply at Prepare; Stop or Abort the current run first")

    @attribute(dtype=int, access=AttrWriteType.READ_WRITE, memorized=True, hw_memorized=True, unit="train",
               format="%d", min_value=1, label="Trains", description="Trains to receive in the next run")
    async def acq_nb_trains(self) -> int:
        return self._nb_trains

    @acq_nb_trains.write
    async def acq_nb_trains(self, value: int) -> None:
        self._check_idle()
        self._nb_trains = value

    @attribute(dtype=int, access=AttrWriteType.READ_WRITE, memorized=True, hw_memorized=True, format="%d",
               min_value=1, max_value=9999, label="Run number", description="EuXFEL run number of the next run (r<run>/)")
    async def run_number(self) -> int:
        return self._run_number

    @run_number.write
    async def run_number(self, value: int) -> None:
        self._check_idle()
        self._run_number = value

    # --- live view ---
    @attribute(dtype=int, access=AttrWriteType.READ_WRITE, memorized=True, hw_memorized=True, format="%d",
               min_value=0, max_value=MEMORY_CELLS - 1, label="Live view cell",
               description="Which frame of the newest train live_image shows: its position in the train (0 = first "
                           "memory cell read out); the train's last when it has fewer")
    async def live_view_cell(self) -> int:
        return self._train_view.cell

    @live_view_cell.write
    async def live_view_cell(self, value: int) -> None:
        self._train_view.cell = value

    @attribute(dtype=int, access=AttrWriteType.READ_WRITE, memorized=True, hw_memorized=True, format="%d",
               min_value=-1, max_value=AGIPD_MODULES - 1, label="Live view module",
               description="Module live_image shows (0..15, 512 x 128 pixels), or -1 for all 16 stacked in module "
                           "order (8192 x 128)")
    async def live_view_module(self) -> int:
        return self._train_view.module

    @live_view_module.write
    async def live_view_module(self, value: int) -> None:
        self._train_view.module = value

    @attribute(dtype=((np.float32,),), max_dim_x=LIVE_MAX_WIDTH, max_dim_y=LIVE_MAX_HEIGHT, unit="ADU or photon",
               format="%.2f", label="Live image", data_ready_event_implemented=True,
               description="Of the newest train received, at most live_image_max_rate times per second: the cell and "
                           "module(s) chosen by live_view_cell and live_view_module; analog ADU for raw trains, "
                           "photons for corrected ones; bad pixels and missing modules NaN (live_image_mask)")
    async def live_image(self) -> np.ndarray:
        picture = self.live_picture()
        return picture.pixels if picture is not None else np.zeros((1, 1), np.float32)

    @attribute(label="Module groups' status", dtype=(str,), max_dim_x=16,
               description="With ModuleGroups: one line per other module group's device, its State and counters "
                           "(trains and frames received, frames dropped, trains missing) or why it does not "
                           "answer; empty without ModuleGroups")
    async def module_groups_status(self) -> list[str]:
        if self._groups is None:
            return []
        return [reading.line() for reading in await asyncio.to_thread(self._groups.group.readings)]

    # --- counters ---
    @attribute(label="Trains received", dtype=int, unit="train", format="%d", description="Trains received in this run")
    async def trains_received(self) -> int:
        return self._receiver.stats.trains_received

    @attribute(label="Frames received",
               dtype=int, unit="frame", format="%d", description="Frames (memory cells) received in this run")
    async def frames_received(self) -> int:
        return self._receiver.stats.frames_received

    @attribute(label="Frames dropped",
               dtype=int, unit="frame", format="%d", description="Frames dropped because the next queue was full")
    async def frames_dropped(self) -> int:
        return self._receiver.stats.frames_dropped_total

    @attribute(label="Frames rejected",
               dtype=int, unit="message", format="%d", description="Bridge messages rejected; see rejection_reasons")
    async def frames_rejected(self) -> int:
        return self._receiver.stats.rejected_total

    @attribute(label="Rejections, by reason", dtype=str, description="Rejected bridge messages by reason, as JSON")
    async def rejection_reasons(self) -> str:
        return json.dumps(dict(self._receiver.stats.rejected))

    @attribute(label="Trains missing",
               dtype=int, unit="train", format="%d", description="Gaps in the train ids: trains never received")
    async def trains_missing(self) -> int:
        return self._receiver.stats.trains_missing

    @attribute(dtype=int, unit="train", format="%d", label="Trains unanswered",
               description="REQ requests a run ended without a reply to: trains the bridge took off its queue "
                           "and never delivered (lost, the run's first train too)")
    async def trains_unanswered(self) -> int:
        return self._receiver.stats.requests_unanswered

    @attribute(label="Modules missing", dtype=(int,), max_dim_x=AGIPD_MODULES, unit="train", format="%d",
               description="Per module 0..15: trains in which that module was missing")
    async def modules_missing(self) -> list[int]:
        missing = self._receiver.stats.modules_missing
        return [missing.get(m, 0) for m in range(AGIPD_MODULES)]

    @attribute(label="Last train id",
               dtype=int, format="%d", description="Train id of the last train received; -1 before the first")
    async def last_train_id(self) -> int:
        return self._receiver.stats.last_train_id

    @attribute(label="Receive rate",
               dtype=float, unit="MB/s", format="%.1f", description="Received data rate over the last second")
    async def receive_rate(self) -> float:
        return self._receiver.stats.rates()[1]

    @attribute(label="Decode time (mean)",
               dtype=float, unit="ms", format="%.2f", description="Mean time to decode and assemble one train")
    async def decode_time_mean(self) -> float:
        return self._receiver.stats.time_mean_ms

    @attribute(label="Correction time (mean)",
               dtype=float, unit="ms", format="%.2f", description="Mean time to correct one train; 0 without constants")
    async def correction_time_mean(self) -> float:
        return self._correction.stage.stats.time_mean_ms if self._correction else 0.0

    # --- engine steps of the commands (DetectorDevice) ---
    async def prepare_series(self) -> None:
        """Claim the run directory in the writer (refused if it exists) and route the run through the hit
        finder and correction."""
        await self.wait_for_chain()
        run, trains = self._run_number, self._nb_trains
        self._group_losses = ""
        if self._groups is not None:  # a run they are still ending (a Prepare again from STANDBY) ends first
            self._chain_step = "checking that the other module groups have ended any previous run"
            await self._groups.group.wait_finished()
            self._chain_step = ""
        await self.engine_call(lambda: self._acq.prepare(run, trains, self._claim))
        if self._groups is not None:
            await self._groups.group.wait_armed(lambda step: setattr(self, "_chain_step", step))
        await self.expect_series(None)

    def _claim(self, run: int) -> FrameQueue[Item]:
        sink = self.data_sink()
        if not self._in_group(self._modules):
            sink.prepare_run(run)
        else:  # a module group: no data policy (Init refuses one), its writer claims only its modules' files
            writer = self._writer()
            directory = writer.prepare_run(run, modules=self._modules)
            if self._groups is not None:
                overwrite = writer.saving_params.overwrite_policy is OverwritePolicy.OVERWRITE
                self._groups.claim(run, self._nb_trains, directory, overwrite=overwrite)
        outbox = self.claimed(sink, run, DetectorKind.AGIPD)
        if self._correction is None:
            return outbox
        self._correction.outbox = outbox
        return self._correction_inbox

    async def acquire_series(self) -> None:
        run, groups = self._run_number, self._groups
        try:
            if groups is not None:
                await self._start_groups(groups)
            end = await asyncio.to_thread(self._acq.acquire)
        except TimeoutError:
            if groups is not None:  # the bridge of this group went silent: the others' files get their master
                await asyncio.to_thread(groups.end, EndReason.ABORT)
                await self._group_master_note(groups)
            raise
        note = await self.wait_series_written()
        stats = self._receiver.stats
        lost = self.unwritten_note(stats.frames_received - stats.frames_dropped_total)
        unanswered = (f", {stats.requests_unanswered} requested trains never answered (lost)"
                      if stats.requests_unanswered else "")
        self._summary = (f"Run {run} done ({end.reason.value}): {stats.trains_received} trains, "
                         f"{stats.frames_received} frames, {stats.frames_dropped_total} dropped, "
                         f"{stats.trains_missing} trains missing{unanswered}{lost}{note}")

    async def wait_series_written(self) -> str:
        """With ModuleGroups, the run is written once every group has closed its files and the run's master is
        written over them (a run stopped before Start has no files, and no master)."""
        started = self._written is not None
        note = await super().wait_series_written()
        if self._groups is not None and started:
            note += await self._group_master_note(self._groups)
        return note

    async def _start_groups(self, groups: ModuleGroupCoordinator) -> None:
        """Start the other groups before this one; one that refuses ends the armed run everywhere before the
        error reaches Status."""
        try:
            await groups.start()
        except ReceiverUnavailable:
            await asyncio.to_thread(self.end_engine_series, EndReason.ABORT)
            raise

    async def _group_master_note(self, groups: ModuleGroupCoordinator) -> str:
        """The run's master over every group's files, and a Status note of what it holds; modules missing from
        its frames or a group in trouble are this run's ALARM, each group named."""
        try:
            master = await groups.finish(self._writer())
        except (OSError, ValueError, KeyError) as err:
            self._group_losses = f"no master written over the module groups' files: {err}"
            return f"; {self._group_losses}"
        missing = (f"{master.module_frames_missing} module-frames missing (fill value in the master)"
                   if master.module_frames_missing else "")
        self._group_losses = "; ".join(filter(None, [missing, *groups.problems, *master.unreadable]))
        losses = f"; {self._group_losses}" if self._group_losses else ""
        return (f"; {len(groups.group.names) + 1} module groups, {master.module_files} module files, "
                f"{master.frames} frames in {master.master.name}{losses}")

    def abandon_engine(self) -> None:
        self._acq.abandon()

    def end_engine_series(self, reason: EndReason) -> None:
        if not self._acq.running:
            self._written = None  # a prepared run that never started: nothing reached the writer to close
        self._acq.stop(reason)
        if self._groups is not None:
            self._groups.end(reason)

    @command
    async def Reset(self) -> None:
        """Abort any run (files closed valid), leave FAULT and clear the counters."""
        await self.abort_series(f"Reset of {self.get_name()}")
        self.clear_fault()
        self._receiver.stats.reset()
        self._group_losses = ""
        self.refresh(force=True)

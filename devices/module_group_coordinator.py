"""How an AgipdDetector with ``ModuleGroups`` runs one AGIPD run over several module groups (docs/scale_out.md).

The device is itself one group (its ``Modules``, on its own bridge endpoint); the other groups are AgipdDetectors in
other servers, each with its ``Modules`` and bridge endpoint, writing its modules' sequence files into the same run
directory. They are prepared with this device's run number and train count, started before it, stopped and aborted
with it; once every group has closed its files, the run's master is written over all of them (``module_groups``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from tango import DevState

from detpipe.pipeline.core.series import EndReason
from detpipe.pipeline.exdf.module_groups import claim_run_master, write_group_master
from detpipe.pipeline.exdf.recovery import RecoveredRun

from .nexus_writer import NexusWriter
from .receiver_group import ReceiverGroup, ReceiverUnavailable

log = logging.getLogger(__name__)

GROUP_COUNTERS = ("trains_received", "frames_received", "frames_dropped", "trains_missing")
_TROUBLED = (DevState.ALARM, DevState.FAULT)


class ModuleGroupCoordinator:
    def __init__(self, groups: Sequence[str]) -> None:
        self.group = ReceiverGroup(groups, GROUP_COUNTERS)
        self._directory: Path | None = None
        self.problems: list[str] = []  # groups that did not finish the last run, or ended it in ALARM/FAULT

    def claim(self, run: int, trains: int, directory: Path, *, overwrite: bool) -> None:
        """In the engine's thread, once this device's writer has claimed its modules' files in the run
        ``directory``: the master's name, then every other group prepares the same run. Raises naming the group
        that refused; those that took the run are aborted."""
        claim_run_master(directory, run, overwrite=overwrite)
        try:
            self.group.configure_and_prepare({"run_number": run, "acq_nb_trains": trains})
        except ReceiverUnavailable:
            self.group.command_quietly("Abort")
            raise
        self._directory, self.problems = directory, []

    async def start(self) -> None:
        await asyncio.to_thread(self.group.command_all, "Start")

    def end(self, reason: EndReason) -> None:
        """Stop (drain) or Abort every group; blocking. A group that does not answer is named at the run's end."""
        self.group.command_quietly("Stop" if reason is EndReason.STOP else "Abort")

    async def finish(self, writer: NexusWriter) -> RecoveredRun:
        """After this device's own run is written: wait until every group has closed its files (or is gone), then
        write the run's master over every module file on disk; returns what it holds."""
        assert self._directory is not None
        self.problems = [f"{entry} did not finish the run" for entry in await self.group.wait_finished()]
        readings = await asyncio.to_thread(self.group.readings)
        self.problems += [f"{r.name} {r.state}: {r.status}" for r in readings if r.state in _TROUBLED]
        params = writer.saving_params
        return await asyncio.to_thread(write_group_master, self._directory, instrument_name=params.instrument_name,
                                       source_name=params.source_name)

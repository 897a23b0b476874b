"""Tango face of detpipe's file writers (NXmx for Eiger series, EuXFEL run files for AGIPD runs).

Frames and trains arrive in-process from a detector device, never via Tango."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from tango import AttrWriteType, DevState
from tango.server import attribute, command, device_property

from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.core.saving_target import OverwritePolicy, SavingParams, check_directory
from detpipe.pipeline.core.stage import Item
from detpipe.pipeline.exdf.pixel_compression import PixelCompression, parse_compression
from detpipe.pipeline.writers.checked_writer import CheckedWriter
from detpipe.pipeline.writers.exdf_writer import ExdfWriter
from detpipe.pipeline.writers.nxmx_writer import NxmxWriter
from detpipe.pipeline.writers.selector import FileFormat, WriterSelector

from .detpipe_device import CLOSE_WAIT_S, DetpipeDevice, SeriesEngine, in_background, settle
from .parameter_attribute import choice_attribute

QUEUE_ALARM_PERCENT = 75.0


class NexusWriter(DetpipeDevice):
    """Writes each Eiger series as NXmx (master + data files of saving_frame_per_file frames) and each
    AGIPD run as an EuXFEL run directory; the detector device that prepares the series picks the format.

    Eiger chunks are written as the detector compressed them (direct chunk write). Directories must lie
    under DataRoots; existing files are never overwritten unless saving_overwrite_policy says so.
    """

    EVENT_ATTRIBUTES = ("last_image_saved", "frames_written", "bytes_written", "write_rate", "queue_fill")

    DataRoots = device_property(
        dtype=(str,), mandatory=True, doc="Mandatory. Absolute directories below which this writer may create files"
    )
    BufferFrames = device_property(
        dtype=int, default_value=256,
        doc="Frames (EIGER) or trains (AGIPD) the ingress queue holds before further ones are dropped (and "
            "counted); ~2-3 MB per 4M frame, ~270 MB per 64-cell train. Up to 64 frames or 1 train more wait "
            "between the frame check and the writer thread",
    )
    TrainsPerSequence = device_property(
        dtype=int, default_value=256, doc="AGIPD runs: trains per sequence file (EuXFEL S00000, S00001, ...)"
    )
    AgipdCompression = device_property(
        dtype=str, default_value="none",
        doc="AGIPD runs: how module files store pixels. none (as the EuXFEL DAQ writes raw data) and deflate "
            "(HDF5 gzip) read in any HDF5 reader; bslz4 (bitshuffle-LZ4) needs the filter plugin (hdf5plugin)",
    )
    InstrumentName = device_property(
        dtype=str, default_value="detpipe", doc="NXinstrument/name written into every master file"
    )
    SourceName = device_property(
        dtype=str, default_value="",
        doc="NXsource/name written into every master file: the facility, e.g. 'ESRF' or 'European XFEL' (the mmCIF "
            "_diffrn_source.pdbx_synchrotron_site vocabulary NXmx recommends). Empty: NXmx masters keep the "
            "field NXmx requires, empty; AGIPD masters leave it out",
    )

    FreeSpaceMarginMB = device_property(
        dtype=float, default_value=512.0,
        doc="Free space (MB) the writer keeps on the data disk: Prepare is refused and a series stops (FAULT, "
            "files closed complete) below it, before the file system refuses a write",
    )

    async def init_device(self) -> None:
        await super().init_device()
        roots = tuple(Path(r) for r in self.DataRoots)
        params = SavingParams(directory=roots[0], data_roots=roots, instrument_name=self.InstrumentName,
                              source_name=self.SourceName, free_space_margin_bytes=int(self.FreeSpaceMarginMB * 1e6))
        self._property_problem = ""  # a property this writer cannot use: it stays in FAULT until fixed and Init
        try:
            compression = parse_compression(self.AgipdCompression)
        except ValueError as err:
            compression = PixelCompression.NONE
            self._property_problem = f"property AgipdCompression: {err}; fix it (Jive), then Init"
        self._writer = WriterSelector(
            NxmxWriter(params),
            ExdfWriter(params, trains_per_sequence=self.TrainsPerSequence, compression=compression),
        )
        self.inbox: FrameQueue[Item] = FrameQueue(self.BufferFrames, FullPolicy.DROP)
        self._runner = CheckedWriter(self._writer, self.inbox, on_failure=self._on_writer_failure)
        self._runner.start()
        self.refresh(force=True)
        self.start_monitor()

    async def delete_device(self) -> None:
        await self.release_series("Init")
        await self.stop_monitor()
        await settle([in_background(self._runner.close)], CLOSE_WAIT_S)  # closes a series still open, valid
        await super().delete_device()

    def series_engines(self) -> list[SeriesEngine]:
        return [self._runner]

    @property
    def in_series(self) -> bool:
        return self._runner.in_series

    # --- sink used in-process by detector devices (eiger.acquisition.FrameSink, agipd.acquisition.RunSink) ---
    def prepare(self, series_id: int, *, directory: Path | None = None) -> Path:
        """An Eiger series: NXmx files, in ``directory`` when a data policy gives one (``raw/``)."""
        return self._prepare(FileFormat.NXMX, series_id, directory=directory)

    def prepare_run(self, run_number: int, *, directory: Path | None = None,
                    modules: Sequence[int] | None = None) -> Path:
        """An AGIPD run: an EuXFEL run directory, in ``directory`` when a data policy gives one (``raw/``); with
        ``modules``, a module group's share of a run directory written by several groups."""
        return self._prepare(FileFormat.EXDF, run_number, directory=directory, modules=modules)

    def _prepare(self, file_format: FileFormat, series_id: int, *, directory: Path | None = None,
                 modules: Sequence[int] | None = None) -> Path:
        if self._property_problem:
            raise RuntimeError(f"writer is in FAULT: {self._property_problem}")
        if self._runner.failure is not None:
            raise RuntimeError(f"writer is in FAULT ({self._runner.failure}); Reset it first")
        if self._runner.in_series:
            raise RuntimeError("the writer is still writing the previous series; wait or Abort it")
        path = self._writer.prepare(file_format, series_id, directory=directory, modules=modules)
        self._runner.reset_counters()
        self._runner.last_end = None
        return path

    @property
    def exdf_writer(self) -> ExdfWriter:
        """The AGIPD run writer, whose layout a data policy copies for a run's RED files."""
        return self._writer.exdf

    @property
    def saving_params(self) -> SavingParams:
        """The saving parameters of the next series (a data policy derives raw/ and red/ from them)."""
        return self._writer.params

    def series_written_check(self, series_id: int) -> Callable[[], bool]:
        """Whether this writer has handled the end of ``series_id`` (files closed, master final). Bound to
        the writer thread that takes the series: after an Init of this device that thread still closes it."""
        return partial(_series_ended, self._runner, series_id)

    @property
    def frames_written_in_series(self) -> int:
        """Frames of the last (or current) series on disk, for the detector's account of what was lost."""
        return self._writer.stats.frames_written

    def _on_writer_failure(self, reason: str) -> None:
        self._fault = reason  # the monitor task pushes FAULT from the event loop thread

    # --- State ---
    def assess(self) -> tuple[DevState, str]:
        if self._property_problem:
            return DevState.FAULT, self._property_problem
        stats = self._writer.stats
        if self._runner.in_series:
            state = DevState.ALARM if self.inbox.fill_percent > QUEUE_ALARM_PERCENT else DevState.RUNNING
            return state, (
                f"Writing {stats.frames_written}/{stats.frames_expected} frames to {stats.current_file or '(none yet)'}"
                f" (queue {self.inbox.fill_percent:.0f}% full)"
            )
        if rejected := self._runner.rejected:
            return DevState.ALARM, (
                f"Last series kept {stats.frames_written} frames but rejected {rejected.total()}: "
                f"{dict(rejected)}; master {self._writer.master_path}"
            )
        if self._writer.master_path is not None:
            return DevState.ON, f"Idle. Last series: {stats.frames_written} frames in {self._writer.master_path}"
        return DevState.ON, "Idle, no series written yet"

    def refresh(self, *, force: bool = False) -> None:
        if self._fault is not None and self.get_state() != DevState.FAULT:
            self.set_fault(self._fault)
        super().refresh(force=force)

    def event_values(self) -> dict[str, Any]:
        return {
            "last_image_saved": self._writer.stats.last_image_saved,
            "frames_written": self._writer.stats.frames_written,
            "bytes_written": self._writer.stats.bytes_written,
            "write_rate": self._writer.stats.rates()[1],
            "queue_fill": self.inbox.fill_percent,
        }

    # --- saving configuration (LImA names) ---
    def _configure(self, what: str, **changes: Any) -> None:
        """Refused while a series is written; SavingParams validates the changed values."""
        if self._runner.in_series:
            raise RuntimeError(f"cannot change {what} while a series is being written; Stop it first")
        self._writer.configure(replace(self._writer.params, **changes))

    @attribute(dtype=str, access=AttrWriteType.READ_WRITE, memorized=True, hw_memorized=True,
               label="Saving directory", description="Directory of the next series' files; must lie below DataRoots")
    async def saving_directory(self) -> str:
        return str(self._writer.params.directory)

    @saving_directory.write
    async def saving_directory(self, value: str) -> None:
        self._configure("saving_directory", directory=check_directory(Path(value), self._writer.params.data_roots))

    @attribute(dtype=str, access=AttrWriteType.READ_WRITE, memorized=True, hw_memorized=True,
               label="Saving prefix",
               description="File name prefix; '$id' becomes the series id. Files: <prefix>_master.h5, <prefix>_data_000001.h5 ...")
    async def saving_prefix(self) -> str:
        return self._writer.params.prefix

    @saving_prefix.write
    async def saving_prefix(self, value: str) -> None:
        self._configure("saving_prefix", prefix=value)

    @attribute(dtype=int, access=AttrWriteType.READ_WRITE, memorized=True, hw_memorized=True, unit="frame",
               format="%d", min_value=1, label="Frames per file", description="Frames in each data file")
    async def saving_frame_per_file(self) -> int:
        return self._writer.params.frames_per_file

    @saving_frame_per_file.write
    async def saving_frame_per_file(self, value: int) -> None:
        self._configure("saving_frame_per_file", frames_per_file=value)

    saving_overwrite_policy = choice_attribute(
        "saving_overwrite_policy", [policy.value for policy in OverwritePolicy], label="Overwrite policy",
        description="Abort (default): refuse a series whose files exist; Overwrite: replace them (LImA "
                    "saving_overwrite_policy)",
        get=lambda device: device._writer.params.overwrite_policy.value,
        put=lambda device, policy: device._configure("saving_overwrite_policy",
                                                     overwrite_policy=OverwritePolicy(policy)))

    # --- counters ---
    @attribute(label="Last image saved",
               dtype=int, unit="frame", format="%d", description="Index of the last frame written; -1 before the first")
    async def last_image_saved(self) -> int:
        return self._writer.stats.last_image_saved

    @attribute(label="Frames written",
               dtype=int, unit="frame", format="%d", description="Frames on disk in this series; reset by Prepare")
    async def frames_written(self) -> int:
        return self._writer.stats.frames_written

    @attribute(label="Frames expected", dtype=int, unit="frame", format="%d", description="Frames the series announced")
    async def frames_expected(self) -> int:
        return self._writer.stats.frames_expected

    @attribute(label="Frames rejected", dtype=int, unit="frame", format="%d",
               description="Frames refused by the writer (a chunk that does not decode, wrong shape, beyond the "
                           "series...), all reasons")
    async def frames_rejected(self) -> int:
        return self._runner.rejected.total()

    @attribute(label="Bytes written",
               dtype=float, unit="B", format="%.0f", description="Compressed bytes written to data files in this series")
    async def bytes_written(self) -> float:
        return float(self._writer.stats.bytes_written)

    @attribute(label="Write rate",
               dtype=float, unit="MB/s", format="%.1f", description="Write rate on disk over the last second")
    async def write_rate(self) -> float:
        return self._writer.stats.rates()[1]

    @attribute(label="Write frame rate",
               dtype=float, unit="frame/s", format="%.1f", description="Frames written per second over the last second")
    async def write_frame_rate(self) -> float:
        return self._writer.stats.rates()[0]

    @attribute(label="Compression ratio",
               dtype=float, unit="", format="%.2f", description="Uncompressed bytes / bytes on disk for this series")
    async def compression_ratio(self) -> float:
        return self._writer.stats.compression_ratio

    @attribute(label="Current file", dtype=str, description="Data file being written now; empty when none is open")
    async def current_file(self) -> str:
        return self._writer.stats.current_file

    @attribute(label="Saving format",
               dtype=str, description="Format of the current or last series: nxmx (Eiger) or exdf (AGIPD run)")
    async def saving_format(self) -> str:
        return self._writer.format.value

    @attribute(label="Master file", dtype=str, description="Master file of the current or last series")
    async def master_file(self) -> str:
        return str(self._writer.master_path or "")

    @attribute(label="Queue fill", dtype=float, unit="%", format="%.1f", max_alarm=QUEUE_ALARM_PERCENT,
               description="Fill of the ingress queue; ALARM above 75 %")
    async def queue_fill(self) -> float:
        return self.inbox.fill_percent

    @attribute(label="Write time (last)",
               dtype=float, unit="ms", format="%.2f", description="Time to write the last frame")
    async def write_time_last(self) -> float:
        return self._writer.stats.time_last_ms

    @attribute(label="Write time (mean)",
               dtype=float, unit="ms", format="%.2f", description="Mean time to write one frame in this series")
    async def write_time_mean(self) -> float:
        return self._writer.stats.time_mean_ms

    @attribute(label="Write time (max)",
               dtype=float, unit="ms", format="%.2f", description="Longest time to write one frame in this series")
    async def write_time_max(self) -> float:
        return self._writer.stats.time_max_ms

    @command
    async def Reset(self) -> None:
        """Abort any series being written (files closed valid), leave FAULT and forget the counters; the next
        series is written normally."""
        await self.release_series("Reset")
        self._runner.reset()
        self._runner.reset_counters()
        self.clear_fault()
        self.refresh(force=True)


def _series_ended(runner: CheckedWriter, series_id: int) -> bool:
    end = runner.last_end
    return (end is not None and end.series_id == series_id and not runner.in_series) or not runner.alive

"""The AGIPD writer stage: trains in, a EuXFEL run directory (EXDF, EuXFEL data format) plus a NeXus VDS master out.

Layout of run ``R`` under ``params.directory``::

    r{R:04d}/RAW-R{R:04d}-AGIPD{m:02d}-S{s:05d}.h5     (CORR-… for corrected trains), m = 0…15
    r{R:04d}/AGIPD-R{R:04d}-master.h5                  NeXus master with one VDS over all modules

A module group's writer (``prepare(run, modules=…)``, docs/scale_out.md) writes only its modules' files into a run
directory it shares with the other groups' writers, and no master: the controlling device writes that over every
group's files once all have closed them (``exdf.module_groups``).

Train k of the run goes to sequence s = k // trains_per_sequence of all 16 modules; the 16 files of a
sequence are opened at its first train and closed as soon as its last one is written, so a crash costs at
most the one open sequence. Every module file lists every train of its sequence: a module missing from a
train (``Train.modules_present[m]`` False) shows as ``count = 0`` in that file's INDEX, which is how EuXFEL
files show it, so extra-data's ``get_data_counts`` and ``AGIPD1M(min_modules=…)`` see the gap. The product
(RAW or CORRECTED) of a run is that of its first train.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..core.errors import AcquisitionStateError, ConfigError, FrameRejected, TargetFileExists
from ..core.saving_target import OverwritePolicy, SavingParams, check_directory, check_free_space, claim_series_files
from ..core.series import EndOfSeries, SeriesStart
from ..core.train import AGIPD_MODULES, Product, Train
from ..exdf.index import RunIndex, TrainRecord
from ..exdf.module_file import (
    PIXEL_KEYS,
    ExdfModuleFile,
    ModuleChunks,
    RunMetadata,
    check_train_layout,
    module_chunks,
    module_file_name,
    module_source,
)
from ..exdf.module_groups import check_modules, module_files_pattern
from ..exdf.nexus_master import AgipdNexusMaster, ModuleFileExtent, master_file_name
from ..exdf.pixel_compression import PixelCompression
from ..nexus.triage_process import TriageProcess
from .stats import WriterStats

log = logging.getLogger(__name__)

# Files a new run of the same number replaces under OVERWRITE; extra-data's cache map would describe old files.
_STALE_FILES = r"((RAW|CORR)-R{run:04d}-AGIPD\d{{2}}-S\d{{5}}\.h5|AGIPD-R{run:04d}-master\.h5|karabo_data_map\.json)"


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A claimed run directory; params are frozen at Prepare so ``configure`` cannot split a run. ``modules`` are
    the files this writer writes; a module group's run (``writes_master`` False) leaves the master to its
    controlling device."""

    run: int
    params: SavingParams
    directory: Path
    modules: tuple[int, ...]
    writes_master: bool = True


@dataclass
class _Run:
    """The run being written; owned by the writer thread."""

    series_id: int
    target: _Prepared
    metadata: RunMetadata
    index: RunIndex
    pool: ThreadPoolExecutor
    product: Product | None = None
    open_files: list[ExdfModuleFile] = field(default_factory=list)
    extents: list[ModuleFileExtent] = field(default_factory=list)
    triage: TriageProcess | None = None  # the run's frames carry triage results, stored in its master

    @property
    def overwrite(self) -> bool:
        return self.target.params.overwrite_policy is OverwritePolicy.OVERWRITE


class ExdfWriter:
    """Writes each series (one run) as EXDF module sequence files plus a NeXus master (implements ``Stage``).

    ``prepare`` runs in the control thread and raises every refusal there; the other methods run in the
    writer's own thread (h5py serialises calls under one lock anyway). The run number of a
    series is, in order: the run prepared by ``prepare`` (whatever the series id), the ``run_number`` given
    here (used by the first series only), the series id. ``proposal`` goes to METADATA/proposalNumber.
    ``params.prefix`` and ``frames_per_file`` (Eiger settings) are unused: EXDF fixes the names, and
    ``trains_per_sequence`` splits the files. ``compression`` is how pixels are stored (default uncompressed,
    readable by every HDF5 reader; pixel_compression.py). Compression runs in ``compression_threads`` threads
    per run (default: CPU count, at most 8), one module each, while this thread writes compressed modules in
    order: bslz4 is ~60 % of a raw train's CPU time in one thread, and bitshuffle and zlib release the GIL.
    """

    def __init__(self, params: SavingParams, *, trains_per_sequence: int = 256, detector: str = "SPB_DET_AGIPD1M-1",
                 run_number: int | None = None, proposal: int = 0, compression_threads: int | None = None,
                 modules: Sequence[int] | None = None, compression: PixelCompression = PixelCompression.NONE) -> None:
        threads = min(8, os.cpu_count() or 1) if compression_threads is None else compression_threads
        problems = []
        try:
            modules = tuple(range(AGIPD_MODULES)) if modules is None else check_modules(modules)
        except ConfigError as err:
            problems += err.problems
        if threads < 1:
            problems.append(f"compression_threads must be >= 1, got {threads}")
        if trains_per_sequence < 1:
            problems.append(f"trains_per_sequence must be >= 1, got {trains_per_sequence}")
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", detector):
            problems.append(f"detector {detector!r} must be a Karabo device domain like 'SPB_DET_AGIPD1M-1'")
        if run_number is not None and not 0 <= run_number <= 9999:
            problems.append(f"run_number must be within 0…9999 (4 digits in file names), got {run_number}")
        if not 0 <= proposal < 2**32:
            problems.append(f"proposal must fit uint32, got {proposal}")
        if problems:
            raise ConfigError(problems)
        self.params = params
        self.stats = WriterStats()
        self.trains_per_sequence = trains_per_sequence
        self.detector = detector
        self.proposal = proposal
        self.compression_threads = threads
        self.compression = compression
        self.modules = modules
        self.run_directory: Path | None = None
        self.master_path: Path | None = None
        self._run_number = run_number
        self._prepared: _Prepared | None = None
        self._run: _Run | None = None

    def sibling(self, params: SavingParams, *, modules: Sequence[int] | None = None) -> ExdfWriter:
        """A writer with this one's run layout (detector, proposal, sequence length) for other files of the same
        runs, e.g. their RED files (a data policy), writing only ``modules``."""
        return ExdfWriter(params, trains_per_sequence=self.trains_per_sequence, detector=self.detector,
                          proposal=self.proposal, compression_threads=self.compression_threads, modules=modules,
                          compression=self.compression)

    def configure(self, params: SavingParams) -> None:
        """New saving parameters for the next run; refused while a run is being written."""
        self._refuse_while_writing("configure")
        self.params = params
        self._prepared = None

    def prepare(self, run_number: int, *, directory: Path | None = None, modules: Sequence[int] | None = None) -> Path:
        """Claims ``r{run:04d}`` in ``directory`` (default ``params.directory``; a data policy gives ``raw/``) and
        resets the counters; returns the run directory.

        Raises ``PathOutsideDataRoots``, ``PermissionError``, or ``TargetFileExists`` when the run directory
        exists and is not empty under the ABORT policy. Under OVERWRITE, the old run's EXDF files, master and
        extra-data cache map are removed (nothing else in the directory is touched). With ``modules`` (a module
        group) the directory is shared with the other groups' writers: only these modules' files are claimed
        (refused if one exists, removed under OVERWRITE) and the run's master is left to the controlling device.
        """
        self._refuse_while_writing("prepare")
        if not 0 <= run_number <= 9999:
            raise ConfigError([f"run number must be within 0…9999, got {run_number}"])
        group = None if modules is None else check_modules(modules)
        params = self.params if directory is None else replace(self.params, directory=directory)
        directory = check_directory(params.directory / f"r{run_number:04d}", params.data_roots)
        claimed = _STALE_FILES.format(run=run_number) if group is None else module_files_pattern(run_number, group)
        stale = sorted(p for p in directory.iterdir() if re.fullmatch(claimed, p.name)) if directory.is_dir() else []
        if params.overwrite_policy is OverwritePolicy.ABORT:
            if group is None and directory.is_dir() and any(directory.iterdir()):
                raise TargetFileExists(directory)  # a whole run owns its directory
            if stale:
                raise TargetFileExists(stale[0])  # a group owns only its modules' files
        for path in stale:
            log.info("overwrite policy: removing %s", path)
            path.unlink()
        # claim_series_files creates the directory below its data root and proves it writable; the Eiger
        # names it also checks (<stem>_master.h5, <stem>_data_*.h5) are never written here.
        claim_series_files(replace(params, directory=directory, prefix=f"AGIPD-R{run_number:04d}"), run_number)
        self.stats.reset()
        self._prepared = _Prepared(run_number, params, directory, group or self.modules, writes_master=group is None)
        self.run_directory = directory
        self.master_path = directory / master_file_name(run_number)
        return directory

    def _refuse_while_writing(self, command: str) -> None:
        if self._run is not None:
            raise AcquisitionStateError(command, f"writing run {self._run.target.run}",
                                        "wait for the run to end or abort it")

    def start_series(self, start: SeriesStart) -> None:
        """Opens a run; module files are created with the run's first train, which fixes the product."""
        if self._run is not None:
            self.abort(f"run {self._run.target.run} had no end when series {start.series_id} started")
        if self._prepared is None:
            self.prepare(self._run_number if self._run_number is not None else start.series_id)
        assert self._prepared is not None
        target, self._prepared, self._run_number = self._prepared, None, None
        if start.triage is not None and not target.writes_master:
            raise ConfigError([f"run {target.run} is written by module groups: triage needs all 16 modules of a "
                               "frame, which no group receives (docs/scale_out.md)"])
        if target.run != start.series_id:
            log.info("series %d is written as run %d", start.series_id, target.run)
        metadata = RunMetadata(self.proposal, target.run)
        triage = None if start.triage is None else AgipdNexusMaster.begin(  # refused here, before any thread starts
            target.directory, start, metadata, overwrite=target.params.overwrite_policy is OverwritePolicy.OVERWRITE)
        pool = ThreadPoolExecutor(self.compression_threads, thread_name_prefix=f"detpipe-exdf-r{target.run:04d}")
        self._run = _Run(start.series_id, target, metadata, RunIndex(self.trains_per_sequence), pool, triage=triage)
        log.info("run %d: writing to %s, %d trains per sequence", target.run, target.directory, self.trains_per_sequence)

    def process(self, train: Train) -> None:
        """Writes one train to the 16 module files of its sequence; a train that cannot be stored raises
        ``FrameRejected`` (counted by the runner) and leaves every file as it was."""
        run = self._run
        if run is None:
            raise FrameRejected("no_series", f"train {train.train_id} before its series start")
        if train.series_id != run.series_id:
            raise FrameRejected("series_mismatch", f"train of series {train.series_id} in series {run.series_id}")
        product = run.product or train.product
        check_train_layout(train, product)
        if run.index.last_train_id is not None and train.train_id <= run.index.last_train_id:
            raise FrameRejected("train_id_not_increasing",
                                f"train {train.train_id} after train {run.index.last_train_id}")
        run.product = product
        check_free_space(run.target.directory, run.target.params.free_space_margin_bytes, train.nbytes)
        record = run.index.record_for(train)
        if not run.open_files:
            self._open_sequence(run, record.sequence)
        nbytes = np.zeros(train.frames, np.int64)
        present = [f for f in run.open_files if record.modules_present[f.module]]
        for module_file, chunks in self._compressed(run.pool, train, present):
            nbytes += module_file.write_train(record, train, chunks)
        for module_file in run.open_files:
            if not record.modules_present[module_file.module]:
                module_file.skip_train(record)
        run.index.commit(record, train)
        if run.triage is not None:  # row k = frame k of the run (its VDS); rows are stored as their sequence ends
            run.triage.add(record.first_frame, train.triage, train.frames, flush=record.sequence != run.index.next_sequence)
        self._record_frames(record, train, nbytes)
        if run.open_files[0].trains == self.trains_per_sequence:
            self._close_sequence(run)

    def _compressed(self, pool: ThreadPoolExecutor, train: Train,
                    files: Sequence[ExdfModuleFile]) -> Iterator[tuple[ExdfModuleFile, ModuleChunks]]:
        """Each file with its module's chunks, in module order. At most one module per thread plus one is in
        flight, so a train is never held compressed as a whole (a 352-cell raw train is ~0.8 GB)."""
        waiting = iter(files)
        window: deque[tuple[ExdfModuleFile, Future[ModuleChunks]]] = deque()

        def submit_next() -> None:
            if (module_file := next(waiting, None)) is not None:
                window.append((module_file, pool.submit(module_chunks, train, module_file.module, self.compression)))

        for _ in range(self.compression_threads + 1):
            submit_next()
        try:
            while window:
                module_file, future = window.popleft()
                submit_next()
                yield module_file, future.result()
        finally:
            for _, future in window:  # the train failed: drop the compression still queued
                future.cancel()

    def _record_frames(self, record: TrainRecord, train: Train, nbytes: np.ndarray) -> None:
        """Each frame counts once, whatever the number of modules; bytes are summed over the modules present."""
        per_module = sum(int(np.prod(k.shape)) * k.dtype.itemsize for k in PIXEL_KEYS[train.product])
        uncompressed = per_module * sum(record.modules_present)
        for f in range(record.frames):
            self.stats.record_frame(record.first_frame + f, int(nbytes[f]), uncompressed)

    def _open_sequence(self, run: _Run, sequence: int) -> None:
        assert run.product is not None
        try:
            for module in run.target.modules:
                name = module_file_name(run.product, run.target.run, module, sequence)
                run.open_files.append(ExdfModuleFile(
                    run.target.directory / name, module=module, source=module_source(self.detector, run.product, module),
                    product=run.product, sequence=sequence, metadata=run.metadata, overwrite=run.overwrite,
                    compression=self.compression))
        except BaseException:
            self._close_sequence(run)
            raise
        self.stats.current_file = str(run.open_files[0].path)

    def _close_sequence(self, run: _Run) -> None:
        """Closes every open file of the sequence, even after one failed; raises the first failure."""
        files, run.open_files = run.open_files, []
        self.stats.current_file = ""
        failures: list[Exception] = []
        t0 = time.perf_counter()
        for module_file in files:
            try:
                rows = module_file.close()
            except Exception as err:  # noqa: BLE001 - the other files must still close; raised below
                log.exception("closing %s failed", module_file.path)
                failures.append(err)
                continue
            run.extents.append(ModuleFileExtent(module_file.module, module_file.sequence, module_file.path.name,
                                                module_file.source, rows))
        if files:
            self.stats.record_close((time.perf_counter() - t0) * 1e3)
        if failures:
            raise failures[0]

    def finish(self, end: EndOfSeries) -> None:
        """Ends the run for every ``EndReason`` alike: close the open sequence, write the master."""
        run, self._run = self._run, None
        if run is None:
            log.warning("end of series %d without a run being written; nothing to close", end.series_id)
            return
        if failures := self._end(run):
            raise failures[0]
        log.info("run %d ended (%s): %d trains, %d frames, %d files", run.target.run, end.reason.value,
                 len(run.index.trains), run.index.frames, len(run.extents))

    def abort(self, reason: str) -> None:
        """Leaves every file valid after an unexpected error; the caller already reports the first reason."""
        run, self._run, self._prepared = self._run, None, None
        if run is not None:
            log.error("run %d aborted: %s; closing its files", run.target.run, reason)
            self._end(run)

    def _end(self, run: _Run) -> list[Exception]:
        """Stops compressing, closes the open sequence and writes the master; returns the failures."""
        failures: list[Exception] = []
        run.pool.shutdown(wait=True, cancel_futures=True)
        for what, step in (("closing the open sequence", lambda: self._close_sequence(run)),
                           ("writing the master", lambda: self._write_master(run))):  # even if closing failed
            try:
                step()
            except Exception as err:  # noqa: BLE001 - collected, logged and raised by finish()
                log.exception("%s of run %d failed", what, run.target.run)
                failures.append(err)
        return failures

    def _write_master(self, run: _Run) -> None:
        if not run.target.writes_master:
            return  # a module group's run: the controlling device writes the master over every group's files
        AgipdNexusMaster(run.target.directory / master_file_name(run.target.run), triage=run.triage).write(
            run.index, run.product, run.extents, metadata=run.metadata, detector=self.detector, overwrite=run.overwrite,
            instrument_name=run.target.params.instrument_name, source_name=run.target.params.source_name)


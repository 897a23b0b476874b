"""``detpipe reduce``: the online data policy stage run on an archived raw series or run.

The raw files stand in for the stream (``NxmxFrameSource`` for an Eiger series, ``ExdfRunSource`` for an AGIPD
run, each yielding the same series start, frames or trains and end the receiver would), and the triage results
are the ones stored in the raw master, so the stage takes the same decisions on the same bytes: the RED data
datasets come out byte-identical to the ones written online. The raw files are only read; the RED files, and
the manifest naming the raw files with their checksums, go below the output directory exactly as an online
run lays them out.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import h5py

from ..core.errors import ConfigError, FrameRejected
from ..core.frame import Frame
from ..core.saving_target import SavingParams
from ..core.series import EndOfSeries, EndReason, SeriesStart
from ..core.train import Train
from ..exdf.run_source import ExdfRunSource
from ..nexus.nxmx_frame_source import NxmxFrameSource
from ..writers.exdf_writer import ExdfWriter
from .data_policy_stage import DataPolicyStage
from .reduction_params import ReductionParams

log = logging.getLogger(__name__)

MASTER_SUFFIX = "_master.h5"
AGIPD_MASTER = re.compile(r"AGIPD-R\d{4}-master\.h5")


def reduce_series(raw: Path, params: ReductionParams, output: Path, *,
                  progress: Callable[[int, int], None] | None = None) -> Path:
    """Writes the RED files of the raw series master or AGIPD run directory ``raw`` below ``output``
    (``output/red/…`` and the manifest ``output/<stem>_manifest.json``); ``progress`` is called with (frames
    done, frames in the run). Returns the manifest path. Existing files are never replaced."""
    if not params.policy.keeps_red:
        raise ConfigError([f"policy {params.policy.value!r} keeps no RED data; use red or raw+red to reduce"])
    output = output.resolve()
    if raw.is_dir() or AGIPD_MASTER.fullmatch(raw.name):
        return _reduce_run(ExdfRunSource(raw if raw.is_dir() else raw.parent), params, output, progress)
    if not raw.name.endswith(MASTER_SUFFIX):
        raise ConfigError([f"{raw} is neither a series master (<stem>{MASTER_SUFFIX}) nor an AGIPD run "
                           "(r<run> directory or its AGIPD-R<run>-master.h5)"])
    source = NxmxFrameSource(raw)
    saving = SavingParams(directory=output, prefix=raw.name[: -len(MASTER_SUFFIX)],
                          frames_per_file=source.frames_per_file, data_roots=(output.parent,), **_names_in(raw))
    stage = DataPolicyStage(saving, params, archived_raw_master=raw.resolve())
    start = source.series_start()
    stage.prepare(start.series_id)
    return _reduce(stage, start, source.frames(), source.frames_total, source.files, progress)


def _reduce_run(source: ExdfRunSource, params: ReductionParams, output: Path,
                progress: Callable[[int, int], None] | None) -> Path:
    master = source.master.resolve() if source.master is not None else None
    saving = SavingParams(directory=output, data_roots=(output.parent,),
                          **(_names_in(master) if master is not None else {}))
    stage = DataPolicyStage(saving, params, archived_raw_master=master)
    start = source.series_start()
    layout = ExdfWriter(saving, trains_per_sequence=source.trains_per_sequence, detector=source.detector,
                        proposal=source.proposal)
    stage.prepare(start.series_id, exdf=layout)
    return _reduce(stage, start, source.trains(), source.frames_total, source.files, progress)


def _names_in(master: Path) -> dict[str, str]:
    """The instrument and source names of the raw master, so its RED files name the same beamline."""
    names = {}
    with h5py.File(master, "r") as handle:
        for key, path in (("instrument_name", "/entry/instrument/name"), ("source_name", "/entry/source/name")):
            value = handle.get(path)
            if isinstance(value, h5py.Dataset) and value.shape == () and value.dtype.kind in "OS":
                names[key] = value.asstr()[()]
    return names


def _reduce(stage: DataPolicyStage, start: SeriesStart, items: Iterable[Frame | Train], frames_total: int,
            raw_files: list[Path], progress: Callable[[int, int], None] | None) -> Path:
    """Feeds the stage as its runner would: a rejected item is counted and logged, anything else aborts."""
    stage.start_series(start)
    done = 0
    try:
        for item in items:
            try:
                stage.process(item)
            except FrameRejected as err:
                stage.stats.rejected[err.reason] += 1
                log.warning("%s %d rejected: %s", type(item).__name__, item.index, err)
            done += item.frames if isinstance(item, Train) else 1
            if progress is not None:
                progress(done, frames_total)
    except BaseException as err:
        stage.abort(f"{type(err).__name__}: {err}")
        raise
    stage.finish(EndOfSeries(start.series_id, EndReason.END_MESSAGE, frames_sent=done))
    return stage.finalise(raw_files)

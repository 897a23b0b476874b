"""``detpipe reduce``: the online data policy stage run on an archived raw series.

The raw files stand in for the stream (``NxmxFrameSource`` yields the same series start, frames and end
the receiver would), and the frames' triage results are the ones stored in the raw master, so the stage
takes the same decisions on the same bytes: the RED data datasets come out byte-identical to the ones
written online. The raw files are only read; the RED files, and the manifest naming the raw files with
their checksums, go below the output directory exactly as an online run lays them out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from .data_policy_stage import DataPolicyStage
from .errors import ConfigError, FrameRejected
from .nxmx_frame_source import NxmxFrameSource
from .reduction_params import ReductionParams
from .saving_target import SavingParams
from .series import EndOfSeries, EndReason

log = logging.getLogger(__name__)

MASTER_SUFFIX = "_master.h5"


def reduce_series(master: Path, params: ReductionParams, output: Path, *,
                  progress: Callable[[int, int], None] | None = None) -> Path:
    """Writes the RED files of the raw series ``master`` below ``output`` (``output/red/…`` and the manifest
    ``output/<stem>_manifest.json``); ``progress`` is called with (frames done, frames in the series). Returns the
    manifest path. Existing files are never replaced."""
    if not params.policy.keeps_red:
        raise ConfigError([f"policy {params.policy.value!r} keeps no RED data; use red or raw+red to reduce"])
    if not master.name.endswith(MASTER_SUFFIX):
        raise ConfigError([f"{master} is not a series master (<stem>{MASTER_SUFFIX})"])
    source = NxmxFrameSource(master)
    start = source.series_start()
    output = output.resolve()
    saving = SavingParams(directory=output, prefix=master.name[: -len(MASTER_SUFFIX)],
                          frames_per_file=source.frames_per_file, data_roots=(output.parent,))
    stage = DataPolicyStage(saving, params)
    stage.prepare(start.series_id)
    stage.start_series(start)
    done = 0
    try:
        for frame in source.frames():
            try:
                stage.process(frame)
            except FrameRejected as err:
                stage.stats.rejected[err.reason] += 1
                log.warning("frame %d rejected: %s", frame.index, err)
            done += 1
            if progress is not None:
                progress(done, source.frames_total)
    except BaseException as err:
        stage.abort(f"{type(err).__name__}: {err}")
        raise
    stage.finish(EndOfSeries(start.series_id, EndReason.END_MESSAGE, frames_sent=done))
    return stage.finalise(source.files)

"""Many archived raw series or runs reduced at once, one ``reduce_series`` per series, on a Dask cluster.

Dask schedules; each task is the single-process reduction of one series into a directory of its own, so a
series reduced on a cluster is decided and written as one reduced alone: the same data files byte for byte,
the same master content (times aside, unless ``SOURCE_DATE_EPOCH`` fixes them: ``core/file_clock.py``; one
master's chunk placement once differed, docs/scale_out.md). A series that fails is reported with its reason
and the others go on: a task never raises, it returns its outcome. The cluster is the caller's: a
``LocalCluster`` on this computer or a client of a facility's scheduler (dask-jobqueue on a batch system).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import ConfigError
from .offline_reduction import AGIPD_MASTER, MASTER_SUFFIX, reduce_series
from .reduction_params import ReductionParams

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SeriesReduction:
    """One raw series master or AGIPD run, and the run directory its RED files and manifest go to."""

    raw: Path
    output: Path


@dataclass(frozen=True, slots=True)
class ReductionOutcome:
    """What became of one series: its manifest, or why it failed (one line)."""

    job: SeriesReduction
    manifest: Path | None = None
    error: str = ""


def series_name(raw: Path) -> str:
    """The name a series' output directory takes: the Eiger stem, or the AGIPD run directory's name."""
    if raw.name.endswith(MASTER_SUFFIX):
        return raw.name[: -len(MASTER_SUFFIX)]
    if AGIPD_MASTER.fullmatch(raw.name):
        return raw.parent.name
    return raw.name


def plan_reductions(raws: Sequence[Path], output: Path) -> list[SeriesReduction]:
    """Each raw series into ``output/<series name>``; refuses two series of one name, which would share it."""
    names = Counter(series_name(raw) for raw in raws)
    if clashes := sorted(name for name, count in names.items() if count > 1):
        raise ConfigError([f"{names[name]} series are named {name!r} ("
                           + ", ".join(str(r) for r in raws if series_name(r) == name)
                           + "): reduce them into different output directories" for name in clashes])
    return [SeriesReduction(raw, output / series_name(raw)) for raw in raws]


def reduce_one(job: SeriesReduction, params: ReductionParams) -> ReductionOutcome:
    """One series, as ``detpipe reduce RAW -o OUTPUT`` reduces it; any failure becomes the outcome's reason,
    so one bad series never stops the batch."""
    try:
        return ReductionOutcome(job, manifest=reduce_series(job.raw, params, job.output))
    except (ConfigError, OSError, ValueError) as err:  # a file or parameter the message names: no traceback
        return ReductionOutcome(job, error=f"{type(err).__name__}: {err}")
    except Exception as err:  # noqa: BLE001 - the reason is reported with the series; the others go on
        log.exception("reducing %s failed", job.raw)
        return ReductionOutcome(job, error=f"{type(err).__name__}: {err}")


def reduce_on_dask(jobs: Sequence[SeriesReduction], params: ReductionParams, client: Client, *,
                   progress: Callable[[int, int], None] | None = None) -> list[ReductionOutcome]:
    """Every job as one task of ``client``'s cluster; outcomes in the order of ``jobs``. ``progress`` is
    called with (series done, series in all) as each ends. A worker lost mid-task fails that series only."""
    from distributed import as_completed

    futures = client.map(reduce_one, jobs, params=params, pure=False)
    job_of = {future.key: job for future, job in zip(futures, jobs, strict=True)}
    outcomes: dict[SeriesReduction, ReductionOutcome] = {}
    for done, future in enumerate(as_completed(futures), start=1):
        job = job_of[future.key]
        try:
            outcomes[job] = future.result()
        except Exception as err:  # noqa: BLE001 - a worker that died, or a task Dask could not run
            outcomes[job] = ReductionOutcome(job, error=f"{type(err).__name__}: {err}")
        if progress is not None:
            progress(done, len(jobs))
    return [outcomes[job] for job in jobs]


def local_cluster(workers: int) -> LocalCluster:
    """A Dask cluster of ``workers`` processes (one thread each: a reduction runs its own threads) on this
    computer, every socket on 127.0.0.1 and on a port the system chooses, no dashboard; Dask's INFO lines
    (workers starting and stopping) kept out of the command's output."""
    from distributed import LocalCluster

    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                        dashboard_address=None, silence_logs=logging.WARNING,
                        scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})

"""``detpipe reduce``: argument handling, and the progress around ``offline_reduction.reduce_series`` (one series,
in this process) or ``batch_reduction.reduce_on_dask`` (many, one Dask task each)."""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from detpipe.pipeline.core.errors import ConfigError
from detpipe.pipeline.core.settings_document import settings_mapping
from detpipe.pipeline.policy.batch_reduction import (
    ReductionOutcome,
    local_cluster,
    plan_reductions,
    reduce_on_dask,
    series_name,
)
from detpipe.pipeline.policy.offline_reduction import reduce_series
from detpipe.pipeline.policy.provenance import read_reduction_config
from detpipe.pipeline.policy.reduction_params import ReductionParams
from detpipe.pipeline.policy.run_manifest import frames_kept_of

from .progress import Progress
from .user_error import UserError

if TYPE_CHECKING:
    from distributed import Client

MAX_LOCAL_WORKERS = 8  # a local cluster's default: one worker per core, at most this many
GLOB_CHARACTERS = frozenset("*?[")
SCHEDULER_TIMEOUT = "10s"  # how long an unreachable --scheduler is tried before the command says so


def load_policy_file(path: Path) -> ReductionParams:
    """A YAML (or JSON) mapping of DataPolicy parameters, validated like the device's attributes."""
    document = settings_mapping(path.read_text(encoding="utf-8"), str(path), "data policy parameters")
    return ReductionParams.from_mapping(document.get("data_policy", document))


def run_reduce(raw: Sequence[str], *, policy_file: Path | None, config_from: Path | None, output: Path,
               workers: int | None = None, scheduler: str | None = None) -> int:
    try:
        params = load_policy_file(policy_file) if policy_file is not None else read_reduction_config(config_from)[0]
    except (ConfigError, OSError, ValueError) as err:  # each says which file or parameter, in one line
        raise UserError(str(err)) from err
    raws = expand_raw_arguments(raw)
    batch = len(raw) > 1 or any(_is_pattern(r) for r in raw) or workers is not None or scheduler is not None
    if not batch:
        return _reduce_alone(raws[0], params, output)
    return _reduce_batch(raws, params, output, workers=workers, scheduler=scheduler)


def expand_raw_arguments(raw: Sequence[str]) -> list[Path]:
    """Each argument as given, or the sorted paths a glob pattern matches; a pattern matching nothing is an
    error, so a typo never reduces fewer series than meant."""
    paths: list[Path] = []
    for argument in raw:
        if Path(argument).exists():
            paths.append(Path(argument))
            continue
        if not _is_pattern(argument):
            raise UserError(f"{argument} does not exist")
        if not (matches := sorted(glob.glob(argument))):
            raise UserError(f"no raw series matches {argument!r}")
        paths += map(Path, matches)
    return list(dict.fromkeys(paths))  # a series named twice (a path and a pattern) is reduced once


def _is_pattern(argument: str) -> bool:
    return not GLOB_CHARACTERS.isdisjoint(argument)


def _reduce_alone(raw: Path, params: ReductionParams, output: Path) -> int:
    progress = Progress(f"reduce {raw.name}", "frame")
    try:
        manifest = reduce_series(raw, params, output, progress=progress)
    except (ConfigError, OSError, ValueError) as err:  # each says which file or parameter, in one line
        raise UserError(str(err)) from err
    finally:
        progress.close()
    print(f"RED written, {_kept(manifest)}; manifest {manifest}")
    return 0


def _kept(manifest: Path) -> str:
    kept, frames_in = frames_kept_of(manifest)
    return f"{kept} of {frames_in} frames kept"


def _reduce_batch(raws: list[Path], params: ReductionParams, output: Path, *, workers: int | None,
                  scheduler: str | None) -> int:
    try:
        jobs = plan_reductions(raws, output.resolve())
    except ConfigError as err:
        raise UserError(str(err)) from err
    progress = Progress(f"reduce {len(jobs)} series", "series")
    try:
        with _dask_client(scheduler, workers or min(len(jobs), os.cpu_count() or 1, MAX_LOCAL_WORKERS)) as client:
            try:
                output.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise UserError(f"-o {output}: {err}") from err
            outcomes = reduce_on_dask(jobs, params, client, progress=progress)
    finally:
        progress.close()
    return _report(outcomes)


@contextmanager
def _dask_client(scheduler: str | None, workers: int) -> Iterator[Client]:
    """A client of ``scheduler``, or of a local cluster of ``workers`` processes listening on 127.0.0.1 only."""
    from distributed import Client

    if not logging.getLogger().isEnabledFor(logging.DEBUG):  # Dask's INFO lines (workers starting…) under ours
        logging.getLogger("distributed").setLevel(logging.WARNING)
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=SCHEDULER_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as err:
            raise UserError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from err
        with client:
            yield client
        return
    with local_cluster(workers) as cluster, Client(cluster) as client:
        yield client


def _report(outcomes: list[ReductionOutcome]) -> int:
    """One line a series, then the count; exit 1 when any series failed."""
    failed = [o for o in outcomes if o.manifest is None]
    for outcome in outcomes:
        name = series_name(outcome.job.raw)
        print(f"{name}: RED written, {_kept(outcome.manifest)}; manifest {outcome.manifest}"
              if outcome.manifest is not None
              else f"{name}: FAILED ({outcome.job.raw}): {outcome.error}")
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} series reduced" + (f", {len(failed)} failed"
                                                                               if failed else ""))
    return 1 if failed else 0

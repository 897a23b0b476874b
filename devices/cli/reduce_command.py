"""``detpipe reduce``: argument handling and the progress bar around ``offline_reduction.reduce_series``."""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from detpipe.pipeline.core.errors import ConfigError
from detpipe.pipeline.policy.offline_reduction import reduce_series
from detpipe.pipeline.policy.policy_document import policy_mapping
from detpipe.pipeline.policy.provenance import read_reduction_config
from detpipe.pipeline.policy.reduction_params import ReductionParams

from .user_error import UserError

tqdm.monitor_interval = 0  # no monitor thread: the bar is updated once per frame anyway


def load_policy_file(path: Path) -> ReductionParams:
    """A YAML (or JSON) mapping of DataPolicy parameters, validated like the device's attributes."""
    document = policy_mapping(path.read_text(encoding="utf-8"), str(path))
    return ReductionParams.from_mapping(document.get("data_policy", document))


class ProgressBar:
    """A tqdm bar opened at the first progress report, so that a series refused before any frame is read
    leaves nothing on stderr but the error line."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.bar: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(unit="frame", desc=self.description, file=sys.stderr)
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_reduce(raw: Path, *, policy_file: Path | None, config_from: Path | None, output: Path) -> int:
    progress = ProgressBar(f"reduce {raw.name}")
    try:
        params = load_policy_file(policy_file) if policy_file is not None else read_reduction_config(config_from)[0]
        manifest = reduce_series(raw, params, output, progress=progress)
    except (ConfigError, OSError, ValueError) as err:  # each says which file or parameter, in one line
        raise UserError(str(err)) from err
    finally:
        progress.close()
    print(f"RED written; manifest {manifest}")
    return 0
